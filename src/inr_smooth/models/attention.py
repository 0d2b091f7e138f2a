"""Cross-frame self-attention processors and the temporal attention block.

Spatial self-attention of a 2-D UNet becomes cross-frame attention by swapping the attention
processor of each transformer block's ``attn1`` (diffusers' ``set_attn_processor``): queries
come from each frame, keys and values from the frames the mode picks.

=================  ============================================  ==========================
mode               keys / values of frame ``i``                  used by
=================  ============================================  ==========================
``none``           frame ``i`` (per-frame, the image model)      --
``sparse_causal``  frame 0 and frame ``max(i - 1, 0)``           Tune-A-Video
``first_frame``    frame 0                                       Text2Video-Zero
``keyframe``       frame ``k`` (chosen)                          ControlVideo-style
``middle``         frame ``(f - 1) // 2``                        FateZero's style configs
``full``           all frames                                    --
=================  ============================================  ==========================

``sparse_causal`` concatenates the tokens of the first and the previous frame, first frame
first, and does so for frame 0 as well (its keys are frame 0 twice), exactly as Tune-A-Video.
FateZero's default spatio-temporal attention (``SparseCausalAttention_index = [-1, 'first']``)
attends to the same two frames, previous first: the same keys in another order, the same
attention. Its style and attribute configs use ``['mid']`` (``middle`` here) together with
``least_sc_channel`` (``min_channels`` here): layers narrower than that attend within their own
frame.

All attention runs through :func:`torch.nn.functional.scaled_dot_product_attention`, which picks
flash / memory-efficient kernels on its own; xformers is not used.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import Tensor, nn

from .frames import FrameContext

AttentionMode = Literal["none", "sparse_causal", "first_frame", "keyframe", "middle", "full"]
ATTENTION_MODES = ("none", "sparse_causal", "first_frame", "keyframe", "middle", "full")

__all__ = [
    "ATTENTION_MODES",
    "CrossFrameAttnProcessor",
    "ParallelTemporalAttention",
    "TemporalAttention",
    "VideoTransformerBlock",
    "check_attention_mode",
]


def check_attention_mode(mode: str, keyframe: int = 0) -> None:
    """Raise ValueError for an unknown mode or a negative keyframe index."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {mode!r}")
    if not isinstance(keyframe, int) or isinstance(keyframe, bool) or keyframe < 0:
        raise ValueError(f"keyframe must be a frame index >= 0, got {keyframe!r}")


def _heads(x: Tensor, heads: int) -> Tensor:
    return rearrange(x, "b n (h d) -> b h n d", h=heads)


