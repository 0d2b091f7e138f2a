"""A synthetic text-to-video world with exact ground truth.

Clips show one coloured shape moving over a plain or striped background, with a caption such
as "a red circle moving right on a blue background". Everything is deterministic from a seed,
at any size and length. Because the generator knows the object's colour, shape and position in
every frame, edits can be scored exactly, without CLIP: see :func:`score_object`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "orange": (240, 140, 30),
    "white": (240, 240, 240),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "diamond")
MOTIONS = ("left", "right", "up", "down", "growing")
BACKGROUNDS = ("plain", "striped")

__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "MOTIONS",
    "SHAPES",
    "FoundObject",
    "ObjectScore",
    "Scene",
    "background_tones",
    "find_object",
    "largest_region",
    "object_score",
    "random_scene",
    "render",
    "render_background",
    "score_object",
    "shape_mask",
    "truth_mask",
]


@dataclass(frozen=True)
class Scene:
    """One clip of the world: an object, its motion and a background."""

    color: str = "red"
    shape: str = "circle"
    motion: str = "right"
    background_color: str = "blue"
    background: str = "plain"
    radius: float = 0.18  # object half-size, as a fraction of the frame side
    travel: float = 0.5  # distance moved over the clip, as a fraction of the frame side

    def __post_init__(self):
        for name, value, allowed in (
            ("color", self.color, COLORS),
            ("background_color", self.background_color, COLORS),
            ("shape", self.shape, SHAPES),
            ("motion", self.motion, MOTIONS),
            ("background", self.background, BACKGROUNDS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
        if self.color == self.background_color:
            raise ValueError("the object and background colours must differ")

    @property
    def caption(self) -> str:
        moving = "growing" if self.motion == "growing" else f"moving {self.motion}"
        texture = "striped " if self.background == "striped" else ""
        return (
            f"a {self.color} {self.shape} {moving} on a {texture}{self.background_color} background"
        )

    def edited(self, **changes) -> Scene:
        """The same clip with other object attributes, e.g. ``edited(color="green")``."""
        return replace(self, **changes)

    def center(self, n: int, frames: int) -> tuple[float, float]:
        """Object centre ``(x, y)`` in [0, 1] frame coordinates at frame ``n``."""
        progress = n / max(frames - 1, 1) - 0.5  # -0.5 .. 0.5
        dx = {"left": -1, "right": 1}.get(self.motion, 0)
        dy = {"up": -1, "down": 1}.get(self.motion, 0)
        return 0.5 + dx * self.travel * progress, 0.5 + dy * self.travel * progress

    def size_at(self, n: int, frames: int) -> float:
        if self.motion != "growing":
            return self.radius
        return self.radius * (0.6 + 0.8 * n / max(frames - 1, 1))


def random_scene(rng: np.random.Generator) -> Scene:
    """A scene with attributes drawn uniformly (object and background colours differ)."""
    color, background_color = rng.choice(list(COLORS), size=2, replace=False)
    return Scene(
        color=str(color),
        shape=str(rng.choice(SHAPES)),
        motion=str(rng.choice(MOTIONS)),
        background_color=str(background_color),
        background=str(rng.choice(BACKGROUNDS)),
    )


def shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """Boolean ``(size, size)`` mask of a shape centred at ``(cx, cy)`` with half-size ``r``."""
    coords = (np.arange(size) + 0.5) / size
    x, y = np.meshgrid(coords - cx, coords - cy)
    if shape == "circle":
        return x**2 + y**2 <= r**2
    if shape == "square":
        return (np.abs(x) <= r * 0.85) & (np.abs(y) <= r * 0.85)
    if shape == "diamond":
        return np.abs(x) + np.abs(y) <= r
    if shape == "triangle":  # apex (0, -r), base corners (-r, 0.8r) and (r, 0.8r); y points down
        return (y <= 0.8 * r) & (1.8 * np.abs(x) <= y + r)
    raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")


def background_tones(scene: Scene) -> np.ndarray:
    """The float32 ``(k, 3)`` colours of the scene's background (its colour, and the stripes')."""
    bg = np.array(COLORS[scene.background_color], dtype=np.float32)
    return np.stack([bg, _stripe(bg)]) if scene.background == "striped" else bg[None]


def _stripe(bg: np.ndarray) -> np.ndarray:
    return bg * 0.6 + 0.4 * 128


def render_background(scene: Scene, size: int) -> np.ndarray:
    """The scene's background alone, float32 ``(size, size, 3)`` (what :func:`render` draws
    the object on)."""
    bg = np.array(COLORS[scene.background_color], dtype=np.float32)
    canvas = np.broadcast_to(bg, (size, size, 3)).copy()
    if scene.background == "striped":
        stripes = ((np.arange(size) * 6 // size) % 2).astype(bool)
        canvas[:, stripes] = _stripe(bg)
    return canvas


def render(scene: Scene, frames: int = 8, size: int = 64) -> np.ndarray:
    """The clip as ``uint8 (f, size, size, 3)``."""
    if frames < 1 or size < 8:
        raise ValueError(f"need frames >= 1 and size >= 8, got frames={frames}, size={size}")
    canvas = render_background(scene, size)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    obj = np.array(COLORS[scene.color], dtype=np.float32)
    for n in range(frames):
        frame = canvas.copy()
        frame[truth_mask(scene, n, frames, size)] = obj
        out[n] = frame.round().astype(np.uint8)
    return out


def truth_mask(scene: Scene, n: int, frames: int, size: int) -> np.ndarray:
    """The object's exact ``(size, size)`` mask at frame ``n`` of ``frames``."""
    cx, cy = scene.center(n, frames)
    return shape_mask(scene.shape, cx, cy, scene.size_at(n, frames), size)


