"""Optical-flow warping error and flow magnitude, with pluggable flow estimators (suite v2).

A flow estimator is any callable ``estimator(a, b) -> flow``: ``a``, ``b`` are ``uint8
(h, w, 3)`` frames, ``flow`` is float32 ``(h, w, 2)`` in pixels (x then y) such that the pixel
at ``p`` in ``a`` is found at ``p + flow[p]`` in ``b``. Two ship: :class:`DISFlow` (OpenCV's
DIS, weights-free, fast on a CPU) and :class:`~inr_smooth.metrics.raft.RaftFlow`
(torchvision's RAFT, in its own module).

Numpy only (no torch): the warp is our own bilinear sampler, exact for integer flows.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator

import numpy as np

from . import CONSISTENCY

__all__ = [
    "CONSISTENCY",
    "DISFlow",
    "FlowEstimator",
    "consistent_mask",
    "flow_magnitude",
    "flow_metrics",
    "in_frame_mask",
    "kept_pixels",
    "warp",
    "warp_error",
]

FlowEstimator = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _check_video(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {getattr(frames, 'dtype', type(frames))}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise ValueError(f"expected frames of shape (f >= 2, h, w, 3), got {frames.shape}")


@functools.lru_cache(maxsize=8)
def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs, ys


def _targets(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x + flow_x, y + flow_y)``: float32 pixel coordinates, each ``(h, w)`` (exact for
    integer flows)."""
    xs, ys = _grid(*flow.shape[:2])
    return xs + flow[..., 0], ys + flow[..., 1]


