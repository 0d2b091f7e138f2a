"""Inflate a pretrained Stable Diffusion ``UNet2DConditionModel`` into a video UNet.

Tune-A-Video's inflation, by composition on current diffusers instead of a forked UNet:

* every frame goes through the 2-D UNet, ``rearrange(sample, "b c f h w -> (b f) c h w")``,
  with the prompt embeddings and the timestep repeated per frame;
* spatial self-attention (``attn1`` of each transformer block) becomes cross-frame attention
  through an attention processor (:mod:`.attention`, one of :data:`ATTENTION_MODES`);
* each transformer block is followed by temporal attention over the frames
  (:class:`~.attention.TemporalAttention`), zero-initialised so that the inflated model starts
  out computing exactly what the image model computes;
* ``architecture="controlvideo"`` (ControlVideo, Zhao et al. 2023) instead runs a temporal
  branch in parallel with spatial self-attention (:class:`~.attention.ParallelTemporalAttention`,
  fed with ``norm1``'s output, through a zero-initialised 1x1 convolution, its attention a copy
  of ``attn1``), only in down blocks 0-2 and up blocks 1-3, never in the mid block;
* GroupNorm in the ResNet blocks and before ``conv_out`` normalises each frame on its own
  (``group_norm="per_frame"``, the image model's behaviour) or pools its statistics over all
  frames (``"video"``, what Tune-A-Video's 5-D GroupNorm does; the transformers' input norm
  is per frame in both).

Parameter names are those of the 2-D UNet under ``unet.``, with ``.spatial`` inserted after
``transformer_blocks.<i>`` and the temporal attention at ``transformer_blocks.<i>.temporal``
(``.norm``, ``.attn``; ControlVideo's branch: ``.attn``, ``.conv``), e.g.
``unet.mid_block.attentions.0.transformer_blocks.0.temporal.attn.to_q.weight``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from diffusers.utils import BaseOutput
from einops import rearrange, repeat
from torch import Tensor, nn

from .attention import (
    ATTENTION_MODES,
    AttentionMode,
    CrossFrameAttnProcessor,
    ParallelTemporalAttention,
    TemporalAttention,
    VideoTransformerBlock,
    check_attention_mode,
)
from .frames import FrameCheckpoint, FrameContext, swap_group_norm

GroupNormMode = Literal["per_frame", "video"]
GROUP_NORM_MODES = ("per_frame", "video")
Architecture = Literal["tune_a_video", "controlvideo"]
ARCHITECTURES = ("tune_a_video", "controlvideo")
# ControlVideo's temporal branch: down blocks 0-2 and up blocks 1-3 (libs/unet.py), no mid block
CONTROLVIDEO_TEMPORAL_BLOCKS = {"down_blocks": (0, 1, 2), "up_blocks": (1, 2, 3)}
_INIT_SEED = 0  # seed of the generator new temporal attention weights are drawn from

# Tune-A-Video's `trainable_modules`: the query projections and the temporal attention (its
# LayerNorm `norm_temp` is not trained there).
TUNE_A_VIDEO_TRAINABLE = ("attn1.to_q", "attn2.to_q", "temporal.attn")
# Our default: the same plus the temporal attention's LayerNorm.
DEFAULT_TRAINABLE = (*TUNE_A_VIDEO_TRAINABLE, "temporal.norm")
# Tune-A-Video module names accepted in `set_trainable` patterns.
_TAV_PATTERN_ALIASES = {
    "attn_temp": "temporal.attn",
    "norm_temp": "temporal.norm",
    "conv_temp": "temporal.conv",  # ControlVideo
}
# ControlVideo's trainable modules in the UNet (its configs' `trainable_modules`, whose
# `norm_temp` matches nothing in its model); its ControlNets train `attn1.to_out` too
CONTROLVIDEO_TRAINABLE = ("attn1.to_out", "temporal.attn", "temporal.conv")

__all__ = [
    "ARCHITECTURES",
    "ATTENTION_MODES",
    "CONTROLVIDEO_TRAINABLE",
    "DEFAULT_TRAINABLE",
    "GROUP_NORM_MODES",
    "TUNE_A_VIDEO_TRAINABLE",
    "VideoUNet",
    "VideoUNetConfig",
    "VideoUNetOutput",
    "inflate_unet",
    "set_trainable",
    "unet2d_key",
    "video_unet_key",
]


@dataclass(frozen=True)
class VideoUNetConfig:
    """How a 2-D UNet was inflated (saved with the weights as JSON)."""

    attention: AttentionMode = "sparse_causal"  # cross-frame mode of spatial self-attention
    keyframe: int = 0  # the frame that "keyframe" attention reads
    temporal_attention: bool = True  # temporal attention after each transformer block
    group_norm: GroupNormMode = "per_frame"  # ResNet / output GroupNorm statistics
    # blocks narrower than this attend within their own frame (FateZero's least_sc_channel)
    cross_frame_min_channels: int = 0
    # where temporal attention goes: after every block, or ControlVideo's parallel branch
    architecture: Architecture = "tune_a_video"

    def __post_init__(self) -> None:
        check_attention_mode(self.attention, self.keyframe)
        minimum = self.cross_frame_min_channels
        if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
            raise ValueError(
                f"cross_frame_min_channels must be an integer >= 0, got "
                f"{self.cross_frame_min_channels!r}"
            )
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}"
            )
        if self.group_norm not in GROUP_NORM_MODES:
            raise ValueError(
                f"group_norm must be one of {GROUP_NORM_MODES}, got {self.group_norm!r}"
            )
        if not isinstance(self.temporal_attention, bool):
            raise ValueError(f"temporal_attention must be a bool, got {self.temporal_attention!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VideoUNetOutput(BaseOutput):
    sample: Tensor  # (b, c, f, h, w)


class VideoUNet(nn.Module):
    """A 2-D ``UNet2DConditionModel`` run on videos. Build it with :func:`inflate_unet`.

    ``forward(sample (b, c, f, h, w), timestep, encoder_hidden_states (b, n, d))`` returns
    :class:`VideoUNetOutput` with ``.sample`` of shape ``(b, c, f, h, w)``.
    """

    def __init__(self, unet: UNet2DConditionModel, config: VideoUNetConfig) -> None:
        super().__init__()
        self.unet = unet
        self.frames = FrameContext()
        self.config = config
        self._self_attentions: list[Attention] = []
        self._branches: list[ParallelTemporalAttention | None] = []
        generator = torch.Generator().manual_seed(_INIT_SEED)
        for name, module in list(unet.named_modules()):
            if isinstance(module, Transformer2DModel):
                temporal = config.temporal_attention and _has_temporal(name, config.architecture)
                wrapped = _wrap_blocks(module, config, temporal, self.frames, generator)
                self._self_attentions += [block.spatial.attn1 for block in wrapped]
                self._branches += [
                    b.temporal if isinstance(b.temporal, ParallelTemporalAttention) else None
                    for b in wrapped
                ]
        self.set_cross_frame_attention(
            config.attention, config.keyframe, config.cross_frame_min_channels
        )
        self.set_group_norm(config.group_norm)

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def set_cross_frame_attention(
        self, mode: AttentionMode, keyframe: int = 0, min_channels: int | None = None
    ) -> None:
        """Install the cross-frame processor ``mode`` on every spatial self-attention (with
        its layer's ControlVideo temporal branch, if any); blocks with fewer than
        ``min_channels`` channels attend per frame (None: keep the setting)."""
        if min_channels is None:
            min_channels = self.config.cross_frame_min_channels
        processor = CrossFrameAttnProcessor(self.frames, mode, keyframe, min_channels)
        for attn, branch in zip(self._self_attentions, self._branches, strict=True):
            if branch is None:
                attn.set_processor(processor)
            else:
                attn.set_processor(CrossFrameAttnProcessor(
                    self.frames, mode, keyframe, min_channels, branch=branch
                ))  # fmt: skip
        self.config = replace(
            self.config, attention=mode, keyframe=keyframe, cross_frame_min_channels=min_channels
        )

    def set_group_norm(self, mode: GroupNormMode) -> None:
        """``"per_frame"`` (2-D behaviour) or ``"video"`` (statistics over all frames)."""
        if mode not in GROUP_NORM_MODES:
            raise ValueError(f"group_norm must be one of {GROUP_NORM_MODES}, got {mode!r}")
        context = self.frames if mode == "video" else None
        for module in self.unet.modules():
            if isinstance(module, ResnetBlock2D):
                for name in ("norm1", "norm2"):
                    norm = getattr(module, name)
                    if isinstance(norm, nn.GroupNorm):
                        setattr(module, name, swap_group_norm(norm, context))
        if isinstance(self.unet.conv_norm_out, nn.GroupNorm):
            self.unet.conv_norm_out = swap_group_norm(self.unet.conv_norm_out, context)
        self.config = replace(self.config, group_norm=mode)

    def enable_gradient_checkpointing(self) -> None:
        """Checkpoint the 2-D UNet's blocks, the temporal attention with its transformer block."""
        self.unet.enable_gradient_checkpointing(FrameCheckpoint(self.frames))

    def disable_gradient_checkpointing(self) -> None:
        self.unet.disable_gradient_checkpointing()

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        encoder_hidden_states: Tensor,
        *,
        down_block_additional_residuals: Sequence[Tensor] | None = None,
        mid_block_additional_residual: Tensor | None = None,
        return_dict: bool = True,
    ) -> VideoUNetOutput | tuple[Tensor]:
        """Predict the noise of every frame.

        Args:
            sample: latents ``(b, c, f, h, w)``.
            timestep: one diffusion timestep for all (a number or 0-d tensor) or one per video
                ``(b,)``; shared by the frames of a video.
            encoder_hidden_states: prompt embeddings ``(b, n, d)``, one per video.
            down_block_additional_residuals, mid_block_additional_residual: ControlNet
                residuals, ``(b, c, f, h, w)`` each (see :mod:`.controlnet`), added where
                ``UNet2DConditionModel`` adds them.
        """
        b, f = self._check_inputs(sample, encoder_hidden_states)
        self._check_processors()
        timesteps = repeat(self._timesteps(timestep, b, sample.device), "b -> (b f)", f=f)
        frames = rearrange(sample, "b c f h w -> (b f) c h w")
        prompt = repeat(encoder_hidden_states, "b n d -> (b f) n d", f=f)
        residuals = {}
        if down_block_additional_residuals is not None or mid_block_additional_residual is not None:
            residuals = _fold_residuals(
                down_block_additional_residuals, mid_block_additional_residual, b, f
            )
        with self.frames.frames(f):
            out = self.unet(frames, timesteps, prompt, return_dict=False, **residuals)[0]
        out = rearrange(out, "(b f) c h w -> b c f h w", b=b)
        return VideoUNetOutput(sample=out) if return_dict else (out,)

    def _check_inputs(self, sample: Tensor, encoder_hidden_states: Tensor) -> tuple[int, int]:
        in_channels = self.unet.config.in_channels
        if sample.ndim != 5 or sample.shape[1] != in_channels:
            raise ValueError(
                f"expected sample of shape (b, {in_channels}, f, h, w), got {tuple(sample.shape)}"
            )
        b, f = sample.shape[0], sample.shape[2]
        dim = self.unet.config.cross_attention_dim
        if encoder_hidden_states.ndim != 3 or tuple(encoder_hidden_states.shape[::2]) != (b, dim):
            raise ValueError(
                f"expected encoder_hidden_states of shape (b, n, d) = ({b}, n, {dim}), one per "
                f"video of sample (b = {b}, f = {f}; they are repeated per frame inside), got "
                f"{tuple(encoder_hidden_states.shape)}"
            )
        if self.config.attention == "keyframe" and self.config.keyframe >= f:
            raise ValueError(
                f"keyframe {self.config.keyframe} is out of range for a video of {f} frames"
            )
        return b, f

    def _check_processors(self) -> None:
        for attn in self._self_attentions:
            if not isinstance(attn.processor, CrossFrameAttnProcessor):
                raise RuntimeError(
                    "the spatial self-attention processors were replaced (set_attn_processor, "
                    "enable_xformers_memory_efficient_attention, ...); call "
                    "video_unet.set_cross_frame_attention(mode) to restore cross-frame attention"
                )

    @staticmethod
    def _timesteps(timestep: Tensor | float | int, b: int, device: torch.device) -> Tensor:
        t = torch.as_tensor(timestep, device=device)
        if t.ndim == 0 or (t.ndim == 1 and t.shape[0] == 1):
            return t.reshape(1).expand(b)
        if t.ndim == 1 and t.shape[0] == b:
            return t
        raise ValueError(
            f"expected timestep as a number, a 0-d tensor or a tensor of shape ({b},), "
            f"got shape {tuple(t.shape)}"
        )


