"""One training step of one-shot video tuning with a smoothing loss (INR(T) or a baseline).

    L = mean((eps_hat - eps)^2) + lambda * L_smooth

with ``L_smooth`` chosen by ``smoothing``: ``"none"`` (Tune-A-Video), ``"inr"`` (spec §2),
``"smoothvideo"`` / ``"smoothvideo-simple"`` (spec §3). One timestep per video, shared by all
of its frames.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..relations import inr_smoothing_loss, smoothvideo_loss

Smoothing = Literal["none", "smoothvideo", "smoothvideo-simple", "inr"]
SMOOTHING_MODES = ("none", "smoothvideo", "smoothvideo-simple", "inr")
# the papers' weights: INR 2.0 on Tune-A-Video; SmoothVideo 0.2 (with lambda_factor 1000)
DEFAULT_SMOOTH_WEIGHT = {"none": 0.0, "smoothvideo": 0.2, "smoothvideo-simple": 0.2, "inr": 2.0}

__all__ = [
    "DEFAULT_SMOOTH_WEIGHT",
    "SMOOTHING_MODES",
    "StepOutput",
    "smoothing_loss",
    "training_step",
]


class StepOutput(NamedTuple):
    loss: Tensor  # diffusion + weight * smoothing; backpropagate this
    diffusion_loss: Tensor  # detached, for logging
    smoothing_loss: Tensor  # detached, unweighted, for logging


def smoothing_loss(
    smoothing: Smoothing,
    noise_pred: Tensor,
    noise: Tensor,
    noisy_latents: Tensor,
    timesteps: Tensor,
    alphas_cumprod: Tensor,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    chain: str = "adjacent",
    detach_anchor: bool = False,
    lambda_factor: float = 1000.0,
) -> Tensor:
    """The unweighted smoothing term of ``smoothing`` mode (0-dim float32)."""
    if smoothing == "inr":
        return inr_smoothing_loss(
            noise_pred, noise, alpha=alpha, beta=beta, chain=chain, detach_anchor=detach_anchor
        )
    if smoothing in ("smoothvideo", "smoothvideo-simple"):
        return smoothvideo_loss(
            noise_pred,
            noisy_latents=noisy_latents,
            timesteps=timesteps,
            alphas_cumprod=alphas_cumprod,
            simple=smoothing == "smoothvideo-simple",
            lambda_factor=lambda_factor,
        )
    if smoothing == "none":
        return noise_pred.new_zeros((), dtype=torch.float32)
    raise ValueError(f"smoothing must be one of {SMOOTHING_MODES}, got {smoothing!r}")


def training_step(
    video_unet: torch.nn.Module,
    latents: Tensor,
    prompt_embeds: Tensor,
    noise_scheduler,
    *,
    smoothing: Smoothing = "none",
    smooth_weight: float | None = None,
    alpha: float = 0.5,
    beta: float = 0.5,
    chain: str = "adjacent",
    detach_anchor: bool = False,
    lambda_factor: float = 1000.0,
    generator: torch.Generator | None = None,
    noise: Tensor | None = None,
    timesteps: Tensor | None = None,
) -> StepOutput:
    """Noise the latents, predict the noise, and return the (smoothed) diffusion loss.

    Args:
        video_unet: ``video_unet(sample (b, c, f, h, w), timesteps (b,), prompt_embeds (b, n, d))``
            returning an object with ``.sample`` of the sample's shape.
        latents: clean VAE latents ``z_0``, ``(b, c, f, h, w)``.
        prompt_embeds: text embeddings ``(b, n, d)``.
        noise_scheduler: a diffusers DDPM-style scheduler (``add_noise``, ``alphas_cumprod``).
        smoothing: ``"none" | "smoothvideo" | "smoothvideo-simple" | "inr"``.
        smooth_weight: lambda; None takes the paper's value for the mode (2.0 INR, 0.2 SV).
        alpha, beta, chain, detach_anchor: INR options (spec §2).
        lambda_factor: SmoothVideo's lambda (spec §3).
        generator: draws the noise and the timestep (one per video) when not given.
        noise, timesteps: fix them instead of drawing (tests, benchmarks).

    Returns:
        :class:`StepOutput`; ``loss`` is the float32 scalar to backpropagate.
    """
    if smoothing not in SMOOTHING_MODES:
        raise ValueError(f"smoothing must be one of {SMOOTHING_MODES}, got {smoothing!r}")
    weight = DEFAULT_SMOOTH_WEIGHT[smoothing] if smooth_weight is None else smooth_weight
    if weight < 0:
        raise ValueError(f"smooth_weight must be >= 0, got {weight}")
    b = latents.shape[0]
    gen_device = generator.device if generator is not None else latents.device
    if noise is None:
        noise = torch.randn(latents.shape, generator=generator, device=gen_device)
    noise = noise.to(latents.device, latents.dtype)
    if timesteps is None:
        num_train = noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, num_train, (b,), generator=generator, device=gen_device)
    timesteps = timesteps.to(latents.device).long()
    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)  # one t per video
    noise_pred = video_unet(noisy_latents, timesteps, prompt_embeds).sample
    diffusion = F.mse_loss(noise_pred.float(), noise.float())
    if smoothing == "none":
        smooth = diffusion.new_zeros(())
    else:
        smooth = smoothing_loss(
            smoothing,
            noise_pred,
            noise,
            noisy_latents,
            timesteps,
            noise_scheduler.alphas_cumprod,
            alpha=alpha,
            beta=beta,
            chain=chain,
            detach_anchor=detach_anchor,
            lambda_factor=lambda_factor,
        )
    # lambda = 0 is exactly the baseline loss; the term is still computed for the log
    loss = diffusion + weight * smooth if weight else diffusion
    return StepOutput(loss, diffusion.detach(), smooth.detach())
