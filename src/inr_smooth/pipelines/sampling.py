"""Generation with a (tuned) video UNet, as Tune-A-Video does it.

Start from the DDIM-inverted latent of the source video (inverted with the empty prompt and no
guidance, plain inversion), then DDIM-sample with each edit prompt and classifier-free guidance,
and decode with the VAE. Used by ``tune`` (final and validation samples) and ``generate``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..inversion import DDIMSchedule, ddim_invert, ddim_sample
from .components import StableDiffusionParts, decode_video, encode_prompts
from .guidance import guided_noise_fn

__all__ = [
    "invert_source",
    "sample_files",
    "sample_names",
    "sample_videos",
    "slug",
    "write_samples",
]


def slug(prompt: str, max_len: int = 60) -> str:
    """File-name-safe short form: ``"a jeep car, Van Gogh"`` -> ``a-jeep-car-van-gogh``; a
    prompt with no Latin letters or digits becomes ``prompt-<hash>``."""
    text = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    if not text:
        return "prompt-" + hashlib.sha256(prompt.encode()).hexdigest()[:10]
    return text[:max_len].rstrip("-")


def sample_names(prompts: Sequence[str]) -> list[str]:
    """One distinct file name per prompt: :func:`slug`, and where two prompts share a slug
    ("a green square" and "A green square!") the later ones get a hash of their text."""
    names: list[str] = []
    for prompt in prompts:
        name = slug(prompt)
        if name in names:
            name = f"{name}-{hashlib.sha256(prompt.encode()).hexdigest()[:8]}"
        if name in names:
            raise ValueError(f"the prompt {prompt!r} is given twice")
        names.append(name)
    return names


@torch.no_grad()
def invert_source(
    video_unet: torch.nn.Module,
    parts: StableDiffusionParts,
    latents: Tensor,
    *,
    num_inference_steps: int,
    progress: bool = True,
) -> Tensor:
    """DDIM-invert the source latents ``(1, c, f, h, w)`` with the empty prompt: ``z_T``."""
    empty = encode_prompts(parts, [""])
    schedule = DDIMSchedule.from_scheduler(parts.scheduler, num_inference_steps)
    noise_fn = guided_noise_fn(video_unet, empty)
    trajectory = ddim_invert(latents, noise_fn, schedule, progress=progress)
    return trajectory.final_latents


@torch.no_grad()
def sample_videos(
    video_unet: torch.nn.Module,
    parts: StableDiffusionParts,
    start_latents: Tensor,
    prompts: Sequence[str],
    *,
    guidance_scale: float,
    num_inference_steps: int,
    progress: bool = True,
) -> list[np.ndarray]:
    """One video per prompt from ``start_latents`` ``(1, c, f, h, w)``: uint8 ``(f, H, W, 3)``."""
    from ..video_io import tensor_to_video

    schedule = DDIMSchedule.from_scheduler(parts.scheduler, num_inference_steps)
    negative = encode_prompts(parts, [""])
    videos = []
    for prompt in prompts:
        noise_fn = guided_noise_fn(
            video_unet, encode_prompts(parts, [prompt]), negative, guidance_scale
        )
        latents = ddim_sample(start_latents, noise_fn, schedule, progress=progress)
        videos.append(tensor_to_video(decode_video(parts.vae, latents)[0]))
    return videos


def sample_files(folder: Path, name: str, *, source: bool) -> list[Path]:
    """The files :func:`write_samples` writes for one prompt named ``name``."""
    files = [folder / f"{name}.mp4", folder / f"{name}.gif"]
    return files + ([folder / f"{name}-side-by-side.mp4"] if source else [])


def write_samples(
    folder: Path,
    prompts: Sequence[str],
    videos: Sequence[np.ndarray],
    *,
    source: np.ndarray | None,
    fps: float,
    names: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``<name>.mp4`` and ``.gif`` per video, and a side-by-side with the source; names
    default to :func:`sample_names` of the prompts."""
    from ..video_io import write_side_by_side, write_video

    names = sample_names(prompts) if names is None else names
    written = []
    for prompt, video, name in zip(prompts, videos, names, strict=True):
        mp4, gif, *side = sample_files(folder, name, source=source is not None)
        written += [write_video(mp4, video, fps=fps), write_video(gif, video, fps=fps)]
        if side:
            written.append(
                write_side_by_side(side[0], [source, video], ["source", prompt], fps=fps)
            )
    return written
