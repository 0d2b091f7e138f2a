"""Why do the demo's tuned outputs not follow the source's path? (issue 20, part A)

``python -m inr_smooth.bench.motion --out DIR`` measures the motion scores (trajectory error,
motion ratio; :func:`~inr_smooth.synthetic.score_object`) of every stage between the source
clip and a tuned edit on the demo's clip, one stage at a time:

* ``vae`` -- the VAE round trip of the source alone (posterior mean, decoded);
* ``invert:<mode>`` -- DDIM inversion of the source with the untuned inflated model, then DDIM
  sampling with the source caption (a reconstruction) and with the edit caption, with the
  guidance each pipeline uses; ``<mode>`` is how the inversion is done (the empty prompt, as
  Tune-A-Video does, or the source caption) and the guidance of the sampling;
* ``tune:<steps>x<lr>[:<attention>]`` -- ``tune:none`` (Tune-A-Video, no smoothing) with that
  schedule and attention, scored on its reconstruction and its edit;
* ``edit:plain`` / ``edit:inr`` -- the training-free editor at the demo's settings.

Every row also records the object's x centre per frame, so a back-and-forth jump shows as
numbers. The JSON goes to ``DIR/motion.json``; ``--only`` runs some stages.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..synthetic import MIN_AREA, Scene, find_object, render, score_object, truth_mask

__all__ = ["Schedule", "centres", "motion_row", "vae_round_trip"]


@dataclass(frozen=True)
class Schedule:
    steps: int
    learning_rate: float
    attention: str = "sparse_causal"
    group_norm: str = "video"

    @property
    def name(self) -> str:
        extra = "" if self.attention == "sparse_causal" else f":{self.attention}"
        extra += "" if self.group_norm == "video" else f":gn-{self.group_norm}"
        return f"tune:{self.steps}x{self.learning_rate:g}{extra}"


def centres(video: np.ndarray, scene: Scene) -> list[float | None]:
    """The output object's x centre per frame, in pixels (None: no object)."""
    frames, size = video.shape[:2]
    out = []
    for n in range(frames):
        found = find_object(video[n], scene, MIN_AREA * truth_mask(scene, n, frames, size).sum())
        out.append(None if found is None else round(found.center[0] * size, 1))
    return out


def motion_row(video: np.ndarray, scene: Scene) -> dict:
    """Every object score of ``video`` against ``scene`` plus the x centres per frame."""
    scores = {k: round(float(v), 4) for k, v in score_object(video, scene).__dict__.items()}
    return {**scores, "x_centres_px": centres(video, scene)}


def vae_round_trip(parts, frames: np.ndarray) -> np.ndarray:
    """The source through the VAE (posterior mean) and back, uint8 ``(f, s, s, 3)``."""
    import torch

    from ..pipelines.components import decode_video, encode_video
    from ..video_io import tensor_to_video, video_to_tensor

    with torch.no_grad():
        latents = encode_video(parts.vae, video_to_tensor(frames)[None])
        return tensor_to_video(decode_video(parts.vae, latents)[0])


def _inversion_rows(parts, frames, scene, target, steps: int, guidance: float) -> dict:
    import torch

    from ..models import inflate_unet
    from ..pipelines.components import encode_video
    from ..pipelines.sampling import invert_source, sample_videos
    from ..video_io import video_to_tensor

    unet = inflate_unet(parts.unet, attention="sparse_causal", group_norm="video")
    unet.eval()
    with torch.no_grad():
        latents = encode_video(parts.vae, video_to_tensor(frames)[None])
    rows = {}
    for how, prompt in (("empty-prompt", ""), ("source-caption", scene.caption)):
        start = invert_source(unet, parts, latents, num_inference_steps=steps, progress=False,
                              prompt=prompt)  # fmt: skip
        for g in (1.0, guidance):
            recon, edit = sample_videos(unet, parts, start, [scene.caption, target.caption],
                                        guidance_scale=g, num_inference_steps=steps,
                                        progress=False)  # fmt: skip
            rows[f"invert:{how}:g{g:g}"] = {"reconstruction": motion_row(recon, scene),
                                           "edit": motion_row(edit, target)}  # fmt: skip
    return rows