def _fold_residuals(down, mid, b: int, f: int) -> dict:
    """ControlNet residuals ``(b, c, f, h, w)`` as the 2-D UNet's keyword arguments."""
    if down is None or mid is None:
        raise ValueError(
            "expected both down_block_additional_residuals and mid_block_additional_residual "
            "(ControlNet residuals), got only one"
        )
    for x in (*down, mid):
        if x.ndim != 5 or x.shape[0] != b or x.shape[2] != f:
            raise ValueError(
                f"expected ControlNet residuals of shape (b, c, f, h, w) with b = {b}, f = {f}, "
                f"got {tuple(x.shape)}"
            )
    fold = "b c f h w -> (b f) c h w"
    return {
        "down_block_additional_residuals": tuple(rearrange(x, fold) for x in down),
        "mid_block_additional_residual": rearrange(mid, fold),
    }


def _has_temporal(name: str, architecture: str) -> bool:
    """Whether the transformer at ``name`` (e.g. ``down_blocks.1.attentions.0``) gets temporal
    attention: all of them for Tune-A-Video, ControlVideo's blocks for ControlVideo."""
    if architecture == "tune_a_video":
        return True
    parts = name.split(".")
    return parts[0] in CONTROLVIDEO_TEMPORAL_BLOCKS and (
        int(parts[1]) in CONTROLVIDEO_TEMPORAL_BLOCKS[parts[0]]
    )


