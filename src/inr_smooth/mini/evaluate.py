"""Sample quality of inr-smooth-mini, scored exactly against the synthetic world's captions.

    python -m inr_smooth.mini.evaluate --model mini --samples 4 --json /tmp/mini_eval.json

For each caption, images are sampled with DDIM and classifier-free guidance, and each image is
checked against the scene the caption describes (a single image has no frame index, so the
object may be anywhere on its path): is the background the named colour, is the named object
colour there (and the largest non-background colour), which of the shapes fits the object best,
how well the named shape fits it (IoU), and how far the object is from its motion path.
Captions whose colour/shape pair was held out of training are reported separately: they
measure generalisation to unseen combinations.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from ..synthetic import COLORS, SHAPES, Scene, random_scene, shape_mask

__all__ = ["ImageScore", "evaluate", "evaluation_scenes", "sample_images", "score_image"]

_NAMES = list(COLORS)
_PALETTE = np.array([COLORS[c] for c in _NAMES], dtype=np.float32)


@dataclass(frozen=True)
class ImageScore:
    """Exact checks of one generated image against the scene its caption describes."""

    background_ok: bool  # the most frequent palette colour is the named background colour
    color_ok: bool  # the named object colour covers >= 30% of the object's area and is the
    #                 largest colour other than the background's
    shape_ok: bool  # of all shapes, the named one fits the object-coloured pixels best
    shape_iou: float  # IoU of the object-coloured pixels with the named shape, centroid-aligned
    path_error: float  # distance of the object's centre from its motion path (/ frame side)


def _fit(found: np.ndarray, shape: str, r: float) -> tuple[float, tuple[float, float]]:
    """Best IoU of ``found`` with ``shape`` at scales around ``r``, centroid-aligned; the
    shape's centre for the best fit."""
    size = found.shape[0]
    ys, xs = np.nonzero(found)
    fx, fy = (xs.mean() + 0.5) / size, (ys.mean() + 0.5) / size
    best, centre = 0.0, (fx, fy)
    for scale in (0.6, 0.8, 1.0, 1.2, 1.4):
        template = shape_mask(shape, 0.5, 0.5, r * scale, size)
        ty, tx = np.nonzero(template)
        cx, cy = fx - ((tx.mean() + 0.5) / size - 0.5), fy - ((ty.mean() + 0.5) / size - 0.5)
        mask = shape_mask(shape, cx, cy, r * scale, size)
        iou = float((mask & found).sum() / (mask | found).sum())
        if iou > best:
            best, centre = iou, (cx, cy)
    return best, centre


def _path_distance(scene: Scene, point: tuple[float, float]) -> float:
    a, b = np.array(scene.center(0, 2)), np.array(scene.center(1, 2))
    p, ab = np.array(point), b - a
    t = 0.0 if not ab.any() else float(np.clip((p - a) @ ab / (ab @ ab), 0, 1))
    return float(np.linalg.norm(p - (a + t * ab)))


def score_image(image: np.ndarray, scene: Scene) -> ImageScore:
    """Score one ``uint8 (s, s, 3)`` image against ``scene`` (see :class:`ImageScore`)."""
    if image.ndim != 3 or image.shape[-1] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected one square image (s, s, 3), got {image.shape}")
    size = image.shape[0]
    nearest = np.argmin(((image.astype(np.float32)[..., None, :] - _PALETTE) ** 2).sum(-1), -1)
    counts = np.bincount(nearest.ravel(), minlength=len(_NAMES))
    background, target = _NAMES.index(scene.background_color), _NAMES.index(scene.color)
    area = shape_mask(scene.shape, 0.5, 0.5, scene.size_at(0, 2), size).sum()
    others = counts.copy()
    others[background] = 0
    color_ok = bool(counts[target] >= 0.3 * area and others.argmax() == target)
    found = nearest == target
    if not found.any():
        return ImageScore(bool(counts.argmax() == background), False, False, 0.0, np.sqrt(2))
    fits = {shape: _fit(found, shape, scene.radius) for shape in SHAPES}
    iou, centre = fits[scene.shape]
    return ImageScore(
        background_ok=bool(counts.argmax() == background),
        color_ok=color_ok,
        shape_ok=max(fits, key=lambda s: fits[s][0]) == scene.shape,
        shape_iou=iou,
        path_error=_path_distance(scene, centre),
    )