def _tune_row(source: Path, scene, target, schedule: Schedule, work: Path, settings) -> dict:
    from ..pipelines.tune import TuneConfig, tune
    from ..quality import _read

    config = TuneConfig(
        video=str(source), prompt=scene.caption, edit_prompts=(scene.caption, target.caption),
        model=settings.model, output=str(work / schedule.name.replace(":", "_")),
        smoothing="none", frames=settings.frames, size=settings.size, stride=1,
        steps=schedule.steps, learning_rate=schedule.learning_rate,
        attention=schedule.attention, group_norm=schedule.group_norm,
        gradient_checkpointing=False, checkpoint_every=0,
        guidance_scale=settings.tune_guidance_scale, inference_steps=settings.inference_steps,
        seed=settings.seed, device="cpu",
    )  # fmt: skip
    started = time.perf_counter()
    result = tune(config, progress=False)
    seconds = time.perf_counter() - started
    gifs = [p for p in result.samples if p.suffix == ".gif"]
    recon, edit = (_read(p) for p in gifs[:2])
    losses = [row[2] for row in result.log.get("loss", [])]
    third = max(len(losses) // 3, 1)  # per-step losses vary with the drawn timestep
    guided = _other_guidance(result.weights, scene, target, settings)
    return {"reconstruction": motion_row(recon, scene), "edit": motion_row(edit, target),
            **guided,
            "seconds": round(seconds, 1),
            "diffusion_loss_first_third": _mean(losses[:third]),
            "diffusion_loss_last_third": _mean(losses[-third:])}  # fmt: skip


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


DIAGNOSED_GUIDANCE = 7.5  # the tuned models' guidance when the path broke (mini's is now 2)
GUIDANCE = (1.0, 1.5, 2.0, 3.0, 4.0)  # besides 7.5, from the same tuned weights


def _other_guidance(weights: Path, scene, target, settings) -> dict:
    """The tuned model's edit at each of :data:`GUIDANCE`, from its saved inverted latents."""
    from safetensors.torch import load_file

    from ..mini import resolve_model
    from ..models import load_video_unet_weights
    from ..pipelines.components import load_parts
    from ..pipelines.sampling import sample_videos

    parts = load_parts(resolve_model(settings.model), device="cpu")
    unet = load_video_unet_weights(parts.unet, weights).eval()
    start = load_file(weights / "inverted_latents.safetensors")["latents"]
    rows = {}
    for g in GUIDANCE:
        (video,) = sample_videos(unet, parts, start, [target.caption], guidance_scale=g,
                                 num_inference_steps=settings.inference_steps, progress=False)
        rows[f"edit:g{g:g}"] = motion_row(video, target)
    return rows


SCHEDULES = (
    Schedule(60, 1e-4),  # the demo's
    Schedule(200, 1e-4),
    Schedule(200, 3e-4),
    Schedule(500, 3e-5),  # Tune-A-Video's
    Schedule(500, 1e-4),
    Schedule(60, 1e-4, attention="full"),
    Schedule(60, 1e-4, attention="first_frame"),
    Schedule(60, 1e-4, group_norm="per_frame"),
)


def run(out: Path, only: list[str] | None, schedules=SCHEDULES, case: int | None = None,
        guidance: float = DIAGNOSED_GUIDANCE) -> dict:  # fmt: skip
    """Every stage on the demo's clip (``motion.json``) or on ``bench quality``'s clip
    ``case`` (seed 0; ``motion-case{case}.json``), tuned models sampled at ``guidance``."""
    import torch

    from ..demo import DEMO_SCENE, DEMO_TARGET
    from ..mini import resolve_model
    from ..pipelines.components import load_parts
    from ..quality import RUNNERS, QualitySettings, random_cases
    from ..video_io import write_video

    torch.set_num_threads(1)
    settings = QualitySettings(tune_guidance_scale=guidance)
    scene, target = (DEMO_SCENE, DEMO_TARGET) if case is None else random_cases(case + 1, 0)[case]
    frames = render(scene, settings.frames, settings.size)
    path = out / ("motion.json" if case is None else f"motion-case{case}.json")
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["settings"] = settings.__dict__
    results["scene"], results["target"] = scene.caption, target.caption
    results["source"] = motion_row(frames, scene)
    rows = results.setdefault("rows", {})

    def wanted(name: str) -> bool:
        return not only or any(name.startswith(o) for o in only)

    def save():
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1))

    parts = load_parts(resolve_model(settings.model), device="cpu")
    if wanted("vae"):
        rows["vae"] = {"reconstruction": motion_row(vae_round_trip(parts, frames), scene)}
        save()
    if wanted("invert"):
        rows.update(_inversion_rows(parts, frames, scene, target, settings.inference_steps,
                                    settings.tune_guidance_scale))  # fmt: skip
        save()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = write_video(work / "source.gif", frames)
        for method in ("edit:plain", "edit:inr"):
            if wanted(method):
                video, _ = RUNNERS[method](source, scene, target, settings, work)
                rows[method] = {"edit": motion_row(video, target)}
                save()
        for schedule in schedules:
            if wanted(schedule.name) or wanted("tune"):
                rows[schedule.name] = _tune_row(source, scene, target, schedule, work, settings)
                print(schedule.name, json.dumps(rows[schedule.name]), flush=True)
                save()
    return results


