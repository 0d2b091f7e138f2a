"""Sample clips of the synthetic shapes world for the web UI, and captions read back as scenes.

A sample is a source :class:`~inr_smooth.synthetic.Scene` and a suggested edit of it. The UI
renders the sample with the frame count, stride and size of the job, so that the frames the
job reads are exactly the scene's frames ``0 .. frames - 1`` (:func:`render_sample`): the
output can then be scored against the edited scene's exact ground truth. An edit prompt that is
a caption of the world (:func:`scene_from_caption`) names that edited scene.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..synthetic import BACKGROUNDS, COLORS, MOTIONS, SHAPES, Scene, render

__all__ = ["SAMPLES", "Sample", "render_sample", "sample_by_caption", "scene_from_caption"]


@dataclass(frozen=True)
class Sample:
    scene: Scene  # the source clip
    edit: Scene  # a suggested edit of it

    @property
    def caption(self) -> str:
        return self.scene.caption


SAMPLES: tuple[Sample, ...] = (
    Sample(Scene(), Scene(color="green", shape="square")),  # the demo's clip and edit
    Sample(
        Scene(color="yellow", shape="square", motion="down", background_color="purple"),
        Scene(color="white", shape="diamond", motion="down", background_color="purple"),
    ),
    Sample(
        Scene(
            color="orange",
            shape="triangle",
            motion="growing",
            background_color="black",
            background="striped",
        ),
        Scene(
            color="blue",
            shape="circle",
            motion="growing",
            background_color="black",
            background="striped",
        ),
    ),
)


def sample_by_caption(caption: str) -> Sample:
    for sample in SAMPLES:
        if sample.caption == caption:
            return sample
    known = "; ".join(s.caption for s in SAMPLES)
    raise ValueError(f"unknown sample {caption!r} (expected one of: {known})")


def render_sample(scene: Scene, path: Path, *, frames: int, stride: int, size: int) -> Path:
    """Write the clip that a job reading ``frames`` frames with ``stride`` from index 0 sees as
    the scene's ``frames`` frames: ``(frames - 1) * stride + 1`` frames, as a folder of PNGs
    (``path`` without a suffix: exact, and every frame kept, where a GIF merges repeated ones)
    or any file :func:`~inr_smooth.video_io.write_video` writes."""
    from ..video_io import write_video

    if frames < 2 or stride < 1:
        raise ValueError(f"expected frames >= 2 and stride >= 1, got {frames}, {stride}")
    if size < 8 or size % 8:
        raise ValueError(f"size must be a positive multiple of 8 pixels, got {size}")
    return write_video(path, render(scene, (frames - 1) * stride + 1, size))


_CAPTION = re.compile(
    rf"^an? (?P<color>{'|'.join(COLORS)}) (?P<shape>{'|'.join(SHAPES)}) "
    rf"(?:moving (?P<motion>{'|'.join(m for m in MOTIONS if m != 'growing')})|(?P<growing>growing))"
    rf" on an? (?P<striped>striped )?(?P<bg>{'|'.join(COLORS)}) background$"
)


def scene_from_caption(caption: str, like: Scene | None = None) -> Scene | None:
    """The scene a caption of the world describes (``Scene.caption`` read back), with the size
    and travel of ``like``; None when the text is no such caption or names an impossible scene
    (object and background of one colour)."""
    match = _CAPTION.match(" ".join(caption.lower().split()).rstrip("."))
    if match is None:
        return None
    fields = {
        "color": match["color"],
        "shape": match["shape"],
        "motion": "growing" if match["growing"] else match["motion"],
        "background_color": match["bg"],
        "background": BACKGROUNDS[1] if match["striped"] else BACKGROUNDS[0],
    }
    try:
        return replace(like, **fields) if like is not None else Scene(**fields)
    except ValueError:
        return None
