"""UNets for benchmarks: speed and memory depend on the architecture, not on the weights."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

from ..tiny import TINY_UNET_CONFIG

__all__ = ["SD15_UNET_CONFIG", "bench_unet", "unet_flops_per_frame"]

# Stable Diffusion 1.5's UNet (stable-diffusion-v1-5/unet/config.json); the other entries are
# diffusers' defaults, which are SD 1.x's
SD15_UNET_CONFIG = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "down_block_types": (
        "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D",
    ),
    "up_block_types": (
        "UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
    ),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}  # fmt: skip


def bench_unet(model: str, device: torch.device, *, seed: int = 0) -> UNet2DConditionModel:
    """``tiny`` | ``sd15-arch`` (random weights, built on ``device``) | a model path or hub id."""
    if model in ("tiny", "sd15-arch"):
        config = TINY_UNET_CONFIG if model == "tiny" else SD15_UNET_CONFIG
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            with torch.device(device):
                return UNet2DConditionModel(**config)
    from ..models import load_unet2d

    return load_unet2d(model).to(device)


def unet_flops_per_frame(config: dict, size: int, text_tokens: int = 77) -> float:
    """FLOPs of one 2-D UNet forward on one frame of ``size`` px (latents ``size / 8``),
    counted with ``torch.utils.flop_counter`` on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
        latents = torch.empty(1, config["in_channels"], size // 8, size // 8)
        embeds = torch.empty(1, text_tokens, config["cross_attention_dim"])
        timestep = torch.zeros(1, dtype=torch.long)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(latents, timestep, embeds)
    return float(counter.get_total_flops())