# ----------------------------------------------------------------------------- scores
# The output object of a frame (see :func:`find_object`): the largest 8-connected region of
# pixels that stand out from the scene's known background by more than half the distance
# between the target colour and the nearest background tone, and that covers at least
# MIN_AREA of the true object's area; else the frame has no object.
MIN_AREA = 0.25
MISSING_DISTANCE = math.sqrt(2)  # a frame without an object: the frame's diagonal


@dataclass(frozen=True)
class ObjectScore:
    """Ground-truth scores of a generated clip against the scene it should show. Appearance
    (colour, shape) is read where the output object is; position and motion separately."""

    color_accuracy: float  # fraction of frames whose object's mean colour is nearest the target
    shape_iou: float  # mean IoU of the object with the true shape moved onto the object's centre
    trajectory_error: float  # mean distance of the object's centre from the truth's (/ side)
    motion_ratio: float  # path length of the object's (centre, size) over the truth's; 1 = same
    color_flicker: float  # mean |change| of the object's mean colour between frames (0-1)


@dataclass(frozen=True)
class FoundObject:
    """The output object of one frame: its mask, centroid ``(x, y)`` and equal-area side
    (fractions of the frame side), and mean colour (0-255)."""

    mask: np.ndarray
    center: tuple[float, float]
    side: float
    color: np.ndarray


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    """Mean ``(x, y)`` of the pixel centres, as fractions of the side."""
    ys, xs = np.nonzero(mask)
    size = mask.shape[0]
    return float((xs.mean() + 0.5) / size), float((ys.mean() + 0.5) / size)


def foreground_threshold(scene: Scene) -> float:
    """Half the RGB distance between the target colour and the nearest background tone."""
    target = np.array(COLORS[scene.color], dtype=np.float32)
    return 0.5 * float(np.linalg.norm(background_tones(scene) - target, axis=1).min())


