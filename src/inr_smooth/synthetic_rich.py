"""The "rich" split of the synthetic world: textures, two objects, occlusion, a camera pan and
scale change, each with exact per-frame ground truth.

A :class:`RichScene` has a *subject* (the object an edit changes) and an *other* object, each a
shape with a texture (plain, striped, checkered) moving on a straight line and growing or
shrinking at a constant rate; their paths cross in the middle of the clip, and one passes in
front of the other (``front``). The background is plain, striped, checkered or a blocky noise,
drawn in world coordinates and seen through a camera that pans over the clip, so every
background pixel moves. Everything is computed analytically at pixel centres, at any size, so
:func:`rich_truth` gives each frame's exact amodal and visible masks, label map, centres, sizes
and the camera offset; :func:`score_rich` scores the subject of an output against it as
:func:`~inr_smooth.synthetic.score_object` does in the simple split (whose scenes this module
leaves untouched).

Tones: a plain texture is its colour; striped / checkered textures alternate the colour with
its *pale* tone (``0.6 c + 51``). Scenes whose subject, other object and background share a
rounded tone are refused, so every pixel's owner can be read from its colour.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields, replace

import numpy as np

from .synthetic import (
    COLORS,
    MIN_AREA,
    MISSING_DISTANCE,
    SHAPES,
    ObjectScore,
    _centroid,
    largest_region,
    object_score,
    shape_mask,
)

__all__ = [
    "BACKGROUND_TEXTURES",
    "OBJECT_TEXTURES",
    "RichScene",
    "RichTruth",
    "random_rich_scene",
    "render_rich",
    "rich_edit_of",
    "rich_truth",
    "score_rich",
    "tones",
]

OBJECT_TEXTURES = ("plain", "striped", "checkered")
BACKGROUND_TEXTURES = ("plain", "striped", "checkered", "noise")
OTHER_SCALE = 0.55  # the other object's size, as a fraction of the subject's in every frame


def pale(color: np.ndarray) -> np.ndarray:
    return color * 0.6 + 0.4 * 128


def tones(color: str, texture: str) -> np.ndarray:
    """The float32 ``(k, 3)`` tones a texture of ``color`` is drawn with."""
    c = np.array(COLORS[color], dtype=np.float32)
    return c[None] if texture == "plain" else np.stack([c, pale(c)])


def _rounded(tone_set: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(int(v) for v in t) for t in tone_set.round()}


@dataclass(frozen=True)
class RichScene:
    """One clip of the rich world. Positions are frame fractions; ``*_start`` / ``*_end`` the
    object's centre in the first and last frame, ``*_radius`` its half-size in the first and
    ``*_scale`` its size in the last over the first. ``pan`` is the camera's travel over the
    clip (x, y); ``texture_seed`` draws the noise background."""

    subject_color: str = "red"
    subject_shape: str = "circle"
    subject_texture: str = "striped"
    subject_start: tuple[float, float] = (0.3, 0.45)
    subject_end: tuple[float, float] = (0.7, 0.5)
    subject_radius: float = 0.16
    subject_scale: float = 1.0
    other_color: str = "yellow"
    other_shape: str = "square"
    other_texture: str = "plain"
    other_start: tuple[float, float] = (0.7, 0.55)
    other_end: tuple[float, float] = (0.3, 0.5)
    front: str = "other"  # which object passes in front: "subject" | "other"
    background_color: str = "blue"
    background: str = "checkered"
    pan: tuple[float, float] = (0.25, 0.0)
    texture_seed: int = 0

    def __post_init__(self):
        for name, value, allowed in (
            ("subject_color", self.subject_color, COLORS),
            ("other_color", self.other_color, COLORS),
            ("background_color", self.background_color, COLORS),
            ("subject_shape", self.subject_shape, SHAPES),
            ("other_shape", self.other_shape, SHAPES),
            ("subject_texture", self.subject_texture, OBJECT_TEXTURES),
            ("other_texture", self.other_texture, OBJECT_TEXTURES),
            ("background", self.background, BACKGROUND_TEXTURES),
            ("front", self.front, ("subject", "other")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {sorted(allowed)}, got {value!r}")
        sets = [_rounded(t) for t in self.tone_sets()]
        if any(a & b for a, b in itertools.combinations(sets, 2)):
            raise ValueError(
                "the subject, the other object and the background must not share a tone, got "
                f"{self.subject_color}/{self.other_color}/{self.background_color}"
            )
        if not 0 < self.subject_radius < 0.5 or self.subject_scale <= 0:
            raise ValueError(f"expected 0 < subject_radius < 0.5 and subject_scale > 0, got "
                             f"{self.subject_radius}, {self.subject_scale}")  # fmt: skip

    # the simple split's names for the subject, so generic code can read them
    @property
    def color(self) -> str:
        return self.subject_color

    @property
    def shape(self) -> str:
        return self.subject_shape

    def tone_sets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tones of (subject, other object, background)."""
        background = "plain" if self.background == "plain" else "striped"  # both: c and pale
        return (tones(self.subject_color, self.subject_texture),
                tones(self.other_color, self.other_texture),
                tones(self.background_color, background))  # fmt: skip

    def edited(self, **changes) -> RichScene:
        """The same clip with other subject attributes: ``color``, ``shape``, ``texture`` (or
        any field by its own name)."""
        renamed = {("subject_" + k if k in ("color", "shape", "texture") else k): v
                   for k, v in changes.items()}  # fmt: skip
        return replace(self, **renamed)

    @property
    def caption(self) -> str:
        return (f"{_describe(self, 'subject')} and {_describe(self, 'other')} on a "
                f"{_background_words(self)} background, the camera panning "
                f"{_direction(self.pan)}")  # fmt: skip

    def state(self, which: str, n: int, frames: int) -> tuple[float, float, float]:
        """Centre ``(x, y)`` and half-size of ``"subject"`` or ``"other"`` at frame ``n``."""
        t = n / max(frames - 1, 1)
        start, end = getattr(self, f"{which}_start"), getattr(self, f"{which}_end")
        size = self.subject_radius * self.subject_scale**t
        if which == "other":
            size *= OTHER_SCALE
        return start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t, size

    def camera(self, n: int, frames: int) -> tuple[float, float]:
        """The camera's offset at frame ``n``: the background point seen at frame position
        ``(u, v)`` is world ``(u + x, v + y)``."""
        progress = n / max(frames - 1, 1) - 0.5
        return self.pan[0] * progress, self.pan[1] * progress


