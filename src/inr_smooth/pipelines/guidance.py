"""Noise predictors for DDIM inversion and sampling with a video UNet."""

from __future__ import annotations

import torch
from einops import repeat
from torch import Tensor

from ..inversion import NoiseFn

__all__ = ["decoupled_noise_fn", "embedding_noise_fn", "guided_noise_fn"]


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


def embedding_noise_fn(video_unet: torch.nn.Module):
    """``noise_fn(latents, timestep, prompt_embeds)`` of one video, differentiable in
    ``prompt_embeds`` (null-text optimisation, :mod:`inr_smooth.null_text`); float32 out."""
    dtype = next(video_unet.parameters()).dtype

    def noise_fn(latents: Tensor, timestep: int, prompt_embeds: Tensor) -> Tensor:
        return video_unet(latents.to(dtype), timestep, prompt_embeds.to(dtype)).sample.float()

    return noise_fn


def decoupled_noise_fn(
    video_unet: torch.nn.Module,
    source_embeds: Tensor,
    edit_embeds: Tensor,
    empty_embeds: Tensor,
    null_embeds: Tensor | None,
    guidance_scale: float,
    timesteps: Tensor,
    *,
    fast: bool = False,
) -> NoiseFn:
    """Video-P2P's guidance of the batch ``[source, edit]`` (latents ``(2, c, f, h, w)``).

    Both rows use ``eps_u + g (eps_c - eps_u)``; the source row's unconditional embedding is the
    step's optimised null-text embedding ``null_embeds[i]`` (``(K, 1, n, d)``, ``i`` the sampling
    step, 0 = noisiest), the edit row's the plain ``empty_embeds`` (``(1, n, d)``): the edit never
    sees the optimised embeddings. One batched call of ``[u_source, u_edit, c_source, c_edit]``.
    ``fast`` (Video-P2P's ``--fast``, no null-text): the source row takes its conditional
    prediction alone (guidance 1), so its unconditional row is not computed: one call of
    ``[u_edit, c_source, c_edit]``. Either way the conditional half is ``[source, edit]``, the
    layout of :class:`~inr_smooth.pipelines.p2p_attention.PromptControl`'s ``"batch"`` source.
    """
    if not fast and (null_embeds is None or null_embeds.shape[0] != len(timesteps)):
        found = None if null_embeds is None else null_embeds.shape[0]
        raise ValueError(
            f"expected one null-text embedding per step ({len(timesteps)}), got {found}"
        )
    dtype = next(video_unet.parameters()).dtype
    index = {int(t): i for i, t in enumerate(timesteps.tolist())}
    count = len(timesteps)

    @torch.no_grad()
    def noise_fn(latents: Tensor, timestep: int) -> Tensor:
        if latents.shape[0] != 2:
            raise ValueError(f"expected latents of [source, edit], got {latents.shape[0]} videos")
        g = guidance_scale
        if fast:
            videos = torch.cat([latents[1:], latents]).to(dtype)  # [edit, source, edit]
            context = torch.cat([empty_embeds, source_embeds, edit_embeds]).to(dtype)
            u_edit, c_source, c_edit = video_unet(videos, timestep, context).sample.float().chunk(3)
            return torch.cat([c_source, u_edit + g * (c_edit - u_edit)])
        null = null_embeds[count - 1 - index[int(timestep)]]  # (1, n, d), this sampling step's
        context = torch.cat([null, empty_embeds, source_embeds, edit_embeds]).to(dtype)
        out = video_unet(torch.cat([latents, latents]).to(dtype), timestep, context).sample.float()
        uncond, cond = out.chunk(2)
        return uncond + g * (cond - uncond)

    return noise_fn
