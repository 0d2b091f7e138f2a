"""Optical-flow warping error and flow magnitude, with pluggable flow estimators.

A flow estimator is any callable ``estimator(a, b) -> flow``: ``a``, ``b`` are ``uint8
(h, w, 3)`` frames, ``flow`` is float32 ``(h, w, 2)`` in pixels (x then y) such that the pixel
at ``p`` in ``a`` is found at ``p + flow[p]`` in ``b``. Two ship: :class:`DISFlow` (OpenCV's
DIS, weights-free, fast on a CPU) and :class:`RaftFlow` (torchvision's RAFT).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CONSISTENCY",
    "DISFlow",
    "FlowEstimator",
    "RaftFlow",
    "consistent_mask",
    "flow_magnitude",
    "flow_metrics",
    "warp",
    "warp_error",
]

FlowEstimator = Callable[[np.ndarray, np.ndarray], np.ndarray]
# forward-backward check (Sundaram et al. 2010; Ruder et al. 2016): a pixel is kept when
# |f_fw + f_bw(p + f_fw)|^2 < A (|f_fw|^2 + |f_bw(p + f_fw)|^2) + B
CONSISTENCY = (0.01, 0.5)


def _check_video(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {getattr(frames, 'dtype', type(frames))}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 2:
        raise ValueError(f"expected frames of shape (f >= 2, h, w, 3), got {frames.shape}")


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: ``out[p] = image[p + flow[p]]`` (bilinear, border clamp).

    ``image`` is ``(h, w, c)`` float, ``flow`` ``(h, w, 2)``; returns ``(h, w, c)`` float32.
    """
    h, w = flow.shape[:2]
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                         indexing="ij")  # fmt: skip
    grid_x = (xs + flow[..., 0]) / max(w - 1, 1) * 2 - 1
    grid_y = (ys + flow[..., 1]) / max(h - 1, 1) * 2 - 1
    grid = torch.from_numpy(np.stack([grid_x, grid_y], -1)[None].astype(np.float32))
    src = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0].permute(1, 2, 0).numpy()


def consistent_mask(
    forward: np.ndarray,
    backward: np.ndarray,
    consistency: tuple[float, float] | None = CONSISTENCY,
) -> np.ndarray:
    """Pixels of the forward flow's source whose flow the backward flow undoes: ``(h, w)`` bool.

    ``forward`` maps frame A to B, ``backward`` B to A (both ``(h, w, 2)``). A pixel ``p`` is
    kept when ``|f_fw + f_bw(p + f_fw)|^2 < a (|f_fw|^2 + |f_bw(p + f_fw)|^2) + b`` with
    ``(a, b) = consistency``; ``consistency=None`` keeps every pixel.
    """
    if consistency is None:
        return np.ones(forward.shape[:2], dtype=bool)
    back_at_target = warp(backward, forward)  # f_bw evaluated at p + f_fw(p)
    a, b = consistency
    error = ((forward + back_at_target) ** 2).sum(-1)
    bound = a * ((forward**2).sum(-1) + (back_at_target**2).sum(-1)) + b
    return error < bound


def _pair_warp_error(
    prev: np.ndarray, cur: np.ndarray, to_prev: np.ndarray, to_cur: np.ndarray, consistency
) -> float:
    """|cur - warp(prev, to_prev)| in [0, 1], mean over channels and consistent pixels (all
    pixels when none is consistent, e.g. a cut)."""
    mask = consistent_mask(to_prev, to_cur, consistency)
    warped = warp(prev.astype(np.float32) / 255, to_prev)
    diff = np.abs(cur.astype(np.float32) / 255 - warped).mean(-1)  # (h, w)
    return float(diff[mask].mean()) if mask.any() else float(diff.mean())


def flow_metrics(
    frames: np.ndarray,
    estimator: FlowEstimator,
    *,
    consistency: tuple[float, float] | None = CONSISTENCY,
) -> dict[str, float]:
    """``{"warp_error", "flow_magnitude"}`` of ``uint8 (f, h, w, 3)`` frames from two flows per
    consecutive pair (the same numbers as :func:`warp_error` and :func:`flow_magnitude`)."""
    _check_video(frames)
    errors, lengths = [], []
    for prev, cur in itertools.pairwise(frames):
        to_prev = _checked(estimator(cur, prev), cur)  # flow from frame i+1 to frame i
        to_cur = _checked(estimator(prev, cur), prev)  # flow from frame i to frame i+1
        errors.append(_pair_warp_error(prev, cur, to_prev, to_cur, consistency))
        lengths.append(float(np.linalg.norm(to_cur, axis=-1).mean()))
    return {"warp_error": float(np.mean(errors)), "flow_magnitude": float(np.mean(lengths))}


