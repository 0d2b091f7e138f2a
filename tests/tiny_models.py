"""Tiny, seeded model components for the CPU test suite (built from configs, no downloads)."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from inr_smooth.tiny import TINY_UNET_CONFIG


def tiny_unet2d(seed: int = 0, **overrides) -> UNet2DConditionModel:
    """A Stable-Diffusion-shaped UNet2DConditionModel with 32/64 channels, in eval mode.

    Weights come from ``seed`` only (the global RNG state is left as it was).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**{**TINY_UNET_CONFIG, **overrides})
    return unet.eval()


def randomize_(module: torch.nn.Module, seed: int, scale: float = 0.1) -> torch.nn.Module:
    """Overwrite every parameter of ``module`` with seeded noise (e.g. to wake zero-init layers)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            param.copy_(noise * scale)
    return module
