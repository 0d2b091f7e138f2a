"""Train the mini ControlNets (``mini-canny``, ``mini-depth``) for inr-smooth-mini.

A ControlNet (diffusers' ``ControlNetModel``, its encoder copied from the mini UNet as
``ControlNetModel.from_unet`` does, conditioning embedding 16/32/64 channels: 64 px maps -> the
16 x 16 latents) learns to steer the frozen inr-smooth-mini UNet with the synthetic world's
exact condition maps (:mod:`inr_smooth.control.world`: region edges, or inverse depth), on
single frames of random clips with their captions, drawn on the fly from a seeded generator:

    python -m inr_smooth.mini.train_controlnet --condition canny \\
        --output src/inr_smooth/mini/controlnets/canny --threads 2

The loss is the mini UNet's own (epsilon MSE on SD 1.x's schedule with offset noise, min-SNR
weights and the object's latent pixels weighted ``object_weight`` times), the text encoder,
VAE and UNet frozen; half of the captions are dropped (the ControlNet paper's 50 %), so that
the ControlNet learns to read the map on its own. An EMA of the weights is saved, in fp16
safetensors, with ``training.json`` (command, losses every 50 steps, wall time, the
with/without-control overlap of :func:`control_overlap`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..control.world import WORLD_CONDITIONS, silhouettes, world_maps
from ..synthetic import COLORS, Scene, render
from . import MINI_MODEL_DIR
from .train import (
    _lr_lambda,
    _opt,
    _Recorder,
    _replace_folder,
    _seeded,
    _weighted_mse,
    holdout_pairs,
    pixel_weights,
    training_scene,
)

__all__ = ["CONDITIONING_CHANNELS", "ControlNetTrainConfig", "control_overlap", "main"]

CONDITIONING_CHANNELS = (16, 32, 64)  # two stride-2 convolutions: 64 px -> 16 x 16 latents


@dataclass(frozen=True)
class ControlNetTrainConfig:
    condition: str = _opt("canny", "the map: canny (region edges) or depth (inverse depth)")
    output: str = _opt("", "the ControlNet folder to write (replaced); default: the shipped one")
    model: str = _opt(str(MINI_MODEL_DIR), "the inr-smooth-mini folder (frozen)")
    seed: int = _opt(0, "seed of the data, the noise and the caption dropout")
    size: int = _opt(64, "frame side in pixels")
    max_frames: int = _opt(24, "clips of 8..N frames, a random frame each")
    steps: int = _opt(2000, "optimiser steps")
    batch_size: int = _opt(16, "frames per step")
    lr: float = _opt(5e-4, "peak AdamW learning rate (warm-up + cosine)")
    caption_dropout: float = _opt(0.5, "share of empty captions")
    ema_decay: float = _opt(0.998, "decay of the saved exponential moving average")
    offset_noise: float = _opt(0.3, "as the mini UNet was trained")
    min_snr_gamma: float = _opt(5.0, "min-SNR loss weights (0: plain MSE)")
    object_weight: float = _opt(10.0, "loss weight of the object's pixels (background: 1)")
    holdout: str = _opt("purple triangle,orange diamond", "colour/shape pairs never shown")
    eval_scenes: int = _opt(16, "scenes of the with/without-control overlap in training.json")
    threads: int = _opt(1, "torch CPU threads")

    @property
    def folder(self) -> Path:
        return Path(self.output) if self.output else MINI_MODEL_DIR.parent / "controlnets" / (
            self.condition
        )


def condition_batch(rng: np.random.Generator, config: ControlNetTrainConfig, batch_size: int):
    """Random frames ``(b, 3, s, s)`` in [-1, 1], their control maps ``(b, 3, s, s)`` in
    [0, 1], captions, and object masks ``(b, 1, s, s)``."""
    holdout = holdout_pairs(config)
    images, maps, captions, masks = [], [], [], []
    for _ in range(batch_size):
        scene = training_scene(rng, holdout)
        frames = int(rng.integers(8, max(config.max_frames, 8) + 1))
        n = int(rng.integers(frames))
        images.append(render(scene, frames=frames, size=config.size)[n])
        maps.append(world_maps(config.condition, scene, frames, config.size, index=n)[0])
        masks.append(silhouettes(scene, frames, config.size, index=n)[0])
        captions.append(scene.caption)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    control = torch.from_numpy(np.stack(maps)).permute(0, 3, 1, 2).float() / 255
    return pixels, control, captions, torch.from_numpy(np.stack(masks))[:, None].float()


def load_frozen_mini(folder: str):
    """The mini model's parts, frozen, fp32 (VAE, UNet, text encoder, tokenizer, scheduler)."""
    from ..pipelines.components import load_parts

    return load_parts(folder, device="cpu", dtype=torch.float32)


