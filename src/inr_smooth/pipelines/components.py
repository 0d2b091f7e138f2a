"""Stable Diffusion 1.x parts shared by the pipelines: loading, prompts, VAE video codec.

A model is a hub id (``stable-diffusion-v1-5/stable-diffusion-v1-5``) or a local diffusers
folder with ``tokenizer/``, ``text_encoder/``, ``vae/``, ``unet/`` and ``scheduler/``; both
load through diffusers' and transformers' own ``from_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor

from ..mini import resolve_model
from ..models import load_unet2d

__all__ = [
    "ModelLoadError",
    "StableDiffusionParts",
    "decode_video",
    "encode_prompts",
    "encode_video",
    "load_parts",
]

SUBFOLDERS = ("tokenizer", "text_encoder", "vae", "unet", "scheduler")


class ModelLoadError(ValueError):
    """The model path or hub id does not give a Stable Diffusion model."""


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


def _looks_local(model: str) -> bool:
    return (
        Path(model).expanduser().exists()
        or model.startswith((".", "/", "~"))
        or (model.count("/") != 1)
    )


def check_model_folder(folder: Path) -> None:
    """Raise ModelLoadError unless ``folder`` is a diffusers Stable Diffusion folder."""
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {folder}")
    missing = [name for name in SUBFOLDERS if not (folder / name).is_dir()]
    if missing:
        raise ModelLoadError(
            f"{folder} is not a diffusers Stable Diffusion folder: missing "
            f"{', '.join(name + '/' for name in missing)} (expected {', '.join(SUBFOLDERS)})"
        )


def load_parts(
    model: str,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> StableDiffusionParts:
    """Load tokenizer, text encoder, VAE, 2-D UNet and scheduler from a hub id or folder.

    ``"mini"`` names inr-smooth-mini, the small model shipped with the package.
    """
    from diffusers import AutoencoderKL, DDIMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    model = resolve_model(model)
    if _looks_local(model):
        check_model_folder(Path(model).expanduser())
        model = str(Path(model).expanduser())
    try:
        tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(
            model, subfolder="text_encoder", torch_dtype=dtype
        )
        vae = AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=dtype)
        unet = load_unet2d(model, torch_dtype=dtype)
        scheduler = DDIMScheduler.from_pretrained(model, subfolder="scheduler")
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"could not load Stable Diffusion model {model!r}: {first_line} "
            "(a hub id needs network access or a filled Hugging Face cache; "
            "or pass a local diffusers folder)"
        ) from None
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False).to(device=device).eval()
    return StableDiffusionParts(tokenizer, text_encoder, vae, unet, scheduler, model)


@torch.no_grad()
def encode_prompts(parts: StableDiffusionParts, prompts: list[str]) -> Tensor:
    """CLIP text embeddings ``(n, 77, d)`` of the prompts, padded to the tokenizer's length."""
    ids = parts.tokenizer(
        list(prompts),
        padding="max_length",
        max_length=parts.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    device = next(parts.text_encoder.parameters()).device
    return parts.text_encoder(ids.to(device))[0]


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
def decode_video(vae: torch.nn.Module, latents: Tensor, *, chunk: int = 8) -> Tensor:
    """Decode scaled latents ``(b, 4, f, h, w)`` to float32 pixels ``(b, 3, f, 8h, 8w)``."""
    b = latents.shape[0]
    param = next(vae.parameters())
    flat = rearrange(latents, "b c f h w -> (b f) c h w").to(param.device, param.dtype)
    frames = [vae.decode(piece / vae.config.scaling_factor).sample for piece in flat.split(chunk)]
    video = torch.cat(frames).float().clamp(-1, 1)
    return rearrange(video, "(b f) c h w -> b c f h w", b=b)