def warp_error(
    frames: np.ndarray,
    estimator: FlowEstimator,
    *,
    consistency: tuple[float, float] | None = CONSISTENCY,
) -> float:
    """Mean |frame_{i+1} - warp(frame_i, flow_{i+1 -> i})| over consistent pixels, pixels in
    [0, 1], averaged over channels, pixels and the ``f - 1`` consecutive pairs.

    ``frames`` is ``uint8 (f >= 2, h, w, 3)``; ``consistency=(a, b)`` is the forward-backward
    check of :func:`consistent_mask` (``None``: every pixel counts).
    """
    _check_video(frames)
    errors = []
    for prev, cur in itertools.pairwise(frames):
        to_prev = _checked(estimator(cur, prev), cur)  # flow from frame i+1 to frame i
        to_cur = _checked(estimator(prev, cur), prev)
        errors.append(_pair_warp_error(prev, cur, to_prev, to_cur, consistency))
    return float(np.mean(errors))


def flow_magnitude(frames: np.ndarray, estimator: FlowEstimator) -> float:
    """Mean length in pixels of the flow from frame i to i+1 over pixels and consecutive pairs
    of ``uint8 (f >= 2, h, w, 3)`` frames (how much things move)."""
    _check_video(frames)
    lengths = [
        float(np.linalg.norm(_checked(estimator(a, b), a), axis=-1).mean())
        for a, b in itertools.pairwise(frames)
    ]
    return float(np.mean(lengths))


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


class RaftFlow:
    """torchvision's RAFT (Teed and Deng 2020), large by default.

    Weights come from torchvision's cache (downloaded once, online) or from ``weights``, a
    ``.pth`` state dict read with ``weights_only=True``. Frame sides must be multiples of 8
    and at least 128.
    """

    name = "raft"

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        large: bool = True,
        device=None,
        iterations: int = 12,
    ):
        from torchvision.models import optical_flow as of

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        build = of.raft_large if large else of.raft_small
        default = of.Raft_Large_Weights.DEFAULT if large else of.Raft_Small_Weights.DEFAULT
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"RAFT weights not found: {path}")
            model = build(weights=None)
            _load_raft_state(model, path, "large" if large else "small")
        else:
            try:
                model = build(weights=default)
            except Exception as exc:  # URLError, OSError, ... when offline with an empty cache
                raise FileNotFoundError(
                    f"RAFT weights are not in torchvision's cache and could not be downloaded "
                    f"({type(exc).__name__}); pass --raft-weights PATH or use --flow dis"
                ) from None
        self.model = model.eval().to(self.device)
        self.large = large
        self.iterations = iterations  # RAFT's recurrent refinements (torchvision default 12)

    def __repr__(self) -> str:
        return f"RaftFlow(large={self.large}, iterations={self.iterations})"

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        h, w = a.shape[:2]
        if h % 8 or w % 8 or min(h, w) < 128:
            raise ValueError(
                f"RAFT needs frame sides that are multiples of 8 and at least 128 (its "
                f"correlation pyramid), got {h}x{w}: pass --size or use --flow dis"
            )

        def prep(x):  # uint8 (h, w, 3) -> (1, 3, h, w) in [-1, 1]
            t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()
            return (t / 127.5 - 1).to(self.device)

        flows = self.model(prep(a), prep(b), num_flow_updates=self.iterations)
        flow = flows[-1]  # the last refinement, (1, 2, h, w)
        return flow[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)


def _load_raft_state(model: torch.nn.Module, path: Path, size: str) -> None:
    """Load a RAFT state dict saved with ``torch.save`` (read with ``weights_only=True``)."""
    expected = f"expected a torchvision RAFT {size} state dict in {path}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or one holding more than tensors
        raise ValueError(f"{expected}, could not read it ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{expected}, found a {type(state).__name__}")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError:  # tensors of other shapes: the other RAFT size
        raise ValueError(f"{expected}, found tensors of other shapes (the other size?)") from None
    if missing or unexpected:
        raise ValueError(
            f"{expected}, found {len(missing)} missing and {len(unexpected)} unexpected keys "
            f"(e.g. {(missing or unexpected)[0]!r})"
        )
