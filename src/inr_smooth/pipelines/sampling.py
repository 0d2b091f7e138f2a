"""Generation with a (tuned) video UNet, as Tune-A-Video does it.

Start from the DDIM-inverted latent of the source video (inverted with the empty prompt and no
guidance, plain inversion), then DDIM-sample with each edit prompt and classifier-free guidance,
and decode with the VAE. Used by ``tune`` (final and validation samples) and ``generate``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..inversion import DDIMSchedule, ddim_invert, ddim_sample
from .components import StableDiffusionParts, decode_video, encode_prompts
from .guidance import guided_noise_fn
from .sample_names import sample_files, sample_names, slug

__all__ = [
    "invert_source",
    "sample_files",
    "sample_names",
    "sample_videos",
    "slug",
    "write_samples",
]


@torch.no_grad()
def invert_source(
    video_unet: torch.nn.Module,
    parts: StableDiffusionParts,
    latents: Tensor,
    *,
    num_inference_steps: int,
    progress: bool = True,
    prompt: str = "",
) -> Tensor:
    """DDIM-invert the source latents ``(1, c, f, h, w)`` with ``prompt`` (Tune-A-Video: the
    empty prompt; ControlVideo: the source caption), no guidance: ``z_T``."""
    embeds = encode_prompts(parts, [prompt])
    schedule = DDIMSchedule.from_scheduler(parts.scheduler, num_inference_steps)
    noise_fn = guided_noise_fn(video_unet, embeds)
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
