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


def consistent_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Pixels of the forward flow's source whose flow the backward flow undoes: ``(h, w)`` bool.

    ``forward`` maps frame A to B, ``backward`` B to A (both ``(h, w, 2)``).
    """
    back_at_target = warp(backward, forward)  # f_bw evaluated at p + f_fw(p)
    a, b = CONSISTENCY
    error = ((forward + back_at_target) ** 2).sum(-1)
    bound = a * ((forward**2).sum(-1) + (back_at_target**2).sum(-1)) + b
    return error < bound


def warp_error(frames: np.ndarray, estimator: FlowEstimator) -> float:
    """Mean |frame_{i+1} - warp(frame_i, flow_{i+1 -> i})| over consistent pixels, pixels in
    [0, 1], averaged over channels, pixels and the ``f - 1`` consecutive pairs."""
    _check_video(frames)
    errors = []
    for prev, cur in itertools.pairwise(frames):
        to_prev = estimator(cur, prev)  # flow from frame i+1 to frame i
        to_cur = estimator(prev, cur)
        mask = consistent_mask(to_prev, to_cur)
        warped = warp(prev.astype(np.float32) / 255, to_prev)
        diff = np.abs(cur.astype(np.float32) / 255 - warped).mean(-1)
        errors.append(float(diff[mask].mean()) if mask.any() else float(diff.mean()))
    return float(np.mean(errors))


def flow_magnitude(frames: np.ndarray, estimator: FlowEstimator) -> float:
    """Mean length in pixels of the flow between consecutive frames (how much things move)."""
    _check_video(frames)
    lengths = [
        float(np.linalg.norm(estimator(a, b), axis=-1).mean())
        for a, b in itertools.pairwise(frames)
    ]
    return float(np.mean(lengths))


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
    ``.pth`` state dict read with ``weights_only=True``. Frame sides must be multiples of 8.
    """

    name = "raft"

    def __init__(self, weights: str | Path | None = None, *, large: bool = True, device=None):
        from torchvision.models import optical_flow as of

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        build = of.raft_large if large else of.raft_small
        default = of.Raft_Large_Weights.DEFAULT if large else of.Raft_Small_Weights.DEFAULT
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"RAFT weights not found: {path}")
            model = build(weights=None)
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
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

    def __repr__(self) -> str:
        return f"RaftFlow(large={self.large})"

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.shape[0] % 8 or a.shape[1] % 8:
            raise ValueError(f"RAFT needs frame sides that are multiples of 8, got {a.shape[:2]}")

        def prep(x):  # uint8 (h, w, 3) -> (1, 3, h, w) in [-1, 1]
            t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()
            return (t / 127.5 - 1).to(self.device)

        flow = self.model(prep(a), prep(b))[-1]  # the last refinement, (1, 2, h, w)
        return flow[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)