def _key_frames(x: Tensor, mode: str, keyframe: int, f: int) -> Tensor:
    """Gather the key/value tokens each frame attends to: ``(b f, n, c) -> (b f, m, c)``."""
    video = rearrange(x, "(b f) n c -> b f n c", f=f)
    if mode == "sparse_causal":
        previous = (torch.arange(f, device=x.device) - 1).clamp(min=0)
        first = torch.zeros_like(previous)
        video = torch.cat([video[:, first], video[:, previous]], dim=2)  # (b, f, 2n, c)
    else:  # first_frame / keyframe / middle: one frame for all
        index = {"first_frame": 0, "middle": (f - 1) // 2}.get(mode, keyframe)
        if index >= f:
            raise ValueError(f"keyframe index {index} is out of range for a video of {f} frames")
        video = video[:, [index] * f]  # (b, f, n, c)
    return rearrange(video, "b f m c -> (b f) m c")


class CrossFrameAttnProcessor:
    """diffusers attention processor: self-attention whose keys and values come from other
    frames (module docstring). Meant for ``BasicTransformerBlock.attn1``.

    Input ``hidden_states`` of shape ``(b f, n, c)`` (n tokens per frame); the frame count comes
    from the shared :class:`FrameContext`. When called with ``encoder_hidden_states`` (an
    ``attn1`` configured as cross-attention) it behaves as plain attention, and so does a layer
    with fewer than ``min_channels`` channels (FateZero's ``least_sc_channel``; 0: none).

    ``branch`` (ControlVideo's temporal branch, :class:`ParallelTemporalAttention`): a module
    run on this attention's own input (the block's ``norm1`` output) whose result is added to
    this attention's output, i.e. right after key-frame attention, before the block's residual
    connection and cross-attention.
    """

    def __init__(
        self,
        context: FrameContext,
        mode: AttentionMode = "sparse_causal",
        keyframe=0,
        min_channels: int = 0,
        branch: nn.Module | None = None,
    ):
        check_attention_mode(mode, keyframe)
        if not isinstance(min_channels, int) or min_channels < 0:
            raise ValueError(f"min_channels must be an integer >= 0, got {min_channels!r}")
        self.context = context
        self.mode = mode
        self.keyframe = keyframe
        self.min_channels = min_channels
        self.branch = branch

    def __repr__(self) -> str:
        extra = f", min_channels={self.min_channels}" if self.min_channels else ""
        extra += ", branch" if self.branch is not None else ""
        return f"{type(self).__name__}(mode={self.mode!r}, keyframe={self.keyframe}{extra})"

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **kwargs: Any,
    ) -> Tensor:
        if hidden_states.ndim != 3:
            raise ValueError(
                f"expected hidden_states of shape (b f, n, c), got {tuple(hidden_states.shape)}"
            )
        narrow = attn.query_dim < self.min_channels
        mode = "none" if encoder_hidden_states is not None or narrow else self.mode
        if attention_mask is not None and mode != "none":
            raise ValueError(f"cross-frame attention ({mode!r}) does not take an attention_mask")
        residual = hidden_states
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)

        folded = None
        if mode in ("sparse_causal", "first_frame", "keyframe", "middle"):
            f = self.context.fold(query)[1]
            key = _key_frames(key, mode, self.keyframe, f)
            value = _key_frames(value, mode, self.keyframe, f)
        elif mode == "full":  # one sequence of all frames' tokens per video
            folded = self.context.fold(query)
            query, key, value = (
                rearrange(x, "(b f) n c -> b (f n) c", f=folded[1]) for x in (query, key, value)
            )
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, key.shape[1], query.shape[0])
            attention_mask = mask.view(query.shape[0], attn.heads, -1, mask.shape[-1])

        query, key, value = (_heads(x, attn.heads) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        out = rearrange(out, "b h n d -> b n (h d)").to(query.dtype)
        if folded is not None:
            out = rearrange(out, "b (f n) c -> (b f) n c", f=folded[1])

        out = attn.to_out[1](attn.to_out[0](out))  # linear, dropout
        if attn.residual_connection:
            out = out + residual
        out = out / attn.rescale_output_factor
        if self.branch is not None:
            out = out + self.branch(residual)  # residual: this attention's input (norm1's output)
        return out


class TemporalAttention(nn.Module):
    """Self-attention over the frames at every spatial position, pre-norm, residual.

    ``(b f, n, c) -> (b f, n, c)``: ``x + attn(norm(x))`` on ``rearrange(x, "(b f) n c ->
    (b n) f c")``. No positional encoding (as Tune-A-Video). The output projection starts at
    zero, weight and bias, so the block starts as the identity.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        *,
        context: FrameContext,
        bias: bool = False,
        upcast_attention: bool = False,
        generator: torch.Generator | None = None,
        meta: bool = False,
    ) -> None:
        super().__init__()
        self.context = context
        with torch.device("meta"):  # built empty, then initialised from `generator` only
            self.norm = nn.LayerNorm(dim)
            self.attn = Attention(
                query_dim=dim, heads=heads, dim_head=dim_head, bias=bias,
                upcast_attention=upcast_attention, out_bias=True,
            )  # fmt: skip
        if meta:  # shapes only (memory estimates): no storage, no initialisation
            return
        self.to_empty(device="cpu")
        with torch.no_grad():
            nn.init.ones_(self.norm.weight)
            nn.init.zeros_(self.norm.bias)
            for linear in (self.attn.to_q, self.attn.to_k, self.attn.to_v):
                # nn.Linear's own default initialisation, drawn from `generator`
                nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
                if linear.bias is not None:
                    bound = 1 / math.sqrt(linear.in_features)
                    linear.bias.uniform_(-bound, bound, generator=generator)
            nn.init.zeros_(self.attn.to_out[0].weight)
            nn.init.zeros_(self.attn.to_out[0].bias)

    def forward(self, hidden_states: Tensor) -> Tensor:
        b, f = self.context.fold(hidden_states)
        x = rearrange(hidden_states, "(b f) n c -> (b n) f c", b=b, f=f)
        x = x + self.attn(self.norm(x))
        return rearrange(x, "(b n) f c -> (b f) n c", b=b)


class ParallelTemporalAttention(nn.Module):
    """ControlVideo's temporal branch (Zhao et al. 2023, thu-ml/controlvideo): self-attention
    over the frames at every spatial position, then a 1x1 convolution that starts at zero.

    ``(b f, n, c) -> (b f, n, c)``: ``conv(attn(rearrange(x, "(b f) n c -> (b n) f c")))``, no
    norm of its own and no residual: it reads the tokens key-frame attention reads (``norm1``'s
    output) and its result is added to key-frame attention's output (see
    :class:`CrossFrameAttnProcessor`'s ``branch``). ``attn`` starts as a copy of the block's
    ``attn1`` (ControlVideo's ``attn_temp``), ``conv`` (its ``conv_temp``) with weight and bias
    zero, so the branch adds exactly zero until it is trained. Nothing is drawn from any random
    generator. The 1x1 convolution over the token grid is applied as the linear map it is.
    """

    def __init__(self, attn1: Attention, *, context: FrameContext) -> None:
        super().__init__()
        self.context = context
        dim = attn1.query_dim
        with torch.device("meta"):
            self.attn = Attention(
                query_dim=dim, heads=attn1.heads, dim_head=attn1.inner_dim // attn1.heads,
                bias=attn1.use_bias, upcast_attention=attn1.upcast_attention,
                out_bias=attn1.to_out[0].bias is not None,
            )  # fmt: skip
            self.conv = nn.Conv2d(dim, dim, kernel_size=1)
        param = attn1.to_q.weight
        self.to_empty(device=param.device)
        self.to(param.dtype)
        with torch.no_grad():
            self.attn.load_state_dict(attn1.state_dict())
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)

    def forward(self, norm_hidden_states: Tensor) -> Tensor:
        b, f = self.context.fold(norm_hidden_states)
        x = rearrange(norm_hidden_states, "(b f) n c -> (b n) f c", b=b, f=f)
        x = rearrange(self.attn(x), "(b n) f c -> (b f) n c", b=b)
        return F.linear(x, self.conv.weight.flatten(1), self.conv.bias)  # the 1x1 conv


class VideoTransformerBlock(nn.Module):
    """A diffusers ``BasicTransformerBlock`` (``spatial``) followed by temporal attention.

    Same call signature as ``BasicTransformerBlock``, so ``Transformer2DModel`` (and its
    gradient checkpointing) treat it as the block it replaces. A :class:`TemporalAttention` runs
    on the block's output, i.e. after the feed-forward and before the transformer's
    ``proj_out``: where Tune-A-Video's BasicTransformerBlock applies ``attn_temp``. A
    :class:`ParallelTemporalAttention` (ControlVideo) is only held here: the ``attn1``
    processor runs it, inside the spatial block.
    """

    def __init__(
        self,
        spatial: BasicTransformerBlock,
        temporal: TemporalAttention | ParallelTemporalAttention | None,
    ):
        super().__init__()
        self.spatial = spatial
        self.temporal = temporal

    def forward(
        self,
        hidden_states: Tensor,
        attention_mask: Tensor | None = None,
        encoder_hidden_states: Tensor | None = None,
        encoder_attention_mask: Tensor | None = None,
        timestep: Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        class_labels: Tensor | None = None,
        added_cond_kwargs: dict[str, Tensor] | None = None,
    ) -> Tensor:
        hidden_states = self.spatial(
            hidden_states,
            attention_mask=attention_mask,
            encoder_hidden_states=encoder_hidden_states,
            encoder_attention_mask=encoder_attention_mask,
            timestep=timestep,
            cross_attention_kwargs=cross_attention_kwargs,
            class_labels=class_labels,
            added_cond_kwargs=added_cond_kwargs,
        )
        if isinstance(self.temporal, TemporalAttention):
            hidden_states = self.temporal(hidden_states)
        return hidden_states