@torch.no_grad()
def sample_images(
    parts,
    captions: list[str],
    *,
    samples: int = 4,
    num_inference_steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
) -> np.ndarray:
    """``uint8 (len(captions), samples, s, s, 3)`` images sampled with DDIM and CFG."""
    from ..inversion import ddim_sample
    from ..pipelines.components import decode_video, encode_prompts

    n, unet = len(captions) * samples, parts.unet
    cond = encode_prompts(parts, captions).repeat_interleave(samples, dim=0)
    uncond = encode_prompts(parts, [""]).expand_as(cond)
    side = unet.config.sample_size
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(n, unet.config.in_channels, 1, side, side, generator=generator)

    def noise_fn(latents: torch.Tensor, timestep: int) -> torch.Tensor:
        x = rearrange(latents, "b c 1 h w -> b c h w")
        eps = unet(torch.cat([x, x]), timestep, torch.cat([uncond, cond])).sample
        eps_uncond, eps_cond = eps.chunk(2)
        eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        return rearrange(eps, "b c h w -> b c 1 h w")

    latents = ddim_sample(latents, noise_fn, parts.scheduler, num_inference_steps)
    pixels = decode_video(parts.vae, latents)[:, :, 0]  # (n, 3, s, s)
    images = ((pixels + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return rearrange(images, "(k m) c h w -> k m h w c", m=samples).numpy()


def evaluation_scenes(holdout: str, seed: int = 1234, seen: int = 12) -> list[tuple[Scene, bool]]:
    """``(scene, held_out)`` pairs: the demo's source and target, ``seen`` random scenes of
    trained pairs, and two random scenes per held-out pair."""
    from ..demo import DEMO_SCENE, DEMO_TARGET
    from .train import MiniTrainConfig, holdout_pairs

    pairs = holdout_pairs(MiniTrainConfig(holdout=holdout))
    scenes = [DEMO_SCENE, DEMO_TARGET]
    rng = np.random.default_rng(seed)
    while len(scenes) < seen + 2:
        scene = random_scene(rng)
        if (scene.color, scene.shape) not in pairs:
            scenes.append(scene)
    out = [(scene, False) for scene in scenes]
    for color, shape in sorted(pairs):
        for _ in range(2):
            scene = random_scene(rng)
            while scene.background_color == color:
                scene = random_scene(rng)
            out.append((scene.edited(color=color, shape=shape), True))
    return out


def evaluate(parts, scenes: list[tuple[Scene, bool]], **sampling) -> dict:
    """Mean scores over ``scenes`` (``"seen"`` / ``"held_out"`` groups) and per caption."""
    images = sample_images(parts, [scene.caption for scene, _ in scenes], **sampling)
    rows, groups = [], {"seen": [], "held_out": []}
    for (scene, held_out), batch in zip(scenes, images, strict=True):
        scores = [asdict(score_image(image, scene)) for image in batch]
        mean = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
        rows.append({"caption": scene.caption, "held_out": held_out, **mean})
        groups["held_out" if held_out else "seen"].extend(scores)
    summary = {
        name: {k: round(float(np.mean([s[k] for s in group])), 4) for k in group[0]}
        | {"images": len(group)}
        for name, group in groups.items()
        if group
    }
    return {"summary": summary, "captions": rows, "images": images}


def main(argv: list[str] | None = None) -> int:
    """Command line: sample, score, print the summary, optionally write JSON and a PNG grid."""
    from ..pipelines.components import load_parts
    from . import resolve_model

    parser = argparse.ArgumentParser(prog="python -m inr_smooth.mini.evaluate")
    parser.add_argument("--model", default="mini", help="'mini' or a diffusers folder")
    parser.add_argument("--samples", type=int, default=4, help="images per caption")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps")
    parser.add_argument("--guidance-scale", type=float, default=7.5, help="classifier-free")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampling noise")
    parser.add_argument("--holdout", default=None, help="default: the model's training.json")
    parser.add_argument("--json", help="write the scores here")
    parser.add_argument("--png", help="write a grid of the samples here (one row per caption)")
    args = parser.parse_args(argv)
    try:
        folder = resolve_model(args.model)
        parts = load_parts(folder)
        holdout = args.holdout
        if holdout is None:
            record = Path(folder) / "training.json"
            if not record.is_file():
                raise FileNotFoundError(f"{record} not found; name held-out pairs with --holdout")
            holdout = json.loads(record.read_text())["config"]["holdout"]
        result = evaluate(
            parts, evaluation_scenes(holdout), samples=args.samples, seed=args.seed,
            num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:  # a bad model path or --holdout: one line
        parser.error(str(exc))
    print(json.dumps(result["summary"], indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({k: v for k, v in result.items() if k != "images"}, handle, indent=1)
    if args.png:
        from PIL import Image

        grid = rearrange(result["images"], "k m h w c -> (k h) (m w) c")
        Image.fromarray(np.ascontiguousarray(grid)).save(args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
