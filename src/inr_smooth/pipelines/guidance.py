"""Noise predictors for DDIM inversion and sampling with a video UNet."""

from __future__ import annotations

import torch
from einops import repeat
from torch import Tensor

from ..inversion import NoiseFn

__all__ = ["guided_noise_fn"]


def guided_noise_fn(
    video_unet: torch.nn.Module,
    prompt_embeds: Tensor,
    negative_prompt_embeds: Tensor | None = None,
    guidance_scale: float = 1.0,
) -> NoiseFn:
    """``noise_fn(latents, timestep)`` for :func:`~inr_smooth.inversion.ddim_invert` / sample.

    ``prompt_embeds`` is ``(1, n, d)`` (or ``(b, n, d)``). With ``guidance_scale > 1`` and
    negative (usually empty-prompt) embeddings, it applies classifier-free guidance,
    ``eps_u + g (eps_c - eps_u)``, with both branches in one batched UNet call.
    Runs under ``torch.no_grad`` in the UNet's dtype and returns float32.
    """
    guided = guidance_scale > 1.0 and negative_prompt_embeds is not None
    dtype = next(video_unet.parameters()).dtype

    @torch.no_grad()
    def noise_fn(latents: Tensor, timestep: int) -> Tensor:
        b = latents.shape[0]
        cond = _batch(prompt_embeds, b)
        if not guided:
            return video_unet(latents.to(dtype), timestep, cond.to(dtype)).sample.float()
        uncond = _batch(negative_prompt_embeds, b)
        both = torch.cat([latents, latents]).to(dtype)  # (2b, c, f, h, w)
        out = video_unet(both, timestep, torch.cat([uncond, cond]).to(dtype)).sample.float()
        eps_uncond, eps_cond = out.chunk(2)
        return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

    return noise_fn


def _batch(embeds: Tensor, b: int) -> Tensor:
    if embeds.shape[0] == b:
        return embeds
    if embeds.shape[0] != 1:
        raise ValueError(f"expected prompt embeddings for 1 or {b} videos, got {embeds.shape[0]}")
    return repeat(embeds, "1 n d -> b n d", b=b)