def _wrap_blocks(
    transformer: Transformer2DModel,
    config: VideoUNetConfig,
    temporal_attention: bool,
    frames: FrameContext,
    generator: torch.Generator,
) -> list[VideoTransformerBlock]:
    """Replace each BasicTransformerBlock by a VideoTransformerBlock; return them."""
    wrapped = []
    for i, block in enumerate(transformer.transformer_blocks):
        if not isinstance(block, BasicTransformerBlock):
            raise ValueError(
                "expected BasicTransformerBlock transformer blocks (Stable Diffusion 1.x/2.x), "
                f"got {type(block).__name__}"
            )
        temporal = None
        if temporal_attention and config.architecture == "controlvideo":
            temporal = ParallelTemporalAttention(block.attn1, context=frames)
        elif temporal_attention:
            attn1 = block.attn1
            param = next(block.parameters())
            temporal = TemporalAttention(
                attn1.query_dim,
                attn1.heads,
                attn1.inner_dim // attn1.heads,
                context=frames,
                bias=attn1.use_bias,
                upcast_attention=attn1.upcast_attention,
                generator=generator,
                meta=param.device.type == "meta",
            ).to(device=param.device, dtype=param.dtype)
        transformer.transformer_blocks[i] = VideoTransformerBlock(block, temporal)
        wrapped.append(transformer.transformer_blocks[i])
    return wrapped


