"""Exact control maps of the synthetic world (:mod:`inr_smooth.synthetic`).

The world knows every region of a frame: the background (with its stripes) and the object's
silhouette in front of it. So its condition maps need no detector:

* :func:`edge_maps` -- the boundaries between differently coloured regions (object outline and
  stripe edges), one pixel wide, white on black, as OpenCV's Canny draws them on these frames;
* :func:`depth_maps` -- inverse depth, bright = near, as MiDaS draws it: the background is a
  far wall (64), the object a flat cut-out in front of it (192), brighter as a ``growing``
  object comes closer (``192 * size / radius``, at most 255);
* :func:`silhouettes` -- the object's boolean mask per frame (for scoring).

All are ``uint8 (f, size, size, 3)`` (masks ``bool (f, size, size)``), the layout of a control
video. ``index`` picks one frame (``f`` = 1) of a clip of ``frames``.
"""

from __future__ import annotations

import numpy as np

from ..synthetic import Scene, shape_mask

__all__ = ["WORLD_CONDITIONS", "depth_maps", "edge_maps", "silhouettes", "world_maps"]

WORLD_CONDITIONS = ("canny", "depth")
DEPTH_WALL = 64
DEPTH_OBJECT = 192


def _indices(frames: int, index: int | None) -> list[int]:
    if index is None:
        return list(range(frames))
    if not 0 <= index < frames:
        raise ValueError(f"frame index {index} is out of range for {frames} frames")
    return [index]


def silhouettes(
    scene: Scene, frames: int = 8, size: int = 64, index: int | None = None
) -> np.ndarray:
    """The object's mask in every frame (or only frame ``index``): ``bool (f, size, size)``."""
    masks = []
    for n in _indices(frames, index):
        cx, cy = scene.center(n, frames)
        masks.append(shape_mask(scene.shape, cx, cy, scene.size_at(n, frames), size))
    return np.stack(masks)


def _regions(scene: Scene, frames: int, size: int, index: int | None) -> np.ndarray:
    """Region labels ``int (f, size, size)``: 0/1 background stripes, 2 the object."""
    stripes = np.zeros(size, dtype=np.int64)
    if scene.background == "striped":  # the columns synthetic.render darkens
        stripes = (np.arange(size) * 6 // size) % 2
    masks = silhouettes(scene, frames, size, index)
    labels = np.broadcast_to(stripes, masks.shape).copy()
    labels[masks] = 2
    return labels


def _gray3(maps: np.ndarray) -> np.ndarray:
    return np.repeat(maps[..., None], 3, axis=-1)


def edge_maps(scene: Scene, frames: int = 8, size: int = 64, index: int | None = None):
    """Region boundaries: a pixel is an edge where its right or lower neighbour lies in
    another region (one pixel wide, like Canny's thinned edges)."""
    labels = _regions(scene, frames, size, index)
    edges = np.zeros(labels.shape, dtype=bool)
    edges[:, :, :-1] |= labels[:, :, :-1] != labels[:, :, 1:]
    edges[:, :-1, :] |= labels[:, :-1, :] != labels[:, 1:, :]
    return _gray3(edges.astype(np.uint8) * 255)


def depth_maps(scene: Scene, frames: int = 8, size: int = 64, index: int | None = None):
    """Inverse depth: the wall far (dark), the object near (bright)."""
    masks = silhouettes(scene, frames, size, index)
    maps = np.full(masks.shape, DEPTH_WALL, dtype=np.uint8)
    for k, n in enumerate(_indices(frames, index)):
        value = min(255, round(DEPTH_OBJECT * scene.size_at(n, frames) / scene.radius))
        maps[k][masks[k]] = value
    return _gray3(maps)


def world_maps(
    kind: str, scene: Scene, frames: int = 8, size: int = 64, index: int | None = None
) -> np.ndarray:
    """``"canny"`` (:func:`edge_maps`) or ``"depth"`` (:func:`depth_maps`) of every frame, or
    of frame ``index`` only (then ``f`` = 1)."""
    if kind == "canny":
        return edge_maps(scene, frames, size, index)
    if kind == "depth":
        return depth_maps(scene, frames, size, index)
    raise ValueError(f"the synthetic world draws {WORLD_CONDITIONS} maps, not {kind!r}")
