"""Stable Diffusion 1.x parts shared by the pipelines: loading, prompts, VAE video codec.

A model is a hub id (``stable-diffusion-v1-5/stable-diffusion-v1-5``) or a local diffusers
folder with ``tokenizer/``, ``text_encoder/``, ``vae/``, ``unet/`` and ``scheduler/``; both
load through diffusers' and transformers' own ``from_pretrained``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from ..model_info import ModelLoadError, check_model_folder, describe_model
from ..models import load_unet2d

__all__ = [
    "ModelLoadError",
    "StableDiffusionParts",
    "check_model_folder",
    "decode_video",
    "encode_prompts",
    "encode_video",
    "encode_video_distribution",
    "load_parts",
    "reuse_loaded_parts",
]

@dataclass
class StableDiffusionParts:
    """The pieces of a Stable Diffusion 1.x model (the UNet still 2-D)."""

    tokenizer: object
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    scheduler: object
    source: str

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


@contextmanager
def _quiet_loading():
    """No "Loading weights" progress bars of transformers / diffusers while parts load."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    verbosity = diffusers_logging.get_verbosity()
    # diffusers warns on every `.to(device)` of a VAE that "modules should be kept in
    # float32: []" (an empty list): nothing to act on
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.enable_progress_bar()
        diffusers_logging.enable_progress_bar()
        diffusers_logging.set_verbosity(verbosity)


def load_parts(
    model: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> StableDiffusionParts:
    """Load tokenizer, text encoder, VAE, 2-D UNet and scheduler from a hub id or folder.

    ``"mini"`` names inr-smooth-mini, the small model shipped with the package. A hub id whose
    files are all in the local Hugging Face cache loads from there without touching the
    network; one that is not fails at once when the hub cannot be reached
    (:func:`~inr_smooth.model_info.describe_model`). Inside :func:`reuse_loaded_parts` a model
    loaded before in this process is not loaded again.
    """
    if _REUSE is not None:
        return _reused_parts(_REUSE, model, device, dtype)
    return _load_parts(model, device=device, dtype=dtype)


# (source, device, dtype) -> parts whose UNet is never handed out; set by reuse_loaded_parts
_REUSE: dict | None = None


@contextmanager
def reuse_loaded_parts() -> Iterator[None]:
    """Within the block, :func:`load_parts` loads each (model, device, dtype) once per process
    and then hands out the same tokenizer, text encoder and VAE (frozen, in eval mode: no
    pipeline changes them) with a fresh copy of the 2-D UNet and of the scheduler each time:
    inflating a UNet changes it in place and tuning trains it. The pristine UNet is kept on
    the CPU (one more copy of it in RAM, none on the GPU). The cache is dropped when the
    outermost block ends. ``inr-smooth batch`` runs its jobs inside one."""
    global _REUSE
    outer = _REUSE
    _REUSE = {} if outer is None else outer
    try:
        yield
    finally:
        _REUSE = outer


def _reused_parts(cache: dict, model: str, device, dtype: torch.dtype) -> StableDiffusionParts:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:N" are one device
        device = torch.device("cuda", torch.cuda.current_device())
    key = (describe_model(model).source, str(device), str(dtype))
    if key not in cache:
        parts = _load_parts(model, device=device, dtype=dtype)
        parts.unet.to("cpu")  # the pristine copy
        cache[key] = parts
    kept = cache[key]
    unet = copy.deepcopy(kept.unet).to(device)
    return StableDiffusionParts(kept.tokenizer, kept.text_encoder, kept.vae, unet,
                                copy.deepcopy(kept.scheduler), kept.source)  # fmt: skip


def _load_parts(model: str, *, device, dtype: torch.dtype) -> StableDiffusionParts:
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    source = describe_model(model).source
    try:
        with _quiet_loading():
            tokenizer = CLIPTokenizer.from_pretrained(source, subfolder="tokenizer")
            text_encoder = CLIPTextModel.from_pretrained(
                source, subfolder="text_encoder", torch_dtype=dtype
            )
            vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype)
            unet = load_unet2d(source, torch_dtype=dtype)
            scheduler = DDIMScheduler.from_pretrained(source, subfolder="scheduler")
        for module in (text_encoder, vae, unet):
            module.requires_grad_(False).to(device=device).eval()
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"could not load Stable Diffusion model {model!r}: {first_line} "
            "(a hub id needs network access or a filled Hugging Face cache; "
            "or pass a local diffusers folder)"
        ) from None
    return StableDiffusionParts(tokenizer, text_encoder, vae, unet, scheduler, source)