def _direction(delta) -> str:
    dx, dy = delta
    if abs(dx) >= abs(dy):
        return "right" if dx >= 0 else "left"
    return "down" if dy > 0 else "up"


def _describe(scene: RichScene, which: str) -> str:
    texture = getattr(scene, f"{which}_texture")
    words = f"a {getattr(scene, f'{which}_color')} "
    words += "" if texture == "plain" else f"{texture} "
    words += getattr(scene, f"{which}_shape")
    start, end = getattr(scene, f"{which}_start"), getattr(scene, f"{which}_end")
    words += f" moving {_direction((end[0] - start[0], end[1] - start[1]))}"
    if scene.subject_scale > 1.25:
        words += " and growing"
    elif scene.subject_scale < 0.8:
        words += " and shrinking"
    return words


def _background_words(scene: RichScene) -> str:
    texture = {"plain": "", "noise": "speckled "}.get(scene.background, f"{scene.background} ")
    return f"{texture}{scene.background_color}"


# ----------------------------------------------------------------------------- rendering
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size) + 0.5) / size
    return np.meshgrid(coords, coords)  # x, y of every pixel centre


def _pattern(texture: str, x: np.ndarray, y: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Boolean: which pixels take the pale tone (x, y in the texture's own coordinates)."""
    ix, iy = np.floor(x / cell).astype(np.int64), np.floor(y / cell).astype(np.int64)
    if texture == "plain":
        return np.zeros(x.shape, dtype=bool)
    if texture == "striped":
        return ix % 2 == 1
    if texture == "checkered":
        return (ix + iy) % 2 == 1
    if texture == "noise":  # a fixed hash of the cell: the same world point, the same tone
        h = (ix * 73856093) ^ (iy * 19349663) ^ (seed * 83492791 + 12345)
        return ((h * 2654435761) & 0xFFFFFFFF) >> 15 & 1 == 1
    raise ValueError(f"unknown texture {texture!r}")


def _paint(canvas: np.ndarray, mask: np.ndarray, color: str, pattern: np.ndarray) -> None:
    c = np.array(COLORS[color], dtype=np.float32)
    canvas[mask & ~pattern] = c
    canvas[mask & pattern] = pale(c)


def _background(scene: RichScene, n: int, frames: int, size: int) -> np.ndarray:
    x, y = _pixel_grid(size)
    cx, cy = scene.camera(n, frames)
    cell = {"striped": 1 / 6, "checkered": 1 / 8, "noise": 1 / 16}.get(scene.background, 1.0)
    canvas = np.empty((size, size, 3), dtype=np.float32)
    pattern = _pattern(scene.background, x + cx, y + cy, cell, scene.texture_seed)
    _paint(canvas, np.ones((size, size), dtype=bool), scene.background_color, pattern)
    return canvas


def _object_layer(scene: RichScene, which: str, n: int, frames: int, size: int,
                  shift=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The object's amodal mask and its texture pattern (object-local coordinates)."""
    cx, cy, r = scene.state(which, n, frames)
    cx, cy = cx + shift[0], cy + shift[1]
    mask = shape_mask(getattr(scene, f"{which}_shape"), cx, cy, r, size)
    x, y = _pixel_grid(size)
    pattern = _pattern(getattr(scene, f"{which}_texture"), x - cx + 8 * r, y - cy + 8 * r,
                       r / 2, 0)  # fmt: skip
    return mask, pattern


def _order(scene: RichScene) -> tuple[str, str]:
    """(back, front)."""
    return ("other", "subject") if scene.front == "subject" else ("subject", "other")


@dataclass(frozen=True)
class RichTruth:
    """Exact ground truth of one frame. ``label``: 0 background, 1 subject, 2 other object;
    masks are boolean ``(s, s)``; states are ``(x, y, half-size)`` in frame fractions."""

    label: np.ndarray
    amodal: dict[str, np.ndarray]
    visible: dict[str, np.ndarray]
    states: dict[str, tuple[float, float, float]]
    camera: tuple[float, float]


def rich_truth(scene: RichScene, n: int, frames: int, size: int, shift=(0.0, 0.0)) -> RichTruth:
    """The ground truth of frame ``n`` (``shift`` moves both objects, for IoU)."""
    back, front = _order(scene)
    amodal = {w: _object_layer(scene, w, n, frames, size, shift)[0] for w in (back, front)}
    visible = {back: amodal[back] & ~amodal[front], front: amodal[front]}
    label = np.zeros((size, size), dtype=np.int8)
    label[visible["subject"]], label[visible["other"]] = 1, 2
    states = {w: scene.state(w, n, frames) for w in ("subject", "other")}
    return RichTruth(label, amodal, visible, states, scene.camera(n, frames))


def _frame(scene: RichScene, n: int, frames: int, size: int, *, subject: bool) -> np.ndarray:
    canvas = _background(scene, n, frames, size)
    for which in _order(scene):
        if which == "subject" and not subject:
            continue
        mask, pattern = _object_layer(scene, which, n, frames, size)
        _paint(canvas, mask, getattr(scene, f"{which}_color"), pattern)
    return canvas


def render_rich(scene: RichScene, frames: int = 8, size: int = 64) -> np.ndarray:
    """The clip as ``uint8 (f, size, size, 3)``."""
    if frames < 1 or size < 8:
        raise ValueError(f"need frames >= 1 and size >= 8, got frames={frames}, size={size}")
    return np.stack([_frame(scene, n, frames, size, subject=True).round().astype(np.uint8)
                     for n in range(frames)])  # fmt: skip


# ----------------------------------------------------------------------------- scenes
def _in_frame(rng: np.random.Generator, margin: float) -> tuple[float, float]:
    return tuple(float(v) for v in rng.uniform(margin, 1 - margin, size=2))


def _clip(point, margin: float) -> tuple[float, float]:
    return tuple(float(np.clip(v, margin, 1 - margin)) for v in point)


def random_rich_scene(rng: np.random.Generator) -> RichScene:
    """A scene with attributes drawn at random: three colours whose tones differ, crossing
    paths (the other object runs the subject's path backwards, offset by less than the
    subject's size, so that they overlap mid-clip), a random front, pan and scale."""
    while True:
        subject, other, background = (str(c) for c in rng.choice(list(COLORS), 3, replace=False))
        radius = float(rng.uniform(0.12, 0.18))
        scale = float(rng.choice([1.0, 1.0, 1.5, 0.7]))
        margin = radius * max(scale, 1.0) + 0.02
        start, end = _in_frame(rng, margin), _in_frame(rng, margin)
        offset = rng.uniform(-0.5, 0.5, size=2) * radius
        try:
            return RichScene(
                subject_color=subject, subject_shape=str(rng.choice(SHAPES)),
                subject_texture=str(rng.choice(OBJECT_TEXTURES)), subject_start=start,
                subject_end=end, subject_radius=radius, subject_scale=scale,
                other_color=other, other_shape=str(rng.choice(SHAPES)),
                other_texture=str(rng.choice(OBJECT_TEXTURES)),
                other_start=_clip(np.add(end, offset), margin),
                other_end=_clip(np.add(start, offset), margin),
                front=str(rng.choice(["subject", "other"])), background_color=background,
                background=str(rng.choice(BACKGROUND_TEXTURES)),
                pan=(float(rng.uniform(-0.4, 0.4)), float(rng.uniform(-0.15, 0.15))),
                texture_seed=int(rng.integers(0, 2**16)),
            )  # fmt: skip
        except ValueError:  # colours whose tones collide: draw again
            continue


def rich_edit_of(scene: RichScene, rng: np.random.Generator | None = None) -> RichScene:
    """The target of an edit: the subject in another colour (whose tones clash with neither
    the other object's nor the background's) and another shape."""
    rng = rng or np.random.default_rng(0)
    taken = (scene.subject_color, scene.other_color, scene.background_color)
    colors = [c for c in COLORS if c not in taken]
    shapes = [s for s in SHAPES if s != scene.subject_shape]
    for color in rng.permutation(colors):
        try:
            return scene.edited(color=str(color), shape=str(rng.choice(shapes)))
        except ValueError:
            continue
    raise ValueError(f"no colour left to edit {scene.caption!r} to")  # pragma: no cover


def scene_fields(scene: RichScene) -> dict:
    """The scene as plain JSON values."""
    return {f.name: (list(v) if isinstance(v := getattr(scene, f.name), tuple) else v)
            for f in fields(scene)}  # fmt: skip


# ----------------------------------------------------------------------------- scores
def _object_like(scene: RichScene) -> tuple[np.ndarray, np.ndarray]:
    """Tones ``(k, 3)`` and whether each is an object's (True: a colour of the world, or its
    pale tone, that is neither the other object's nor the background's) or the rest's."""
    _, other, background = scene.tone_sets()
    taken = {scene.other_color, scene.background_color}
    free = [c for c in COLORS if c not in taken]
    objects = np.concatenate([tones(c, "striped") for c in free])
    rest = np.concatenate([other, background])
    return np.concatenate([objects, rest]), np.arange(len(objects) + len(rest)) < len(objects)


def _found(frame: np.ndarray, rest: np.ndarray, scene: RichScene, min_area: float):
    """The largest region of ``frame`` that differs from ``rest`` (the scene without the
    subject) by more than :func:`_threshold` and whose pixels are nearest an object tone
    (:func:`_object_like`; so a misplaced other object or background is not the subject):
    (mask, centroid, side, mean colour) or None."""
    pixels = frame.astype(np.float32)
    palette, is_object = _object_like(scene)
    nearest = np.argmin(((pixels[..., None, :] - palette) ** 2).sum(-1), axis=-1)
    differs = np.linalg.norm(pixels - rest, axis=-1) > _threshold(scene)
    mask = largest_region(differs & is_object[nearest])
    area = 0 if mask is None else int(mask.sum())
    if area < max(min_area, 1):
        return None
    return mask, _centroid(mask), math.sqrt(area) / frame.shape[0], pixels[mask].mean(0)


def _largest(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected piece of ``mask`` (an occluder can cut a tip off the subject;
    the truth is read as the output is, so a perfect rendering scores exactly)."""
    largest = largest_region(mask)
    return mask if largest is None else largest


def _threshold(scene: RichScene) -> float:
    """Half the least RGB distance between a subject tone and a tone of the rest."""
    subject, other, background = scene.tone_sets()
    rest = np.concatenate([other, background])
    return 0.5 * float(np.linalg.norm(subject[:, None] - rest[None], axis=-1).min())


def score_rich(video: np.ndarray, scene: RichScene) -> ObjectScore:
    """Score the subject of ``uint8 (f, s, s, 3)`` frames against ``scene``, as
    :func:`~inr_smooth.synthetic.score_object` does, against the subject's *visible* part:
    the output subject is the largest region that differs from the exact rendering of the
    scene without it (background and other object, where they should be) by more than
    :func:`_threshold` and looks like an object (:func:`_found`), covering at least
    ``MIN_AREA`` of the visible truth (its largest piece, :func:`_largest`); IoU is with that
    truth moved onto the region's centroid; colour is the region's mean (a textured subject's
    mean is still nearest its colour among the world's 8)."""
    if video.ndim != 4 or video.shape[-1] != 3 or video.shape[1] != video.shape[2]:
        raise ValueError(f"expected square frames (f, s, s, 3), got {video.shape}")
    frames, size = video.shape[0], video.shape[1]
    palette = np.array(list(COLORS.values()), dtype=np.float32)
    target = list(COLORS).index(scene.subject_color)
    hits, ious, distances, colors, found_path, true_path = [], [], [], [], [], []
    for n in range(frames):
        truth = _largest(rich_truth(scene, n, frames, size).visible["subject"])
        true_center = _centroid(truth)
        true_path.append((*true_center, math.sqrt(truth.sum()) / size))
        rest = _frame(scene, n, frames, size, subject=False).round()
        found = _found(video[n], rest, scene, MIN_AREA * truth.sum())
        if found is None:
            hits.append(0), ious.append(0.0), distances.append(MISSING_DISTANCE)
            colors.append(None), found_path.append(None)
            continue
        mask, center, side, color = found
        hits.append(int(np.argmin(((palette - color) ** 2).sum(1)) == target))
        shift = (center[0] - true_center[0], center[1] - true_center[1])
        moved = _largest(rich_truth(scene, n, frames, size, shift).visible["subject"])
        union = (moved | mask).sum()
        ious.append(float((moved & mask).sum() / union) if union else 0.0)
        distances.append(math.dist(center, true_center))
        colors.append(color / 255)
        found_path.append((*center, side))
    return object_score(hits, ious, distances, colors, found_path, true_path)
