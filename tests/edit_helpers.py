"""Shared pieces of the `edit` tests: a tiny SD folder's parts, small configs and pipelines."""

from __future__ import annotations

import copy
import dataclasses
from types import SimpleNamespace

import numpy as np
import torch

from inr_smooth.models import inflate_unet
from inr_smooth.pipelines.components import encode_video
from inr_smooth.pipelines.edit import EditConfig, EditPipeline
from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import video_to_tensor

SOURCE = "a red circle moving right on a blue background"
EDIT = "a green square moving right on a blue background"
SCENE = Scene(color="red", shape="circle", motion="right")


def small_config(**overrides) -> EditConfig:
    """4 frames of 16 px (8x8 latents), 4 DDIM steps, fusion on every attention layer; no
    prompt-to-prompt control unless ``cross_replace`` is given."""
    values = dict(
        video="", source_prompt=SOURCE, prompt=EDIT, model="tiny", output="", frames=4,
        size=16, inference_steps=4, fusion_min_downsample=1, self_replace=0.5, seed=0,
        cross_replace=0.0,
    )  # fmt: skip
    return EditConfig(**{**values, **overrides})


def make_pipeline(parts, **overrides) -> EditPipeline:
    """A pipeline on a fresh copy of the tiny UNet (inflation modifies the UNet in place)."""
    config = small_config(**overrides)
    parts = dataclasses.replace(parts, unet=copy.deepcopy(parts.unet))
    video_unet = inflate_unet(parts.unet, attention=config.attention, temporal_attention=False)
    return EditPipeline(parts, video_unet, config, progress=False)


def source_frames(frames: int = 4, size: int = 16) -> np.ndarray:
    return render(SCENE, frames=frames, size=size)


@torch.no_grad()
def source_latents(parts, frames: np.ndarray) -> torch.Tensor:
    return encode_video(parts.vae, video_to_tensor(frames)[None]).float()  # (1, 4, f, h, w)


class AnalyticUNet(torch.nn.Module):
    """``noise_pred = 0.5 tanh(latents)``: a smooth noise model that ignores timestep and prompt,
    with the video UNet's call signature."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a dtype and device

    def forward(self, sample, timestep, encoder_hidden_states):
        return SimpleNamespace(sample=0.5 * torch.tanh(sample))