def new_controlnet(unet, seed: int):
    from diffusers import ControlNetModel

    return _seeded(seed, lambda: ControlNetModel.from_unet(
        unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS
    ))  # fmt: skip


def train_controlnet(config: ControlNetTrainConfig, parts, log: dict):
    """The training loop; returns the EMA ControlNet (frozen, eval mode)."""
    from diffusers import DDPMScheduler

    controlnet = new_controlnet(parts.unet, config.seed).train()
    scheduler = DDPMScheduler.from_config(parts.scheduler.config)
    params = list(controlnet.parameters())
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config.steps))
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed + 1)
    bar = tqdm(range(config.steps), desc=f"mini-{config.condition}", mininterval=5)
    recorder = _Recorder(bar, "loss", log)
    for step in bar:
        pixels, control, captions, masks = condition_batch(rng, config, config.batch_size)
        captions = ["" if rng.random() < config.caption_dropout else c for c in captions]
        with torch.no_grad():
            latents = parts.vae.encode(pixels).latent_dist.mean * parts.vae.config.scaling_factor
            embeds = _embed(parts, captions)
        noise = torch.randn(latents.shape, generator=generator)
        if config.offset_noise:
            b, c = latents.shape[:2]
            noise = noise + config.offset_noise * torch.randn(b, c, 1, 1, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(captions),),
                                  generator=generator)  # fmt: skip
        noisy = scheduler.add_noise(latents, noise, timesteps)
        down, mid = controlnet(noisy, timesteps, embeds, control, return_dict=False)
        noise_pred = parts.unet(noisy, timesteps, embeds, down_block_additional_residuals=down,
                                mid_block_additional_residual=mid).sample  # fmt: skip
        weights = pixel_weights(masks, config.object_weight, latents.shape[-1])
        loss = _weighted_mse(noise_pred, noise, timesteps, scheduler, config.min_snr_gamma, weights)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        recorder.add(step, loss.item(), step == config.steps - 1)
    controlnet = copy.deepcopy(controlnet).eval().requires_grad_(False)
    with torch.no_grad():
        for p, w in zip(controlnet.parameters(), ema, strict=True):
            p.copy_(w)
    return controlnet


@torch.no_grad()
def _embed(parts, captions: list[str]) -> torch.Tensor:
    ids = parts.tokenizer(captions, padding="max_length", truncation=True, return_tensors="pt",
                          max_length=parts.tokenizer.model_max_length).input_ids  # fmt: skip
    return parts.text_encoder(ids)[0]