def guidance_over_clips(out: Path, clips: int, seed: int = 0,
                        schedule: Schedule = SCHEDULES[0]) -> dict:  # fmt: skip
    """``tune:none`` at ``schedule`` on ``clips`` seeded clips of ``bench quality``, its edit
    sampled at 7.5 and at each of :data:`GUIDANCE`: per clip the object scores, and their
    means and standard errors, into ``out/guidance-clips.json``."""
    import torch

    from ..quality import QualitySettings, random_cases
    from ..scores import mean_se
    from ..video_io import write_video

    torch.set_num_threads(1)
    settings = QualitySettings(tune_guidance_scale=DIAGNOSED_GUIDANCE)
    per_clip = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (scene, target) in enumerate(random_cases(clips, seed)):
            work = Path(tmp) / str(i)
            work.mkdir()
            source = write_video(work / "source.gif", render(scene, settings.frames,
                                                             settings.size))  # fmt: skip
            row = _tune_row(source, scene, target, schedule, work, settings)
            row["edit:g7.5"] = row.pop("edit")
            per_clip.append({k: v for k, v in row.items() if k.startswith("edit:")})
            print(i, target.caption, {k: (v["trajectory_error"], v["motion_ratio"])
                                      for k, v in per_clip[-1].items()}, flush=True)  # fmt: skip
    summary = {
        g: {m: mean_se([c[g][m] for c in per_clip])
            for m in ("color_accuracy", "shape_iou", "trajectory_error", "motion_ratio",
                      "color_flicker")}
        for g in per_clip[0]
    }  # fmt: skip
    result = {"schedule": schedule.name, "clips": clips, "seed": seed, "per_clip": per_clip,
              "summary": summary}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "guidance-clips.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/motion-diagnosis"))
    parser.add_argument("--only", nargs="+", help="stage name prefixes: vae invert edit tune:...")
    parser.add_argument("--schedule", nargs=2, action="append", metavar=("STEPS", "LR"),
                        help="extra tune:none schedules (instead of the built-in list)")
    parser.add_argument("--clips", type=int, default=0,
                        help="instead: tune:none's edit at several guidance scales on this many "
                             "seeded bench-quality clips (guidance-clips.json)")  # fmt: skip
    parser.add_argument("--case", type=int, metavar="N",
                        help="the stages on bench quality's clip N (0-based, seed 0; "
                             "motion-caseN.json) instead of the demo's clip")  # fmt: skip
    parser.add_argument("--guidance", type=float, default=DIAGNOSED_GUIDANCE,
                        help="the tuned models' and the inversion rows' sampling guidance "
                             "(default: %(default)s, where the demo's path broke; mini's is 2)")
    args = parser.parse_args(argv)
    if args.case is not None and args.case < 0:
        parser.error(f"--case: a clip index from 0, not {args.case}")
    if args.guidance < 1:
        parser.error(f"--guidance: 1 or more, not {args.guidance:g}")
    if args.clips:
        summary = guidance_over_clips(args.out, args.clips)["summary"]
        for g, values in summary.items():
            print(g, {m: f"{mean:.3f} ± {se:.3f}" for m, (mean, se) in values.items()})
        return
    schedules = SCHEDULES
    if args.schedule:
        schedules = tuple(Schedule(int(s), float(lr)) for s, lr in args.schedule)
    results = run(args.out, args.only, schedules, args.case, args.guidance)
    for name, row in results["rows"].items():
        for kind, scores in row.items():
            if isinstance(scores, dict):
                print(f"{name:32s} {kind:15s} traj {scores['trajectory_error']:.3f} "
                      f"ratio {scores['motion_ratio']:.2f} x {scores['x_centres_px']}")  # fmt: skip


if __name__ == "__main__":
    from . import run_script

    run_script(main)
