"""Frame bookkeeping for a 2-D UNet that runs on the frames of a video.

Inside the video UNet every 2-D module sees the frames stacked into the batch,
``rearrange(x, "b c f h w -> (b f) c h w")``. The few modules that look across frames
(cross-frame attention, temporal attention, video GroupNorm) need the frame count ``f`` to undo
that, and diffusers' block signatures have no place for it. :class:`FrameContext` carries it:
the video UNet sets it for the duration of its forward, the modules read it.

Gradient checkpointing re-runs modules during ``backward``, after the forward has returned and
the context is cleared; :class:`FrameCheckpoint` records the frame count when the forward runs
and sets it again for the recomputation, so a checkpointed module always sees the frame count
of the forward it belongs to.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = ["FrameCheckpoint", "FrameContext", "FrameGroupNorm"]


class FrameContext:
    """The number of frames folded into the batch during a video UNet forward."""

    def __init__(self) -> None:
        self._num_frames: int | None = None

    @property
    def num_frames(self) -> int:
        if self._num_frames is None:
            raise RuntimeError(
                "a cross-frame module ran outside a video UNet forward: the frame count is only "
                "known while VideoUNet.forward runs (if you enabled gradient checkpointing on "
                "the inner 2-D UNet yourself, use VideoUNet.enable_gradient_checkpointing())"
            )
        return self._num_frames

    @contextmanager
    def frames(self, num_frames: int) -> Iterator[None]:
        """Set the frame count for the duration of a ``with`` block (nests correctly)."""
        previous, self._num_frames = self._num_frames, int(num_frames)
        try:
            yield
        finally:
            self._num_frames = previous

    def fold(self, x: Tensor) -> tuple[int, int]:
        """``(b, f)`` of a ``(b f) ...`` tensor; raises if its batch is not a multiple of f."""
        f = self.num_frames
        if x.shape[0] % f != 0:
            raise ValueError(
                f"expected a (b f, ...) tensor with f = {f} frames folded into the batch, "
                f"got leading size {x.shape[0]}"
            )
        return x.shape[0] // f, f


class FrameCheckpoint:
    """A diffusers ``gradient_checkpointing_func`` that keeps the frame count for recompute."""

    def __init__(self, context: FrameContext) -> None:
        self.context = context

    def __call__(self, module, *args):
        num_frames = self.context.num_frames

        def run(*inputs):
            with self.context.frames(num_frames):
                return module(*inputs)

        return torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics pool over all frames of a video, as on a 5-D tensor.

    Input ``(b f, c, h, w)``; the mean and variance of each group are taken over
    ``(c / groups, f, h, w)``, i.e. ``nn.GroupNorm`` applied to ``(b, c, f, h, w)``. This is how
    Tune-A-Video's ResnetBlock3D and output norm behave; a per-frame 2-D UNet normalises each
    frame on its own.
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, *, context, **kwargs):
        super().__init__(num_groups, num_channels, eps, affine, **kwargs)
        self.context = context

    def forward(self, x: Tensor) -> Tensor:
        b, f = self.context.fold(x)
        video = rearrange(x, "(b f) c h w -> b c f h w", b=b, f=f)
        video = F.group_norm(video, self.num_groups, self.weight, self.bias, self.eps)
        return rearrange(video, "b c f h w -> (b f) c h w")


def swap_group_norm(norm: nn.GroupNorm, context: FrameContext | None) -> nn.GroupNorm:
    """The same norm (sharing its parameters) pooling over frames, or per frame if no context."""
    settings = (norm.num_groups, norm.num_channels, norm.eps, norm.affine)
    if context is None:
        new = nn.GroupNorm(*settings, device="meta")
    else:
        new = FrameGroupNorm(*settings, context=context, device="meta")
    if norm.affine:
        new.weight, new.bias = norm.weight, norm.bias
    return new
