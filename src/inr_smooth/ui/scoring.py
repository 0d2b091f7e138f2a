"""The web UI's metric table: the source and the output, scored as the demo and ``eval`` do.

* A synthetic sample whose edit prompt is a caption of the world: exact ground truth
  (:func:`~inr_smooth.scores.score_video`: the source against its scene, the output against the
  edited scene), with the DIS warp error and flow beside it.
* Otherwise the DIS warp error and flow of metric suite v2 (:func:`~inr_smooth.metrics.
  flow_metrics`).
* CLIP text alignment and frame consistency when a CLIP model is available (:class:`ClipSource`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from ..scores import METRICS
from ..synthetic import Scene

__all__ = ["ClipSource", "Table", "find_clip_model", "score_table"]

FLOW_COLUMNS = {"warp_error": METRICS["warp_error"][0], "flow_magnitude": "flow (px)"}
CLIP_COLUMNS = {"clip_text": "CLIP text ↑", "clip_frame": "CLIP frame ↑"}


@dataclass
class Table:
    """One row ``[metric, source value, output value]`` per metric under ``columns``;
    ``scores`` keeps the raw floats by video and metric key."""

    columns: list[str]
    rows: list[list]
    notes: list[str] = field(default_factory=list)
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def formatted(self, digits: int = 3) -> list[list[str]]:
        return [[row[0], *("–" if v is None else f"{v:.{digits}f}" for v in row[1:])]
                for row in self.rows]  # fmt: skip

    def to_dict(self) -> dict:
        return {"columns": self.columns, "scores": self.scores, "notes": self.notes}


def find_clip_model(name: str | None) -> str | None:
    """The CLIP model to score with: ``name`` when given, else the suite's default when it is
    in the local Hugging Face cache (no network), else None."""
    if name:
        return name
    from huggingface_hub import try_to_load_from_cache

    from ..metrics import DEFAULT_CLIP_MODEL

    cached = try_to_load_from_cache(DEFAULT_CLIP_MODEL, "config.json")
    return DEFAULT_CLIP_MODEL if isinstance(cached, str) else None


class ClipSource:
    """A CLIP model loaded once, on first use (several jobs may ask from several threads)."""

    def __init__(self, name: str | None):
        self.name = name
        self._features = None
        self._lock = threading.Lock()

    def get(self):
        if self.name is None:
            return None
        with self._lock:
            if self._features is None:
                from ..metrics import ClipFeatures

                self._features = ClipFeatures(self.name)
        return self._features


def score_table(
    source: np.ndarray,
    output: np.ndarray,
    *,
    source_prompt: str,
    edit_prompt: str,
    source_scene: Scene | None = None,
    target_scene: Scene | None = None,
    clip=None,
) -> Table:
    """The table of ``uint8 (f, h, w, 3)`` source and output frames (see the module doc)."""
    exact = source_scene is not None and target_scene is not None
    scores: dict[str, dict[str, float | None]] = {}
    for name, frames, prompt, scene in (("source", source, source_prompt, source_scene),
                                        ("output", output, edit_prompt, target_scene)):  # fmt: skip
        if exact:
            from ..scores import score_video

            values = score_video(frames, scene)  # DIS warp error and flow included
        else:
            from ..metrics import DISFlow, flow_metrics

            values = flow_metrics(frames, DISFlow())
        scores[name] = {**values, **_clip_scores(frames, prompt, clip)}
    keys = list(METRICS) if exact else list(FLOW_COLUMNS)
    titles = [METRICS[k][0] for k in keys] if exact else list(FLOW_COLUMNS.values())
    if clip is not None:
        keys += list(CLIP_COLUMNS)
        titles += list(CLIP_COLUMNS.values())
    rows = [[title, *(scores[name][k] for name in scores)]
            for title, k in zip(titles, keys, strict=True)]  # fmt: skip
    return Table(["metric", *scores], rows, _notes(exact, target_scene, clip), scores)

def _clip_scores(frames: np.ndarray, prompt: str, clip) -> dict[str, float | None]:
    if clip is None:
        return dict.fromkeys(CLIP_COLUMNS)
    from ..metrics import clip_frame_consistency, clip_text_score

    embeds = clip.images(frames)
    return {"clip_text": clip_text_score(clip.text([prompt])[0], embeds),
            "clip_frame": clip_frame_consistency(embeds)}  # fmt: skip


def _notes(exact: bool, target: Scene | None, clip) -> list[str]:
    if exact:
        notes = [f"exact ground truth: the output is scored against the scene "
                 f"“{target.caption}”, the source against its own scene"]  # fmt: skip
    else:
        notes = ["no ground truth (not a synthetic sample, or an edit prompt that is not a "
                 "caption of the synthetic world): DIS warp error and flow only"]  # fmt: skip
    if clip is None:
        notes.append("CLIP scores: no CLIP model here (start the UI with --clip-model PATH)")
    else:
        notes.append(f"CLIP: {getattr(clip, 'name', 'a CLIP model')}")
    return notes
