"""Train inr-smooth-mini, the small text-to-image latent diffusion model shipped in the package.

It is the "image model" that one-shot tuning and inversion editing start from, in the place of
Stable Diffusion, for machines without SD weights. Data: single frames of the synthetic world
(:mod:`inr_smooth.synthetic`) with their captions, drawn on the fly from seeded generators.

    python -m inr_smooth.mini.train --output src/inr_smooth/mini/model --threads 2

Stage 1 trains the AutoencoderKL (L1 reconstruction + a small KL term), then sets its
``scaling_factor`` to 1 / std of the latents, as Stable Diffusion's was chosen. Stage 2 trains
the UNet2DConditionModel (epsilon prediction, SD 1.x's noise schedule) jointly with a small
CLIPTextModel over the real CLIP tokenizer's vocabulary, dropping 10% of captions so that
classifier-free guidance works, and keeps an exponential moving average (EMA) of both, which is
what is saved.

Offset noise: these frames are mostly flat colour, so the mean of a latent says the background
colour, and SD's schedule leaks that mean even at its noisiest steps (at t = 951 the mean's
signal is about as large as the noise's mean over 16 x 16 pixels). A model trained on plain
noise reads the background colour off the starting noise and ignores the caption. Adding a
per-channel constant of std ``offset_noise`` to the training noise hides the mean, so the
colours must come from the text. The min-SNR-5 loss weights keep the easy low-noise steps from
dominating the loss. The object covers about a tenth of a frame, so with uniform pixel weights
both stages learn the background first and blur the object into it (a first model trained so
decoded a red circle on blue as orange, a green square as teal); ``object_weight`` weights the
object's pixels (in the VAE's L1 and, pooled to the latent grid, in the diffusion loss) that
many times the background's. A few object colour/shape pairs (``--holdout``) are never shown,
so that generalisation to unseen combinations can be measured (:mod:`inr_smooth.mini.evaluate`).
The result is a diffusers folder (weights in fp16 safetensors) that ``load_parts`` loads exactly
like a Stable Diffusion folder, with a ``training.json`` record of the run.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..model_info import DEFAULTS_FILE
from ..synthetic import COLORS, SHAPES, Scene, random_scene, render, shape_mask
from ..tiny import SD_SCHEDULER_CONFIG, write_clip_tokenizer, write_model_index

__all__ = ["MINI_TEXT", "MINI_UNET", "MINI_VAE", "MiniTrainConfig", "main", "train_mini"]

# the settings `tune` and `edit` take on this model unless told otherwise (its native 64 px
# come from the UNet and VAE configs): the demo's, so that a run takes about a minute on a CPU
MINI_RECOMMENDED = {
    "description": "inr-smooth-mini: settings for a CPU run in about a minute",
    "tune": {"frames": 8, "stride": 1, "steps": 60, "learning_rate": 1e-4,
             "inference_steps": 20, "guidance_scale": 2.0},
    "edit": {"frames": 8, "inference_steps": 20, "guidance_scale": 7.5},
}  # fmt: skip
MINI_VAE = {  # three levels: 64 px frames -> 16 x 16 x 4 latents (vae_scale_factor 4)
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "block_out_channels": (16, 32, 32),
    "layers_per_block": 1,
    "latent_channels": 4,
    "norm_num_groups": 8,
    "sample_size": 64,
}
MINI_UNET = {  # SD 1.x's block layout at 32/64/64 channels: cross-attention at 16x16 and 8x8
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (32, 64, 64),
    "layers_per_block": 1,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 64,
    "attention_head_dim": (2, 4, 4),  # diffusers reads this as heads per block: head dim 16
    "norm_num_groups": 16,
}
MINI_TEXT = {  # CLIP's text transformer, shrunk; the vocabulary stays CLIP's 49,408 tokens
    "vocab_size": 49408,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 64,
}


def _opt(default, help_text: str):
    """A config field with its ``--help`` text."""
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class MiniTrainConfig:
    output: str = _opt("src/inr_smooth/mini/model", "the diffusers folder to write (replaced)")
    seed: int = _opt(0, "seed of the data, the initial weights and the noise")
    size: int = _opt(64, "frame side in pixels")
    max_frames: int = _opt(24, "clips of 8..N frames, a random frame each: the object anywhere")
    vae_steps: int = _opt(3000, "stage 1: VAE optimiser steps")
    vae_batch_size: int = _opt(32, "stage 1: frames per VAE step")
    vae_lr: float = _opt(1e-3, "stage 1: peak AdamW learning rate (warm-up + cosine)")
    kl_weight: float = _opt(1e-6, "stage 1: weight of the KL term beside the L1 loss")
    unet_steps: int = _opt(5000, "stage 2: UNet + text encoder steps (0: stop after the VAE)")
    batch_size: int = _opt(32, "stage 2: frames per UNet step")
    unet_lr: float = _opt(1e-3, "stage 2: peak AdamW learning rate (warm-up + cosine)")
    caption_dropout: float = _opt(0.1, "share of empty captions, for classifier-free guidance")
    ema_decay: float = _opt(0.999, "decay of the saved exponential moving average of weights")
    offset_noise: float = _opt(0.3, "std of a per-channel constant added to the training noise")
    min_snr_gamma: float = _opt(5.0, "min-SNR loss weights min(SNR, gamma) / SNR (0: plain MSE)")
    object_weight: float = _opt(10.0, "loss weight of the object's pixels (background: 1)")
    holdout: str = _opt(
        "purple triangle,orange diamond", "comma-separated colour/shape pairs never shown"
    )
    vae_from: str = _opt("", "a model folder whose VAE to reuse: skips stage 1")
    threads: int = _opt(1, "torch CPU threads")
    snapshot_every: int = _opt(0, "write the EMA model so far every N UNet steps (0: never)")
    snapshot_dir: str = _opt("", "where --snapshot-every writes (a diffusers folder)")


def holdout_pairs(config: MiniTrainConfig) -> set[tuple[str, str]]:
    """``--holdout`` as a set of ``(colour, shape)`` pairs; raises on unknown words."""
    pairs = set()
    for item in filter(None, (s.strip() for s in config.holdout.split(","))):
        words = item.split()
        if len(words) != 2 or words[0] not in COLORS or words[1] not in SHAPES:
            raise ValueError(
                f"holdout items must be '<colour> <shape>' with colour in {list(COLORS)} and "
                f"shape in {list(SHAPES)}, got {item!r}"
            )
        pairs.add((words[0], words[1]))
    return pairs


def training_scene(rng: np.random.Generator, holdout: set[tuple[str, str]]) -> Scene:
    """A random scene whose object is not one of the held-out colour/shape pairs."""
    while True:
        scene = random_scene(rng)
        if (scene.color, scene.shape) not in holdout:
            return scene


def frame_batch(
    rng: np.random.Generator, config: MiniTrainConfig, batch_size: int
) -> tuple[torch.Tensor, list[str], torch.Tensor]:
    """``batch_size`` random frames ``(b, 3, s, s)`` in [-1, 1], their captions, and the
    object's masks ``(b, 1, s, s)`` (1 on the object, 0 elsewhere)."""
    holdout = holdout_pairs(config)
    images, captions, masks = [], [], []
    for _ in range(batch_size):
        scene = training_scene(rng, holdout)
        frames = int(rng.integers(8, max(config.max_frames, 8) + 1))
        n = int(rng.integers(frames))
        images.append(render(scene, frames=frames, size=config.size)[n])
        captions.append(scene.caption)
        cx, cy = scene.center(n, frames)
        masks.append(shape_mask(scene.shape, cx, cy, scene.size_at(n, frames), config.size))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return pixels, captions, torch.from_numpy(np.stack(masks))[:, None].float()