def inflate_unet(
    unet2d: UNet2DConditionModel,
    *,
    attention: AttentionMode = "sparse_causal",
    temporal_attention: bool = True,
    keyframe: int = 0,
    group_norm: GroupNormMode = "per_frame",
    cross_frame_min_channels: int = 0,
    architecture: Architecture = "tune_a_video",
) -> VideoUNet:
    """Turn a pretrained ``UNet2DConditionModel`` into a :class:`VideoUNet`.

    ``unet2d`` is modified in place (its transformer blocks are wrapped, its self-attention
    processors replaced) and owned by the returned model; keep a ``copy.deepcopy`` if you still
    need the image model. New temporal attention weights are drawn from a fixed-seed generator,
    so inflating the same UNet twice gives the same model.

    Args:
        attention: cross-frame mode of spatial self-attention, one of :data:`ATTENTION_MODES`.
        temporal_attention: add temporal attention after every transformer block.
        keyframe: the frame ``"keyframe"`` attention reads.
        group_norm: ``"per_frame"`` (default; the image model's behaviour) or ``"video"``
            (Tune-A-Video's statistics over all frames).
        cross_frame_min_channels: transformer blocks with fewer channels keep per-frame
            attention (FateZero's ``least_sc_channel``, e.g. 640 with ``"middle"``); 0: none.
        architecture: ``"tune_a_video"`` (temporal attention after every transformer block) or
            ``"controlvideo"`` (ControlVideo's parallel temporal branch in down blocks 0-2 and
            up blocks 1-3; use it with ``attention="keyframe"`` as ControlVideo does).
    """
    if not isinstance(unet2d, UNet2DConditionModel):
        raise ValueError(f"expected a diffusers UNet2DConditionModel, got {type(unet2d).__name__}")
    if any(isinstance(m, VideoTransformerBlock) for m in unet2d.modules()):
        raise ValueError("expected a 2-D UNet, got one that is already inflated")
    config = VideoUNetConfig(
        attention, keyframe, temporal_attention, group_norm,
        cross_frame_min_channels=cross_frame_min_channels, architecture=architecture,
    )  # fmt: skip
    return VideoUNet(unet2d, config)


