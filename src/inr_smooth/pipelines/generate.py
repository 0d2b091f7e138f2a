"""Sample videos later from weights written by :func:`~inr_smooth.pipelines.tune.tune`.

The ``weights/`` folder of a tuning run holds the tuned tensors, ``tune.json`` (base model,
sizes, sampling settings) and the DDIM-inverted source latent, so generation needs neither the
source video nor the run's config: by default it starts from that latent, as Tune-A-Video does;
``from_noise=True`` starts from seeded Gaussian noise instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..models import load_video_unet_weights
from .components import load_parts
from .controlvideo import load_control
from .sampling import sample_videos, write_samples
from .tune import INVERTED_LATENTS, TUNE_RECORD, resolve_device

__all__ = ["GenerateConfig", "generate"]


@dataclass(frozen=True)
class GenerateConfig:
    weights: str  # the weights/ folder of a tuning run
    prompts: tuple[str, ...]
    output: str = "outputs/generate"
    model: str | None = None  # base model; None: the one the weights were tuned from
    guidance_scale: float | None = None  # None: as in the tuning run
    inference_steps: int | None = None  # None: as in the tuning run
    from_noise: bool = False  # start from Gaussian noise instead of the inverted source
    source: str | None = None  # source video: adds a side-by-side per prompt
    seed: int = 33
    fps: float | None = None
    device: str = "auto"


def read_tune_record(weights: Path) -> dict:
    path = weights / TUNE_RECORD
    if not path.is_file():
        raise FileNotFoundError(
            f"expected {TUNE_RECORD} in {weights}: pass the weights/ folder of an `inr-smooth "
            "tune` run"
        )
    return json.loads(path.read_text())


@torch.no_grad()
def generate(config: GenerateConfig, *, progress: bool = True) -> list[Path]:
    """Write ``<prompt>.mp4`` / ``.gif`` (and side-by-sides) into ``config.output``."""
    if not config.prompts:
        raise ValueError("expected at least one prompt")
    weights = Path(config.weights)
    record = read_tune_record(weights)
    device = resolve_device(config.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    parts = load_parts(config.model or record["model"], device=device, dtype=dtype)
    video_unet = load_video_unet_weights(parts.unet, weights).to(device)
    video_unet = load_control(  # ControlVideo runs: their tuned ControlNets and maps
        weights, video_unet, parts, device=device, dtype=dtype,
        inference_steps=config.inference_steps or record["inference_steps"],
    )  # fmt: skip
    shape = load_file(weights / INVERTED_LATENTS)["latents"].shape
    if config.from_noise:
        generator = torch.Generator().manual_seed(config.seed)
        start = torch.randn(shape, generator=generator)
    else:
        start = load_file(weights / INVERTED_LATENTS)["latents"]
    videos = sample_videos(
        video_unet,
        parts,
        start.to(device),
        config.prompts,
        guidance_scale=config.guidance_scale or record["guidance_scale"],
        num_inference_steps=config.inference_steps or record["inference_steps"],
        progress=progress,
    )
    source = None
    if config.source:
        from ..video_io import read_video

        source = read_video(
            config.source,
            num_frames=record["frames"],
            start=record["start"],
            stride=record["stride"],
            size=(record["height"], record["width"]),
        )
    return write_samples(
        Path(config.output),
        config.prompts,
        videos,
        source=source,
        fps=config.fps or record["fps"],
    )