def pixel_weights(masks: torch.Tensor, object_weight: float, side: int) -> torch.Tensor:
    """Per-pixel loss weights at ``side`` x ``side`` (the object's share of each pixel, area
    averaged, times ``object_weight``; 1 for background), normalised to mean 1 per image."""
    share = F.adaptive_avg_pool2d(masks, side)
    weights = 1 + (object_weight - 1) * share
    return weights / weights.mean(dim=(1, 2, 3), keepdim=True)


def _lr_lambda(steps: int):
    """Linear warm-up over 5% of the steps, then cosine decay to 10% of the peak."""
    warmup = max(1, steps // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.45 * (1 + np.cos(np.pi * min(progress, 1.0)))

    return factor


def _seeded(seed: int, build):
    """``build()`` under a fixed global seed (module init has no generator argument)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class _Recorder:
    """Mean loss over each window of steps, for the progress bar and ``training.json``."""

    def __init__(self, bar, key: str, log: dict, every: int = 50):
        self.bar, self.key, self.log, self.every, self.values = bar, key, log, every, []
        log[key] = []

    def add(self, step: int, value: float, last: bool) -> None:
        self.values.append(value)
        if len(self.values) == self.every or last:
            mean = float(np.mean(self.values))
            self.bar.set_postfix({self.key: f"{mean:.4f}"})
            self.log[self.key].append([step, round(mean, 5)])
            self.values = []


def train_vae(config: MiniTrainConfig, rng: np.random.Generator, log: dict):
    """Stage 1: the AutoencoderKL; returns it frozen, with ``scaling_factor`` set."""
    from diffusers import AutoencoderKL

    vae = _seeded(config.seed, lambda: AutoencoderKL(**MINI_VAE))
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config.vae_steps))
    generator = torch.Generator().manual_seed(config.seed + 1)
    bar = tqdm(range(config.vae_steps), desc="stage 1: VAE", mininterval=5)
    recorder = _Recorder(bar, "vae_l1", log)
    for step in bar:
        pixels, _, masks = frame_batch(rng, config, config.vae_batch_size)
        posterior = vae.encode(pixels).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        l1 = F.l1_loss(recon, pixels)
        weights = pixel_weights(masks, config.object_weight, config.size)
        loss = (weights * (recon - pixels).abs()).mean() + config.kl_weight * posterior.kl().mean()
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        recorder.add(step, l1.item(), step == config.vae_steps - 1)
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        pixels, _, _ = frame_batch(rng, config, 256)
        std = float(vae.encode(pixels).latent_dist.mean.std())
    vae.register_to_config(scaling_factor=round(1.0 / std, 5))
    log["vae_latent_std"] = round(std, 5)
    return vae


def load_vae(folder: str, log: dict):
    """Stage 1 skipped: the frozen fp32 VAE of an earlier run's folder (its log is copied)."""
    from diffusers import AutoencoderKL

    path = Path(folder)
    if not (path / "vae" / "config.json").is_file():
        raise FileNotFoundError(f"--vae-from expects a model folder with vae/, got {folder}")
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=torch.float32)
    if (path / "training.json").is_file():
        earlier = json.loads((path / "training.json").read_text())
        log["vae_from"] = {k: earlier.get(k) for k in ("command", "vae_l1", "vae_seconds")}
    return vae.eval().requires_grad_(False)


