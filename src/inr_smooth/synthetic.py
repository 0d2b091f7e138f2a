"""A synthetic text-to-video world with exact ground truth.

Clips show one coloured shape moving over a plain or striped background, with a caption such
as "a red circle moving right on a blue background". Everything is deterministic from a seed,
at any size and length. Because the generator knows the object's colour, shape and position in
every frame, edits can be scored exactly, without CLIP: see :func:`score_object`.
"""

from __future__ import annotations

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
    "ObjectScore",
    "Scene",
    "random_scene",
    "render",
    "score_object",
    "shape_mask",
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


def render(scene: Scene, frames: int = 8, size: int = 64) -> np.ndarray:
    """The clip as ``uint8 (f, size, size, 3)``."""
    if frames < 1 or size < 8:
        raise ValueError(f"need frames >= 1 and size >= 8, got frames={frames}, size={size}")
    bg = np.array(COLORS[scene.background_color], dtype=np.float32)
    canvas = np.broadcast_to(bg, (size, size, 3)).copy()
    if scene.background == "striped":
        stripes = ((np.arange(size) * 6 // size) % 2).astype(bool)
        canvas[:, stripes] = bg * 0.6 + 0.4 * 128
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    obj = np.array(COLORS[scene.color], dtype=np.float32)
    for n in range(frames):
        frame = canvas.copy()
        cx, cy = scene.center(n, frames)
        frame[shape_mask(scene.shape, cx, cy, scene.size_at(n, frames), size)] = obj
        out[n] = frame.round().astype(np.uint8)
    return out


@dataclass(frozen=True)
class ObjectScore:
    """Ground-truth scores of a generated clip against the scene it should show."""

    color_accuracy: float  # fraction of frames whose object region is nearest the target colour
    shape_iou: float  # mean IoU of the target-coloured pixels with the true shape mask
    position_error: float  # mean centroid distance, target-coloured pixels vs truth (/ size)
    color_flicker: float  # mean |change| of the object region's mean colour between frames (0-1)


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


def score_object(video: np.ndarray, scene: Scene) -> ObjectScore:
    """Score ``uint8 (f, h, w, 3)`` frames against ``scene`` with exact ground truth."""
    if video.ndim != 4 or video.shape[-1] != 3 or video.shape[1] != video.shape[2]:
        raise ValueError(f"expected square frames (f, s, s, 3), got {video.shape}")
    frames, size = video.shape[0], video.shape[1]
    palette_names = list(COLORS)
    palette = np.array([COLORS[c] for c in palette_names], dtype=np.float32)
    target = palette_names.index(scene.color)
    hits, ious, errors, means = [], [], [], []
    for n in range(frames):
        pix = video[n].astype(np.float32)
        cx, cy = scene.center(n, frames)
        truth = shape_mask(scene.shape, cx, cy, scene.size_at(n, frames), size)
        region = pix[truth].mean(0)
        means.append(region / 255)
        hits.append(int(np.argmin(((palette - region) ** 2).sum(1)) == target))
        nearest = np.argmin(((pix[..., None, :] - palette) ** 2).sum(-1), axis=-1)
        found = nearest == target
        union = (found | truth).sum()
        ious.append(float((found & truth).sum() / union) if union else 0.0)
        if found.any():
            errors.append(math.dist(_centroid(found), _centroid(truth)) / size)
        else:
            errors.append(math.sqrt(2))  # nothing of the target colour: the largest error
    flicker = float(np.abs(np.diff(np.stack(means), axis=0)).mean()) if frames > 1 else 0.0
    return ObjectScore(
        color_accuracy=float(np.mean(hits)),
        shape_iou=float(np.mean(ious)),
        position_error=float(np.mean(errors)),
        color_flicker=flicker,
    )
