"""ControlVideo (Zhao et al. 2023, arXiv 2305.17098, thu-ml/controlvideo) as a mode of ``tune``.

One-shot tuning of Stable Diffusion conditioned on ControlNet maps of every source frame:

1. the source frames' control maps (one control video per ControlNet: a detector run on the
   frames -- Canny built in -- or precomputed maps), checked against the clip;
2. the UNet inflated with key-frame attention (frame 0's keys and values), GroupNorm over the
   frames and ControlVideo's parallel temporal branch (``architecture="controlvideo"``); each
   ControlNet inflated with key-frame attention; their residuals, times each net's scale,
   summed into the UNet (:class:`~inr_smooth.models.controlnet.ControlledVideoUNet`);
3. tuning of ``attn1.to_out`` in the UNet and the ControlNets, the temporal attention and its
   zero convolution (lr 3e-5, gradient clipping 1.0, 300 steps, 8 frames) with the smoothing
   switch of ``tune`` (INR's lambda 0.2 here, the INR paper's ControlVideo setting);
4. DDIM inversion with the ControlNets on the source's maps and the source prompt, no
   guidance; sampling with guidance 12 and the same maps for both halves of guidance.

This module holds what ``tune`` and ``generate`` do differently in this mode: the defaults
(:data:`CONTROLVIDEO_DEFAULTS`, :func:`controlvideo_config`), reading and checking the maps
(:func:`read_controls`) and the ControlNets (:func:`prepare_control`), the conditioned model
(:func:`controlled_model`), and saving / restoring the tuned ControlNets with the run's
weights (:func:`save_control`, :func:`load_control`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..control import maps_to_tensor
from ..mini import resolve_controlnet
from ..models.controlnet import ControlledVideoUNet, ControlWindow, inflate_controlnet
from .controlvideo_config import (
    CONTROLVIDEO_DEFAULTS,
    CONTROLVIDEO_SMOOTH_WEIGHT,
    controlvideo_config,
    read_controls,
    scales_of,
)

__all__ = [
    "CONTROLVIDEO_DEFAULTS",
    "CONTROLVIDEO_SMOOTH_WEIGHT",
    "ControlSetup",
    "controlled_model",
    "controlvideo_config",
    "load_control",
    "prepare_control",
    "read_controls",
    "save_control",
]

RECORD = "controlvideo.json"
FORMAT = "inr_smooth.controlvideo"


@dataclass
class ControlSetup:
    """ControlNets (2-D, loaded) and their control maps for one tuning run."""

    sources: list[str]  # as given (hub id, folder, mini-canny, ...)
    controls: list[str]
    scales: list[float]
    maps: list[np.ndarray]  # uint8 (f, H, W, 3), one control video per ControlNet
    controlnets: list  # diffusers ControlNetModel


def load_controlnet(source: str, *, dtype: torch.dtype = torch.float32):
    """A diffusers ``ControlNetModel`` from a hub id, a folder, or ``mini-canny`` /
    ``mini-depth``; errors are one line."""
    from diffusers import ControlNetModel

    path = resolve_controlnet(source)
    local = Path(path).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise ValueError(f"expected a diffusers ControlNet folder with config.json, got {local}")
    try:
        return ControlNetModel.from_pretrained(
            str(local) if local.exists() else path, torch_dtype=dtype
        ).eval().requires_grad_(False)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(
            f"could not load the ControlNet {source!r}: {first} (a hub id needs network access "
            "or a filled cache; or pass a local diffusers ControlNet folder, or mini-canny / "
            "mini-depth with --model mini)"
        ) from None


def _check_fits(controlnet, source: str, unet, vae_scale_factor: int) -> None:
    ours, theirs = unet.config, controlnet.config
    for key in ("in_channels", "block_out_channels", "cross_attention_dim"):
        if tuple(np.atleast_1d(ours[key])) != tuple(np.atleast_1d(theirs[key])):
            raise ValueError(
                f"the ControlNet {source!r} does not fit this model: its {key} is "
                f"{theirs[key]}, the UNet's is {ours[key]}"
            )
    stride = 2 ** (len(theirs.conditioning_embedding_out_channels) - 1)
    if stride != vae_scale_factor or theirs.conditioning_channels != 3:
        raise ValueError(
            f"the ControlNet {source!r} reads {theirs.conditioning_channels}-channel maps at "
            f"{stride}x the latent size; this model needs 3-channel maps at {vae_scale_factor}x"
        )


def prepare_control(config, maps: list[np.ndarray] | None, parts, device) -> ControlSetup | None:
    """Load the ControlNets and check that they fit the model; None without ControlNets."""
    if not maps:
        return None
    scales = scales_of(config.control_scales, len(config.controlnets))
    nets = []
    for source in config.controlnets:
        net = load_controlnet(source, dtype=parts.unet.dtype)
        _check_fits(net, source, parts.unet, parts.vae_scale_factor)
        nets.append(net.to(device))
    return ControlSetup(list(config.controlnets), list(config.controls), scales, maps, nets)


def window_of(start: float, end: float, scheduler, inference_steps: int) -> ControlWindow:
    from ..inversion import DDIMSchedule

    timesteps = DDIMSchedule.from_scheduler(scheduler, inference_steps).timesteps
    return ControlWindow(start, end, timesteps)


def controlled_model(video_unet, setup: ControlSetup, config, parts) -> ControlledVideoUNet:
    """The video UNet conditioned by the setup's ControlNets (key-frame attention in each, as
    ControlVideo), with their maps set."""
    nets = [
        inflate_controlnet(net, attention=config.attention, group_norm=config.group_norm)
        for net in setup.controlnets
    ]
    window = window_of(config.control_guidance_start, config.control_guidance_end,
                       parts.scheduler, config.inference_steps)  # fmt: skip
    model = ControlledVideoUNet(video_unet, nets, setup.scales, window)
    device = video_unet.device
    model.set_conditions([maps_to_tensor(m).to(device) for m in setup.maps])
    return model


def save_control(folder: Path, model: ControlledVideoUNet, setup: ControlSetup, config) -> None:
    """Write each ControlNet's tuned tensors, its maps and ``controlvideo.json`` into the
    run's weights folder."""
    entries = []
    for i, (net, source, control, scale) in enumerate(
        zip(model.controlnets, setup.sources, setup.controls, setup.scales, strict=True)
    ):
        tuned = {
            name: p.detach().float().cpu().contiguous()
            for name, p in net.controlnet.named_parameters()
            if p.requires_grad
        }
        save_file(tuned, folder / f"controlnet-{i}.safetensors")
        save_file({"maps": torch.from_numpy(np.ascontiguousarray(setup.maps[i]))},
                  folder / f"control-{i}.safetensors")  # fmt: skip
        entries.append({
            "controlnet": source, "control": control, "scale": scale,
            "video_controlnet": net.config.to_dict(), "num_tensors": len(tuned),
            "weights": f"controlnet-{i}.safetensors", "maps": f"control-{i}.safetensors",
        })  # fmt: skip
    record = {
        "format": FORMAT, "format_version": 1, "controlnets": entries,
        "control_guidance_start": config.control_guidance_start,
        "control_guidance_end": config.control_guidance_end,
        "inversion_prompt": config.prompt,
    }  # fmt: skip
    (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n")


def load_control(
    weights: Path, video_unet, parts, *, inference_steps: int, device, dtype=torch.float32
):
    """The tuned ControlNets of a run's weights folder around ``video_unet`` (for
    ``generate``); ``video_unet`` itself when the run had none."""
    path = Path(weights) / RECORD
    if not path.is_file():
        return video_unet
    try:
        record = json.loads(path.read_text())
        entries = record["controlnets"]
    except (ValueError, KeyError) as exc:
        raise ValueError(f"cannot read {path}: {exc} (written by `inr-smooth tune`)") from None
    nets, maps = [], []
    for entry in entries:
        net = load_controlnet(entry["controlnet"], dtype=dtype)
        video_net = inflate_controlnet(net, **entry["video_controlnet"])
        tensors = load_file(Path(weights) / entry["weights"])
        params = dict(net.named_parameters())
        unknown = sorted(set(tensors) - set(params))
        if unknown:
            raise ValueError(f"{weights / entry['weights']} holds unknown tensors {unknown[:3]}")
        with torch.no_grad():
            for name, value in tensors.items():
                params[name].copy_(value)
        nets.append(video_net.to(device))
        maps.append(load_file(Path(weights) / entry["maps"])["maps"].numpy())
    window = window_of(record["control_guidance_start"], record["control_guidance_end"],
                       parts.scheduler, inference_steps)  # fmt: skip
    model = ControlledVideoUNet(video_unet, nets, [e["scale"] for e in entries], window)
    model.set_conditions([maps_to_tensor(m).to(device) for m in maps])
    return model