def find_object(frame: np.ndarray, scene: Scene, min_area: float) -> FoundObject | None:
    """The output object in ``uint8 (s, s, 3)`` ``frame`` (see the comment above
    :data:`MIN_AREA`); ``min_area`` in pixels. None when no region is large enough."""
    pixels = frame.astype(np.float32)
    distance = np.linalg.norm(pixels - render_background(scene, frame.shape[0]), axis=-1)
    mask = largest_region(distance > foreground_threshold(scene))
    area = 0 if mask is None else int(mask.sum())
    if area < max(min_area, 1):
        return None
    side = math.sqrt(area) / frame.shape[0]
    return FoundObject(mask, _centroid(mask), side, pixels[mask].mean(0))


def largest_region(mask: np.ndarray) -> np.ndarray | None:
    """The largest 8-connected region of the boolean ``mask``; None when it is empty."""
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8),
                                                               connectivity=8)  # fmt: skip
    if count < 2:
        return None
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _path(states: list[tuple[float, float, float] | None]) -> float:
    """Length of the path through consecutive states; a step with a missing end counts 0."""
    steps = [math.dist(a, b) for a, b in itertools.pairwise(states) if a and b]
    return float(sum(steps))


def score_object(video: np.ndarray, scene: Scene) -> ObjectScore:
    """Score ``uint8 (f, s, s, 3)`` frames against ``scene`` with exact ground truth.

    Per frame: the output object (:func:`find_object`) against the true object. A frame
    without an object counts as a colour miss, IoU 0, distance :data:`MISSING_DISTANCE`, a
    colour change of 1, and no motion; so a frozen or vanished object scores badly.
    ``motion_ratio`` is NaN when the true object does not move (a single frame).
    """
    if video.ndim != 4 or video.shape[-1] != 3 or video.shape[1] != video.shape[2]:
        raise ValueError(f"expected square frames (f, s, s, 3), got {video.shape}")
    frames, size = video.shape[0], video.shape[1]
    palette = np.array(list(COLORS.values()), dtype=np.float32)
    target = list(COLORS).index(scene.color)
    hits, ious, distances, colors, found_path, true_path = [], [], [], [], [], []
    for n in range(frames):
        truth = truth_mask(scene, n, frames, size)
        true_center = _centroid(truth)
        true_path.append((*true_center, math.sqrt(truth.sum()) / size))
        found = find_object(video[n], scene, MIN_AREA * truth.sum())
        if found is None:
            hit, iou, distance, color, state = 0, 0.0, MISSING_DISTANCE, None, None
        else:
            hit = int(np.argmin(((palette - found.color) ** 2).sum(1)) == target)
            iou = _iou(found, scene, n, frames, true_center)
            distance = math.dist(found.center, true_center)
            color, state = found.color / 255, (*found.center, found.side)
        hits.append(hit)
        ious.append(iou)
        distances.append(distance)
        colors.append(color)
        found_path.append(state)
    return object_score(hits, ious, distances, colors, found_path, true_path)


def _iou(found: FoundObject, scene: Scene, n: int, frames: int, true_center) -> float:
    """IoU of the found mask with the true shape translated onto the found centroid."""
    cx, cy = scene.center(n, frames)
    dx, dy = found.center[0] - true_center[0], found.center[1] - true_center[1]
    moved = shape_mask(scene.shape, cx + dx, cy + dy, scene.size_at(n, frames), found.mask.shape[0])
    union = (moved | found.mask).sum()
    return float((moved & found.mask).sum() / union) if union else 0.0


def object_score(hits, ious, distances, colors, found_path, true_path) -> ObjectScore:
    """The per-frame findings of a scorer (colour hit, IoU, centre distance, colour or None,
    (x, y, side) path point) summarised; a missing colour counts as a full change."""
    changes = [float(np.abs(b - a).mean()) if a is not None and b is not None else 1.0
               for a, b in itertools.pairwise(colors)]  # fmt: skip
    truth_length = _path(true_path)
    return ObjectScore(
        color_accuracy=float(np.mean(hits)),
        shape_iou=float(np.mean(ious)),
        trajectory_error=float(np.mean(distances)),
        motion_ratio=_path(found_path) / truth_length if truth_length > 0 else float("nan"),
        color_flicker=float(np.mean(changes)) if changes else 0.0,
    )