_BLOCK_PART = re.compile(r"(\.transformer_blocks\.\d+)\.(spatial|temporal)\.")


def unet2d_key(name: str) -> str | None:
    """The 2-D UNet's name of a VideoUNet tensor; None for tensors the 2-D UNet lacks."""
    if not name.startswith("unet."):
        return None
    match = _BLOCK_PART.search(name)
    if match and match.group(2) == "temporal":
        return None
    return _BLOCK_PART.sub(r"\1.", name)[len("unet.") :]


def video_unet_key(key: str) -> str:
    """The VideoUNet's name of a 2-D UNet tensor (inverse of :func:`unet2d_key`)."""
    return "unet." + re.sub(r"(\.transformer_blocks\.\d+)\.", r"\1.spatial.", key)


def _matches(name: str, pattern: str) -> bool:
    """Whether ``pattern`` is a run of whole dotted components of ``name``."""
    return f".{pattern}." in f".{name}."


def set_trainable(video_unet: VideoUNet, patterns: Iterable[str] = DEFAULT_TRAINABLE) -> list[str]:
    """Freeze every parameter except those matching one of ``patterns``; return their names.

    A pattern matches a parameter when it is a run of whole dotted components of its name:
    ``"attn1.to_q"`` matches ``...transformer_blocks.0.spatial.attn1.to_q.weight``, not
    ``...attn1.to_qkv``. Tune-A-Video's module names ``attn_temp`` / ``norm_temp`` are accepted
    for ``temporal.attn`` / ``temporal.norm``. A pattern that matches nothing is an error.
    """
    if not isinstance(video_unet, VideoUNet):
        raise ValueError(
            f"expected a VideoUNet (see inflate_unet), got {type(video_unet).__name__}"
        )
    return apply_trainable(video_unet, patterns)


def apply_trainable(module: nn.Module, patterns: Iterable[str], where: str = "") -> list[str]:
    """Train exactly the parameters of ``module`` that match a pattern (see
    :func:`set_trainable`); a pattern that matches nothing is an error. ``where`` names the
    module in that error."""
    if isinstance(patterns, str):
        raise ValueError(f"expected a sequence of patterns, got the string {patterns!r}")
    patterns = [_TAV_PATTERN_ALIASES.get(p, p) for p in patterns]
    named = list(module.named_parameters())
    unmatched = [p for p in patterns if not any(_matches(name, p) for name, _ in named)]
    if unmatched:
        where = where or f"(names look like {named[0][0]!r})"
        raise ValueError(f"trainable patterns {unmatched} match no parameter {where}")
    trainable = []
    for name, param in named:
        param.requires_grad_(any(_matches(name, p) for p in patterns))
        if param.requires_grad:
            trainable.append(name)
    return trainable