@torch.no_grad()
def encode_prompts(parts: StableDiffusionParts, prompts: list[str]) -> Tensor:
    """CLIP text embeddings ``(n, 77, d)`` of the prompts, padded to the tokenizer's length.

    A prompt longer than the text encoder reads (77 tokens for CLIP) is cut, with a warning
    that says what is dropped."""
    tokenizer = parts.tokenizer
    for prompt in prompts:
        warn_if_truncated(tokenizer, prompt)
    ids = tokenizer(
        list(prompts),
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    device = next(parts.text_encoder.parameters()).device
    return parts.text_encoder(ids.to(device))[0]


def warn_if_truncated(tokenizer, prompt: str) -> None:
    ids = tokenizer(prompt, truncation=False, verbose=False).input_ids
    limit = tokenizer.model_max_length
    if len(ids) > limit:
        dropped = tokenizer.decode(ids[limit - 1 : -1]).strip()
        dropped = dropped if len(dropped) <= 60 else dropped[:57] + "..."
        warnings.warn(
            f"the prompt is {len(ids)} tokens, the text encoder reads {limit}: the end "
            f"{dropped!r} is ignored",
            stacklevel=3,
        )


@torch.no_grad()
def encode_video(
    vae: torch.nn.Module,
    video: Tensor,
    *,
    generator: torch.Generator | None = None,
    sample: bool = False,
    chunk: int = 8,
) -> Tensor:
    """VAE-encode ``(b, 3, f, h, w)`` pixels in [-1, 1] to scaled latents ``(b, 4, f, h/8, w/8)``.

    ``sample=True`` draws from the posterior (Tune-A-Video's tuning); the default takes its
    mean, which is deterministic and what inversion wants. Frames go through in chunks.
    """
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"expected video of shape (b, 3, f, h, w), got {tuple(video.shape)}")
    b = video.shape[0]
    param = next(vae.parameters())
    frames = rearrange(video, "b c f h w -> (b f) c h w").to(param.device, param.dtype)
    latents = []
    for piece in frames.split(chunk):
        dist = vae.encode(piece).latent_dist
        latents.append(dist.sample(generator) if sample else dist.mean)
    latents = torch.cat(latents) * vae.config.scaling_factor
    # contiguous: a strided view would make the UNet's results depend on the memory layout,
    # so latents that went through a file (e.g. a cache) would not reproduce bit for bit
    return rearrange(latents, "(b f) c h w -> b c f h w", b=b).contiguous()


@torch.no_grad()
def encode_video_distribution(
    vae: torch.nn.Module, video: Tensor, *, chunk: int = 8
) -> tuple[Tensor, Tensor]:
    """The VAE posterior of ``(b, 3, f, h, w)`` pixels as scaled ``(mean, std)`` latents, each
    ``(b, 4, f, h/8, w/8)``: a sample is ``mean + std * noise`` (Tune-A-Video draws one per
    tuning step)."""
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"expected video of shape (b, 3, f, h, w), got {tuple(video.shape)}")
    b = video.shape[0]
    param = next(vae.parameters())
    frames = rearrange(video, "b c f h w -> (b f) c h w").to(param.device, param.dtype)
    means, stds = [], []
    for piece in frames.split(chunk):
        dist = vae.encode(piece).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    scale = vae.config.scaling_factor

    def video_of(parts: list[Tensor]) -> Tensor:
        latents = torch.cat(parts).float() * scale
        return rearrange(latents, "(b f) c h w -> b c f h w", b=b).contiguous()

    return video_of(means), video_of(stds)


@torch.no_grad()
def decode_video(vae: torch.nn.Module, latents: Tensor, *, chunk: int = 8) -> Tensor:
    """Decode scaled latents ``(b, 4, f, h, w)`` to float32 pixels ``(b, 3, f, 8h, 8w)``."""
    b = latents.shape[0]
    param = next(vae.parameters())
    flat = rearrange(latents, "b c f h w -> (b f) c h w").to(param.device, param.dtype)
    frames = [vae.decode(piece / vae.config.scaling_factor).sample for piece in flat.split(chunk)]
    video = torch.cat(frames).float().clamp(-1, 1)
    return rearrange(video, "(b f) c h w -> b c f h w", b=b)