def train_unet(
    vae, tokenizer, config: MiniTrainConfig, rng: np.random.Generator, log: dict, snapshot=None
):
    """Stage 2: UNet + text encoder on (frame, caption) pairs; returns their EMA copies.

    ``snapshot(unet, text_encoder)``, if given, is called with EMA copies every
    ``config.snapshot_every`` steps.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    unet = _seeded(config.seed + 2, lambda: UNet2DConditionModel(**MINI_UNET))
    text_encoder = _seeded(config.seed + 3, lambda: CLIPTextModel(CLIPTextConfig(**MINI_TEXT)))
    scheduler = DDPMScheduler.from_config(DDIMScheduler(**SD_SCHEDULER_CONFIG).config)
    params = [*unet.parameters(), *text_encoder.parameters()]
    ema = [p.detach().clone() for p in params]
    optimizer = torch.optim.AdamW(params, lr=config.unet_lr, weight_decay=1e-2)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config.unet_steps))
    generator = torch.Generator().manual_seed(config.seed + 4)
    bar = tqdm(range(config.unet_steps), desc="stage 2: UNet + text encoder", mininterval=5)
    recorder = _Recorder(bar, "unet_loss", log)
    for step in bar:
        pixels, captions, masks = frame_batch(rng, config, config.batch_size)
        captions = ["" if rng.random() < config.caption_dropout else c for c in captions]
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids  # fmt: skip
        noise = torch.randn(latents.shape, generator=generator)
        if config.offset_noise:  # hide the latent's mean, which pure noise leaks (see module doc)
            b, c = latents.shape[:2]
            noise = noise + config.offset_noise * torch.randn(b, c, 1, 1, generator=generator)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (len(captions),),
                                  generator=generator)  # fmt: skip
        noisy = scheduler.add_noise(latents, noise, timesteps)
        noise_pred = unet(noisy, timesteps, text_encoder(ids)[0]).sample
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
        recorder.add(step, loss.item(), step == config.unet_steps - 1)
        if snapshot and config.snapshot_every and (step + 1) % config.snapshot_every == 0:
            snapshot(*_with_weights((unet, text_encoder), ema))
    return _with_weights((unet, text_encoder), ema)


def _weighted_mse(
    noise_pred, noise, timesteps, scheduler, gamma: float, pixel_weight
) -> torch.Tensor:
    """The DDPM epsilon loss with per-pixel weights ``pixel_weight`` ``(b, 1, h, w)``; with
    ``gamma > 0``, also min-SNR-gamma weighted (Hang et al., 2023, eq. 9 for epsilon
    prediction), which stops the easy low-noise steps dominating it."""
    per_sample = (pixel_weight * (noise_pred - noise).pow(2)).mean(dim=(1, 2, 3))
    if gamma <= 0:
        return per_sample.mean()
    abar = scheduler.alphas_cumprod[timesteps]
    snr = abar / (1 - abar)
    return (snr.clamp(max=gamma) / snr * per_sample).mean()


def _with_weights(modules: tuple, weights: list[torch.Tensor]) -> tuple:
    """Frozen eval-mode copies of ``modules`` holding ``weights`` (in ``parameters()`` order)."""
    copies = tuple(copy.deepcopy(m).eval().requires_grad_(False) for m in modules)
    params = [p for m in copies for p in m.parameters()]
    with torch.no_grad():
        for p, w in zip(params, weights, strict=True):
            p.copy_(w)
    return copies


def command_line(config: MiniTrainConfig) -> str:
    """The full command that reruns ``config``."""
    args = " ".join(
        f"--{f.name.replace('_', '-')} {json.dumps(v) if isinstance(v, str) else v}"
        for f in fields(config)
        for v in [getattr(config, f.name)]
    )
    return f"python -m inr_smooth.mini.train {args}"


def _write_folder(tmp: Path, vae, unet, text_encoder, log: dict) -> None:
    """Weights (fp16 safetensors), scheduler and ``training.json`` into ``tmp`` (the tokenizer
    is there already)."""
    from diffusers import DDIMScheduler

    for name, module in (("vae", vae), ("unet", unet), ("text_encoder", text_encoder)):
        log[f"{name}_parameters"] = sum(p.numel() for p in module.parameters())
        copy.deepcopy(module).to(torch.float16).save_pretrained(tmp / name)
    DDIMScheduler(**SD_SCHEDULER_CONFIG).save_pretrained(tmp / "scheduler")
    write_model_index(tmp)
    (tmp / DEFAULTS_FILE).write_text(json.dumps(MINI_RECOMMENDED, indent=2) + "\n")
    log["torch"] = torch.__version__
    log["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    (tmp / "training.json").write_text(json.dumps(log, indent=1) + "\n")


def _snapshot_writer(config: MiniTrainConfig, tmp: Path, vae, log: dict):
    """A callback writing a complete model folder to ``config.snapshot_dir`` (or None)."""
    if not config.snapshot_dir:
        return None
    target = Path(config.snapshot_dir)

    def write(unet, text_encoder) -> None:
        part = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(part, ignore_errors=True)
        shutil.copytree(tmp / "tokenizer", part / "tokenizer")
        _write_folder(part, vae, unet, text_encoder, dict(log, snapshot=True))
        _replace_folder(part, target)

    return write


def _replace_folder(tmp: Path, output: Path) -> None:
    """Move ``tmp`` to ``output``; an old ``output`` is kept aside until the move succeeded."""
    old = output.with_name(f".{output.name}.old-{os.getpid()}")
    if output.exists():
        os.replace(output, old)
    os.replace(tmp, output)
    shutil.rmtree(old, ignore_errors=True)


def train_mini(config: MiniTrainConfig) -> Path:
    """Train both stages and write the diffusers folder ``config.output`` atomically."""
    from transformers import CLIPTokenizer

    holdout_pairs(config)  # fail early on a bad --holdout
    torch.set_num_threads(config.threads)
    output = Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    log: dict = {"command": command_line(config), "config": asdict(config)}
    rng = np.random.default_rng(config.seed)
    try:
        write_clip_tokenizer(tmp / "tokenizer")
        tokenizer = CLIPTokenizer.from_pretrained(tmp / "tokenizer")
        start = time.perf_counter()
        vae = load_vae(config.vae_from, log) if config.vae_from else train_vae(config, rng, log)
        log["vae_seconds"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        unet, text_encoder = train_unet(
            vae, tokenizer, config, rng, log, _snapshot_writer(config, tmp, vae, log)
        )
        log["unet_seconds"] = round(time.perf_counter() - start, 1)
        _write_folder(tmp, vae, unet, text_encoder, log)
        _replace_folder(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return output


def main(argv: list[str] | None = None) -> int:
    """Command line: every field of :class:`MiniTrainConfig` is a flag."""
    parser = argparse.ArgumentParser(
        prog="python -m inr_smooth.mini.train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for item in fields(MiniTrainConfig):
        parser.add_argument(
            f"--{item.name.replace('_', '-')}",
            type=type(item.default),
            default=item.default,
            help=item.metadata["help"],
        )
    args = parser.parse_args(argv)
    try:
        path = train_mini(MiniTrainConfig(**vars(args)))
    except (FileNotFoundError, ValueError) as exc:  # a bad --vae-from or --holdout: one line
        parser.error(str(exc))
    except KeyboardInterrupt:  # train_mini has removed its unfinished folder
        print(f"{parser.prog}: interrupted; {args.output} left as it was", file=sys.stderr)
        return 130
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
