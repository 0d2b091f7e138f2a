"""ControlNet conditioning of the video UNet: diffusers' ``ControlNetModel`` run on every frame.

* :class:`VideoControlNet` (:func:`inflate_controlnet`) runs a ``ControlNetModel`` on the
  ``(b f)`` frames of a video with one control image per frame, its spatial self-attention made
  cross-frame (ControlVideo: key-frame attention, frame 0's keys and values) and, optionally,
  its ResNet GroupNorm pooled over the frames; it returns the residuals ``(b, c, f, h, w)``.
* :class:`ControlledVideoUNet` sums the residuals of one or more ControlNets, each times its
  conditioning scale (ControlVideo's ``get_multicontrol_pre_single``; diffusers'
  ``MultiControlNetModel``), and feeds them to the :class:`~.video_unet.VideoUNet` where
  ``UNet2DConditionModel`` adds ControlNet residuals. It has the video UNet's call signature,
  so training steps and noise predictors take it as they take a video UNet; the control images
  are set on it (:meth:`ControlledVideoUNet.set_conditions`).
* :class:`ControlWindow`: the fraction of the sampling steps during which the ControlNets act
  (diffusers' ``control_guidance_start`` / ``control_guidance_end``), by timestep.

ControlNet parameter names are diffusers' under ``controlnet.`` (the blocks are not wrapped),
e.g. ``controlnets.0.controlnet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.
weight`` inside a :class:`ControlledVideoUNet`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from diffusers import ControlNetModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.resnet import ResnetBlock2D
from einops import rearrange, repeat
from torch import Tensor, nn

from .attention import AttentionMode, CrossFrameAttnProcessor, check_attention_mode
from .frames import FrameCheckpoint, FrameContext, swap_group_norm
from .video_unet import (
    CONTROLVIDEO_TRAINABLE,
    GROUP_NORM_MODES,
    GroupNormMode,
    VideoUNet,
    VideoUNetOutput,
    apply_trainable,
)

__all__ = [
    "ControlResiduals",
    "ControlWindow",
    "ControlledVideoUNet",
    "VideoControlNet",
    "VideoControlNetConfig",
    "inflate_controlnet",
    "set_controlled_trainable",
]


@dataclass(frozen=True)
class VideoControlNetConfig:
    """How a ControlNet runs on videos (ControlVideo's defaults)."""

    attention: AttentionMode = "keyframe"  # its spatial self-attention across frames
    keyframe: int = 0
    group_norm: GroupNormMode = "video"  # ControlVideo's ResnetBlock3D pools over frames

    def __post_init__(self) -> None:
        check_attention_mode(self.attention, self.keyframe)
        if self.group_norm not in GROUP_NORM_MODES:
            raise ValueError(
                f"group_norm must be one of {GROUP_NORM_MODES}, got {self.group_norm!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


class ControlResiduals(NamedTuple):
    down: tuple[Tensor, ...]  # (b, c, f, h, w) each, one per down-block output
    mid: Tensor  # (b, c, f, h, w)


class VideoControlNet(nn.Module):
    """A diffusers ``ControlNetModel`` run on videos. Build it with :func:`inflate_controlnet`."""

    def __init__(self, controlnet: ControlNetModel, config: VideoControlNetConfig) -> None:
        super().__init__()
        self.controlnet = controlnet
        self.frames = FrameContext()
        self.config = config
        processor = CrossFrameAttnProcessor(self.frames, config.attention, config.keyframe)
        for module in controlnet.modules():
            if isinstance(module, BasicTransformerBlock):
                module.attn1.set_processor(processor)
        context = self.frames if config.group_norm == "video" else None
        for module in controlnet.modules():
            if isinstance(module, ResnetBlock2D):
                for name in ("norm1", "norm2"):
                    norm = getattr(module, name)
                    if isinstance(norm, nn.GroupNorm):
                        setattr(module, name, swap_group_norm(norm, context))

    @property
    def downscale(self) -> int:
        """Control image pixels per latent pixel (the conditioning embedding's stride)."""
        return 2 ** (len(self.controlnet.config.conditioning_embedding_out_channels) - 1)

    @property
    def conditioning_channels(self) -> int:
        return int(self.controlnet.config.conditioning_channels)

    def enable_gradient_checkpointing(self) -> None:
        self.controlnet.enable_gradient_checkpointing(FrameCheckpoint(self.frames))

    def disable_gradient_checkpointing(self) -> None:
        self.controlnet.disable_gradient_checkpointing()

    def check_condition(self, cond: Tensor, b: int, f: int, h: int, w: int) -> None:
        """Raise ValueError unless ``cond`` is ``(1 or b, C, f, h * s, w * s)``."""
        c, s = self.conditioning_channels, self.downscale
        if cond.ndim != 5 or cond.shape[0] not in (1, b) or tuple(cond.shape[1:]) != (
            c, f, h * s, w * s
        ):  # fmt: skip
            raise ValueError(
                f"expected control images of shape (1 or {b}, {c}, {f}, {h * s}, {w * s}) for "
                f"latents of {f} frames at {h}x{w} (this ControlNet reads {s}x the latent size), "
                f"got {tuple(cond.shape)}"
            )

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        encoder_hidden_states: Tensor,
        controlnet_cond: Tensor,
        conditioning_scale: float = 1.0,
    ) -> ControlResiduals:
        """Residuals of every frame.

        Args:
            sample: latents ``(b, c, f, h, w)``.
            timestep: a number, 0-d tensor, or ``(b,)`` (shared by the frames of a video).
            encoder_hidden_states: ``(b, n, d)``.
            controlnet_cond: control images ``(1 or b, C, f, H, W)`` in [0, 1], one per frame;
                one batch entry serves every video (e.g. both halves of guidance).
            conditioning_scale: multiplies every residual (diffusers' ``conditioning_scale``).
        """
        b, _, f, h, w = sample.shape
        self.check_condition(controlnet_cond, b, f, h, w)
        t = torch.as_tensor(timestep, device=sample.device)
        t = t.reshape(1).expand(b) if t.numel() == 1 else t.reshape(b)
        cond = controlnet_cond.to(sample.device, sample.dtype).expand(b, -1, -1, -1, -1)
        with self.frames.frames(f):
            down, mid = self.controlnet(
                rearrange(sample, "b c f h w -> (b f) c h w"),
                repeat(t, "b -> (b f)", f=f),
                repeat(encoder_hidden_states, "b n d -> (b f) n d", f=f),
                rearrange(cond, "b c f h w -> (b f) c h w"),
                conditioning_scale=conditioning_scale,
                return_dict=False,
            )
        unfold = "(b f) c h w -> b c f h w"
        return ControlResiduals(tuple(rearrange(x, unfold, b=b) for x in down),
                                rearrange(mid, unfold, b=b))  # fmt: skip


def inflate_controlnet(
    controlnet: ControlNetModel,
    *,
    attention: AttentionMode = "keyframe",
    keyframe: int = 0,
    group_norm: GroupNormMode = "video",
) -> VideoControlNet:
    """Turn a ``ControlNetModel`` into a :class:`VideoControlNet` (in place, as
    :func:`~.video_unet.inflate_unet` does with a UNet). Defaults: ControlVideo's."""
    if not isinstance(controlnet, ControlNetModel):
        raise ValueError(f"expected a diffusers ControlNetModel, got {type(controlnet).__name__}")
    return VideoControlNet(controlnet, VideoControlNetConfig(attention, keyframe, group_norm))


@dataclass(frozen=True, eq=False)
class ControlWindow:
    """ControlNets act on sampling steps ``i`` (0 = the noisiest of ``K``) unless
    ``i / K < start`` or ``(i + 1) / K > end`` (diffusers' rule). A timestep ``t`` is step
    ``i`` = the number of schedule timesteps above it, so the same window applies in
    inversion, sampling and tuning."""

    start: float  # fraction of the sampling steps
    end: float
    timesteps: Tensor  # the schedule's (K,) timesteps, ascending

    def __post_init__(self) -> None:
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ValueError(
                f"expected 0 <= control guidance start < end <= 1, got start={self.start}, "
                f"end={self.end}"
            )

    @property
    def always(self) -> bool:
        return self.start <= 0.0 and self.end >= 1.0

    def keep(self, timesteps: Tensor) -> Tensor:
        """``(b,)`` booleans: whether the ControlNets act at each timestep."""
        k = len(self.timesteps)
        ts = self.timesteps.to(timesteps.device)
        i = (ts[None, :] > timesteps.reshape(-1, 1)).sum(dim=1).clamp(max=k - 1)
        return ~((i / k < self.start) | ((i + 1) / k > self.end))


class ControlledVideoUNet(nn.Module):
    """A :class:`VideoUNet` conditioned by ControlNets (module docstring).

    ``forward(sample (b, c, f, h, w), timestep, encoder_hidden_states (b, n, d))`` as the video
    UNet's; the control images of each ControlNet come from :meth:`set_conditions`.
    """

    def __init__(
        self,
        unet: VideoUNet,
        controlnets: Sequence[VideoControlNet],
        scales: Sequence[float] | None = None,
        window: ControlWindow | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(unet, VideoUNet):
            raise ValueError(f"expected a VideoUNet, got {type(unet).__name__}")
        if not controlnets or not all(isinstance(c, VideoControlNet) for c in controlnets):
            raise ValueError("expected one or more VideoControlNets (see inflate_controlnet)")
        scales = [1.0] * len(controlnets) if scales is None else [float(s) for s in scales]
        if len(scales) != len(controlnets):
            raise ValueError(
                f"expected {len(controlnets)} scales, one per ControlNet, got {scales}"
            )
        self.unet = unet
        self.controlnets = nn.ModuleList(controlnets)
        self.scales = scales
        self.window = window
        self.conditions: list[Tensor] | None = None

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def config(self):
        return self.unet.config

    def set_conditions(self, conditions: Sequence[Tensor]) -> None:
        """One control video per ControlNet: ``(1 or b, C, f, H, W)`` in [0, 1]."""
        if len(conditions) != len(self.controlnets):
            raise ValueError(
                f"expected {len(self.controlnets)} control videos, one per ControlNet, "
                f"got {len(conditions)}"
            )
        self.conditions = list(conditions)

    def enable_gradient_checkpointing(self) -> None:
        self.unet.enable_gradient_checkpointing()
        for net in self.controlnets:
            net.enable_gradient_checkpointing()

    def disable_gradient_checkpointing(self) -> None:
        self.unet.disable_gradient_checkpointing()
        for net in self.controlnets:
            net.disable_gradient_checkpointing()

    def residuals(
        self, sample: Tensor, timestep: Tensor | float | int, encoder_hidden_states: Tensor
    ) -> ControlResiduals | None:
        """The summed, scaled residuals; None where the window switches the ControlNets off."""
        if self.conditions is None:
            raise RuntimeError("no control images: call set_conditions(...) first")
        keep = None
        if self.window is not None and not self.window.always:
            t = torch.as_tensor(timestep, device=sample.device).reshape(-1)
            keep = self.window.keep(t.expand(sample.shape[0]) if t.numel() == 1 else t)
            if not keep.any():
                return None
        total = None
        for net, cond, scale in zip(self.controlnets, self.conditions, self.scales, strict=True):
            res = net(sample, timestep, encoder_hidden_states, cond, conditioning_scale=scale)
            if total is None:
                total = res
            else:
                total = ControlResiduals(
                    tuple(a + b for a, b in zip(total.down, res.down, strict=True)),
                    total.mid + res.mid,
                )
        if keep is not None and not keep.all():
            mask = keep.to(sample.dtype).reshape(-1, 1, 1, 1, 1)
            total = ControlResiduals(tuple(x * mask for x in total.down), total.mid * mask)
        return total

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        encoder_hidden_states: Tensor,
        *,
        return_dict: bool = True,
    ) -> VideoUNetOutput | tuple[Tensor]:
        res = self.residuals(sample, timestep, encoder_hidden_states)
        extra = {}
        if res is not None:
            extra = {
                "down_block_additional_residuals": res.down,
                "mid_block_additional_residual": res.mid,
            }
        return self.unet(sample, timestep, encoder_hidden_states, return_dict=return_dict, **extra)


def set_controlled_trainable(
    model: ControlledVideoUNet, patterns: Iterable[str] = CONTROLVIDEO_TRAINABLE
) -> list[str]:
    """Freeze every parameter of the UNet and its ControlNets except those matching one of
    ``patterns`` (as :func:`~.video_unet.set_trainable`: whole dotted components; a pattern
    may match in the UNet, the ControlNets or both, but must match somewhere)."""
    if not isinstance(model, ControlledVideoUNet):
        raise ValueError(f"expected a ControlledVideoUNet, got {type(model).__name__}")
    return apply_trainable(model, patterns, "of the UNet or its ControlNets")
