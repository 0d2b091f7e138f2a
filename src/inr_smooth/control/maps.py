"""Control videos: one condition map per frame of the source clip, for each ControlNet.

A control is either a detector name (``canny`` built in; ``hed`` / ``depth`` / ``pose`` with
the optional detectors, :mod:`.detectors`), computed from the tuned frames themselves as
ControlVideo does, or a path: a video file or a folder of numbered images holding the maps.
Precomputed maps are checked against the source clip, one line each:

* count: one map per tuned frame (used as they are), or one per frame of the source video
  (then the tuned frames' ``start`` / ``stride`` pick from them);
* size: the source video's own size (then cropped and resized exactly as the frames were) or
  the tuned frames' size.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads for the tensor conversion only: maps are checked without it
    from torch import Tensor

from .detectors import CANNY_THRESHOLDS, DETECTORS, detect

__all__ = ["ControlError", "control_maps", "maps_to_tensor"]


class ControlError(ValueError):
    """Control maps that do not fit the source clip (one line: expected vs found)."""


def control_maps(
    control: str,
    frames: np.ndarray,
    *,
    source: str | Path | None = None,
    start: int = 0,
    stride: int = 1,
    canny_thresholds: tuple[int, int] = CANNY_THRESHOLDS,
) -> np.ndarray:
    """The maps of ``control`` for the tuned ``frames`` ``uint8 (f, H, W, 3)``: same shape.

    ``source``, ``start`` and ``stride`` say where the frames came from (for precomputed maps
    that cover the whole source video, or have its size).
    """
    from ..video_io import VideoError, probe_video, read_video

    if control in DETECTORS:
        return detect(control, frames, canny_thresholds=canny_thresholds)
    path = Path(control).expanduser()
    if not path.exists():
        raise ControlError(
            f"control maps not found: {path} (expected one of {', '.join(DETECTORS)} or a video "
            "/ folder of maps)"
        )
    f, height, width = frames.shape[:3]
    try:
        count, h, w = probe_video(path)
        src = probe_video(source) if source is not None and Path(source).exists() else None
    except VideoError as exc:
        raise ControlError(f"control maps {path}: {exc}") from None
    if count == f:
        first, step = 0, 1
    elif src is not None and count == src[0]:
        first, step = start, stride
    else:
        also = f" or {src[0]} (one per frame of {source})" if src is not None else ""
        raise ControlError(
            f"control maps {path}: expected {f} maps (one per tuned frame){also}, found {count}"
        )
    sizes = [(height, width)] + ([src[1:]] if src is not None else [])
    if (h, w) not in sizes:
        also = f" or {src[1]}x{src[2]} (the source video's)" if src is not None else ""
        raise ControlError(
            f"control maps {path}: expected maps of {height}x{width} (the tuned frames'){also}, "
            f"found {h}x{w}"
        )
    try:
        return read_video(path, num_frames=f, start=first, stride=step, size=(height, width))
    except VideoError as exc:
        raise ControlError(f"control maps {path}: {exc}") from None


def maps_to_tensor(maps: np.ndarray) -> Tensor:
    """``uint8 (f, H, W, C)`` -> ``float32 (1, C, f, H, W)`` in [0, 1], a ControlNet's input."""
    import torch
    from einops import rearrange

    if maps.dtype != np.uint8 or maps.ndim != 4:
        raise ControlError(f"expected uint8 maps (f, H, W, C), got {maps.dtype} {maps.shape}")
    return rearrange(torch.from_numpy(np.ascontiguousarray(maps)), "f h w c -> 1 c f h w") / 255.0