@torch.no_grad()
def control_overlap(
    parts, controlnet, condition: str, *, scenes: int = 16, seed: int = 1, steps: int = 20,
    guidance_scale: float = 7.5, size: int = 64,
) -> dict:
    """How well generated objects follow the control map, on ``scenes`` random frames.

    Per scene: one frame of a random clip, its caption and its control map; one image is
    sampled with the ControlNet and one without (same seed, DDIM ``steps``, guidance). The
    object's mask in an image is its pixels nearest the caption's colour (as
    :func:`~inr_smooth.synthetic.score_object` finds it); its IoU with the frame's true
    silhouette is averaged. Returns ``{"with_control": iou, "without_control": iou, ...}``.
    """
    from ..inversion import DDIMSchedule

    rng = np.random.default_rng(seed)
    palette_names = list(COLORS)
    palette = np.array([COLORS[c] for c in palette_names], dtype=np.float32)
    schedule = DDIMSchedule.from_scheduler(parts.scheduler, steps)
    with_, without = [], []
    for k in range(scenes):
        scene = training_scene(rng, set())
        n = int(rng.integers(8))
        truth = silhouettes(scene, 8, size, index=n)[0]
        control = torch.from_numpy(world_maps(condition, scene, 8, size, index=n)[0])
        control = control.permute(2, 0, 1)
        control = control[None].float() / 255
        for net, out in ((controlnet, with_), (None, without)):
            image = _sample_image(parts, net, control, scene, schedule, guidance_scale, seed + k)
            nearest = np.argmin(((image[..., None, :] - palette) ** 2).sum(-1), axis=-1)
            found = nearest == palette_names.index(scene.color)
            union = (found | truth).sum()
            out.append(float((found & truth).sum() / union) if union else 0.0)
    return {
        "with_control": round(float(np.mean(with_)), 4),
        "without_control": round(float(np.mean(without)), 4),
        "scenes": scenes, "seed": seed, "inference_steps": steps,
        "guidance_scale": guidance_scale,
    }  # fmt: skip


def _sample_image(parts, controlnet, control, scene: Scene, schedule, guidance, seed) -> np.ndarray:
    """One 64 px image ``float (s, s, 3)`` in [0, 255] by DDIM with guidance."""
    embeds = torch.cat([_embed(parts, [""]), _embed(parts, [scene.caption])])
    side = control.shape[-1] // parts.vae_scale_factor
    latents = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(seed))
    for index in reversed(range(len(schedule))):
        t = int(schedule.timesteps[index])
        both = torch.cat([latents, latents])
        extra = {}
        if controlnet is not None:
            down, mid = controlnet(both, t, embeds, control.expand(2, -1, -1, -1),
                                   return_dict=False)  # fmt: skip
            extra = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        uncond, cond = parts.unet(both, t, embeds, **extra).sample.chunk(2)
        noise = uncond + guidance * (cond - uncond)
        latents = schedule.sample_step(latents, noise, index).float()
    image = parts.vae.decode(latents / parts.vae.config.scaling_factor).sample[0]
    return ((image.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()


def command_line(config: ControlNetTrainConfig) -> str:
    args = " ".join(
        f"--{f.name.replace('_', '-')} {json.dumps(v) if isinstance(v, str) else v}"
        for f in fields(config)
        for v in [getattr(config, f.name)]
    )
    return f"python -m inr_smooth.mini.train_controlnet {args}"


def run(config: ControlNetTrainConfig) -> Path:
    """Train, score and write the folder atomically (``config.json``, weights, record)."""
    if config.condition not in WORLD_CONDITIONS:
        raise ValueError(f"--condition must be one of {WORLD_CONDITIONS}, got {config.condition!r}")
    holdout_pairs(config)
    torch.set_num_threads(config.threads)
    parts = load_frozen_mini(config.model)
    log: dict = {"command": command_line(config), "config": asdict(config)}
    start = time.perf_counter()
    controlnet = train_controlnet(config, parts, log)
    log["train_seconds"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    if config.eval_scenes:
        log["control_overlap"] = control_overlap(parts, controlnet, config.condition,
                                                 scenes=config.eval_scenes)  # fmt: skip
    log["eval_seconds"] = round(time.perf_counter() - start, 1)
    log["parameters"] = sum(p.numel() for p in controlnet.parameters())
    log["torch"] = torch.__version__
    import resource

    log["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    output = config.folder
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        controlnet.to(torch.float16).save_pretrained(tmp)
        (tmp / "training.json").write_text(json.dumps(log, indent=1) + "\n")
        _replace_folder(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inr_smooth.mini.train_controlnet",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for item in fields(ControlNetTrainConfig):
        parser.add_argument(f"--{item.name.replace('_', '-')}", type=type(item.default),
                            default=item.default, help=item.metadata["help"])  # fmt: skip
    args = parser.parse_args(argv)
    try:
        path = run(ControlNetTrainConfig(**vars(args)))
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted; nothing written", file=sys.stderr)
        return 130
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