def in_frame_mask(flow: np.ndarray) -> np.ndarray:
    """``(h, w)`` bool: pixels whose flow target ``p + flow[p]`` lies inside the frame (pixel
    centres ``0 .. w - 1`` by ``0 .. h - 1``, the area where bilinear sampling needs no border
    value)."""
    h, w = flow.shape[:2]
    tx, ty = _targets(flow)
    return (tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: ``out[p] = image[p + flow[p]]`` (bilinear; targets outside the frame
    are clamped to its border).

    ``image`` is ``(h, w, c)``, ``flow`` ``(h, w, 2)``; returns ``(h, w, c)`` float32. An
    integer flow copies pixels exactly (its bilinear weights are exactly 0 and 1).
    """
    h, w = flow.shape[:2]
    tx, ty = _targets(np.asarray(flow, dtype=np.float32))
    np.clip(tx, 0, w - 1, out=tx)
    np.clip(ty, 0, h - 1, out=ty)
    x0, y0 = tx.astype(np.intp), ty.astype(np.intp)  # floor: the coordinates are >= 0
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    wx, wy = (tx - x0)[..., None], (ty - y0)[..., None]
    src = np.asarray(image, dtype=np.float32).reshape(h * w, -1)
    top, bottom = y0 * w, y1 * w
    upper = src[top + x0] * (1 - wx) + src[top + x1] * wx
    lower = src[bottom + x0] * (1 - wx) + src[bottom + x1] * wx
    return upper * (1 - wy) + lower * wy


def consistent_mask(
    forward: np.ndarray,
    backward: np.ndarray,
    consistency: tuple[float, float] | None = CONSISTENCY,
) -> np.ndarray:
    """Pixels of the forward flow's source whose flow the backward flow undoes: ``(h, w)`` bool.

    ``forward`` maps frame A to B, ``backward`` B to A (both ``(h, w, 2)``). A pixel ``p`` is
    kept when ``|f_fw + f_bw(p + f_fw)|^2 < a (|f_fw|^2 + |f_bw(p + f_fw)|^2) + b`` with
    ``(a, b) = consistency``; ``consistency=None`` keeps every pixel. (Whether ``p + f_fw``
    lies in the frame is a separate test: :func:`in_frame_mask`.)
    """
    if consistency is None:
        return np.ones(forward.shape[:2], dtype=bool)
    back_at_target = warp(backward, forward)  # f_bw evaluated at p + f_fw(p)
    a, b = consistency
    error = ((forward + back_at_target) ** 2).sum(-1)
    bound = a * ((forward**2).sum(-1) + (back_at_target**2).sum(-1)) + b
    return error < bound


def kept_pixels(
    to_prev: np.ndarray, to_cur: np.ndarray, consistency: tuple[float, float] | None
) -> np.ndarray:
    """The pixels of frame i+1 that the warp error compares: their flow to frame i lands
    inside frame i, and the flow back undoes it (:func:`consistent_mask`)."""
    return in_frame_mask(to_prev) & consistent_mask(to_prev, to_cur, consistency)


def _pair_warp_error(
    prev: np.ndarray, cur: np.ndarray, to_prev: np.ndarray, to_cur: np.ndarray, consistency
) -> float:
    """|cur - warp(prev, to_prev)| in [0, 1], mean over channels and kept pixels
    (:func:`kept_pixels`; all pixels when none is kept, e.g. a cut)."""
    mask = kept_pixels(to_prev, to_cur, consistency)
    warped = warp(prev.astype(np.float32) / 255, to_prev)
    diff = np.abs(cur.astype(np.float32) / 255 - warped).mean(-1)  # (h, w)
    return float(diff[mask].mean()) if mask.any() else float(diff.mean())


def _pair_flows(
    frames: np.ndarray, estimator: FlowEstimator, *, backward: bool, progress: bool | str = False
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]]:
    """``(prev, cur, flow prev -> cur, flow cur -> prev or None)`` per consecutive pair; with
    ``progress`` (True or a label) a tqdm bar counts the pairs."""
    _check_video(frames)
    pairs = itertools.pairwise(frames)
    if progress:
        from tqdm.auto import tqdm

        label = progress if isinstance(progress, str) else "flow"
        pairs = tqdm(pairs, total=len(frames) - 1, desc=label, unit="pair", leave=False)
    for prev, cur in pairs:
        to_cur = _checked(estimator(prev, cur), prev)  # flow from frame i to frame i+1
        to_prev = _checked(estimator(cur, prev), cur) if backward else None  # i+1 to i
        yield prev, cur, to_cur, to_prev


def flow_metrics(
    frames: np.ndarray,
    estimator: FlowEstimator,
    *,
    consistency: tuple[float, float] | None = CONSISTENCY,
    progress: bool | str = False,
) -> dict[str, float]:
    """``{"warp_error", "flow_magnitude"}`` of ``uint8 (f >= 2, h, w, 3)`` frames from two
    flows per consecutive pair.

    ``warp_error``: mean |frame_{i+1} - warp(frame_i, flow_{i+1 -> i})|, pixels in [0, 1],
    over channels and the pixels of :func:`kept_pixels` (flow target inside frame i, passing
    the forward-backward check ``consistency=(a, b)``; ``None``: only the frame test), then
    over the ``f - 1`` pairs. ``flow_magnitude``: mean length in pixels of the flow from frame
    i to i+1 over pixels and pairs.
    """
    errors, lengths = [], []
    for prev, cur, to_cur, to_prev in _pair_flows(frames, estimator, backward=True,
                                                  progress=progress):  # fmt: skip
        errors.append(_pair_warp_error(prev, cur, to_prev, to_cur, consistency))
        lengths.append(_mean_length(to_cur))
    return {"warp_error": float(np.mean(errors)), "flow_magnitude": float(np.mean(lengths))}


def warp_error(
    frames: np.ndarray,
    estimator: FlowEstimator,
    *,
    consistency: tuple[float, float] | None = CONSISTENCY,
) -> float:
    """The ``warp_error`` of :func:`flow_metrics`."""
    return flow_metrics(frames, estimator, consistency=consistency)["warp_error"]


def flow_magnitude(frames: np.ndarray, estimator: FlowEstimator) -> float:
    """The ``flow_magnitude`` of :func:`flow_metrics` (one flow per pair: how much things
    move)."""
    pairs = _pair_flows(frames, estimator, backward=False)
    lengths = [_mean_length(to_cur) for _, _, to_cur, _ in pairs]
    return float(np.mean(lengths))


def _mean_length(flow: np.ndarray) -> float:
    return float(np.linalg.norm(flow, axis=-1).mean())


def _checked(flow: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """An estimator's output as float32 ``(h, w, 2)`` matching ``frame (h, w, 3)``."""
    flow = np.asarray(flow, dtype=np.float32)
    if flow.shape != (*frame.shape[:2], 2):
        raise ValueError(
            f"expected a flow of shape {(*frame.shape[:2], 2)} from the estimator, got {flow.shape}"
        )
    return flow


class DISFlow:
    """OpenCV's DIS optical flow (Kroeger et al. 2016): no weights, CPU, any size."""

    name = "dis"

    def __init__(self, preset: str = "medium") -> None:
        import cv2

        presets = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        }
        if preset not in presets:
            raise ValueError(f"preset must be one of {sorted(presets)}, got {preset!r}")
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(presets[preset])

    def __repr__(self) -> str:
        return f"DISFlow(preset={self.preset!r})"

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        import cv2

        gray_a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
        gray_b = cv2.cvtColor(np.ascontiguousarray(b), cv2.COLOR_RGB2GRAY)
        return self._dis.calc(gray_a, gray_b, None).astype(np.float32)
