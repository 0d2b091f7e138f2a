"""Scores, summaries and tables of the synthetic comparison (``demo``, ``bench quality``).

Each output clip is scored against the scene it should show with exact ground truth
(:func:`~inr_smooth.synthetic.score_object`: appearance where the object is, position and motion
separately) and with the DIS optical-flow warp error of metric suite v2. Tables and charts show
motion beside smoothness, so that a frozen clip cannot pass for the smoothest one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .synthetic import MIN_AREA, Scene, score_object

__all__ = [
    "COMPARISONS",
    "DEFINITIONS",
    "METRICS",
    "markdown_table",
    "motion_notes",
    "paired_difference",
    "paired_differences",
    "score_video",
    "summarize",
]

# (method, its baseline): the differences that the paper's claims are about
COMPARISONS = (("tune:inr", "tune:none"), ("tune:smoothvideo", "tune:none"),
               ("edit:inr", "edit:plain"),
               ("tune:controlvideo+inr", "tune:controlvideo"),
               ("edit:video-p2p+inr", "edit:video-p2p"))  # fmt: skip
# name -> (column title, better: "higher" | "lower" | "one" (closest to 1) | None); in table
# order: appearance, smoothness, then motion right beside it
METRICS: dict[str, tuple[str, str | None]] = {
    "color_accuracy": ("colour acc. ↑", "higher"),
    "shape_iou": ("shape IoU ↑", "higher"),
    "color_flicker": ("colour flicker ↓", "lower"),
    "warp_error": ("warp err. (DIS) ↓", "lower"),
    "motion_ratio": ("motion ratio →1", "one"),
    "trajectory_error": ("trajectory err. ↓", "lower"),
    "flow_magnitude": ("flow (px)", None),
}
_OBJECT = (
    "the output object of a frame: the largest 8-connected region of pixels that differ from "
    "the scene's known background by more than half the distance between the target colour "
    f"and the nearest background colour, covering at least {MIN_AREA:g} of the true object's "
    "area (else the frame has no object)"
)
DEFINITIONS = {
    "object": _OBJECT,
    "color_accuracy": "fraction of frames whose output object's mean colour is nearest (RGB, "
    "among the world's 8 colours) the target colour; a frame without an object is a miss",
    "shape_iou": "mean over frames of the IoU of the output object with the true shape moved "
    "onto the object's centroid (appearance only: position does not count); 0 without object",
    "color_flicker": "mean over consecutive frames of |change of the output object's mean "
    "colour| (RGB in [0, 1], mean over channels); a pair with a frame without object counts 1",
    "warp_error": "metric suite v2 warp error with OpenCV DIS flow (see inr-smooth eval)",
    "motion_ratio": "length of the path of the output object's (centroid x, centroid y, "
    "sqrt(area)) through the frames, over the same path of the true object (fractions of the "
    "frame side); 1 = moves as far as the target, near 0 = frozen or vanished, > 1 = jumps; "
    "steps with a frame without object add nothing",
    "trajectory_error": "mean over frames of the distance between the output object's "
    "centroid and the true object's, as a fraction of the frame side; a frame without object "
    "counts sqrt(2) (replaces v1's position_error, which used the target-coloured pixels)",
    "flow_magnitude": "mean DIS optical-flow length in pixels between consecutive frames "
    "over all pixels",
}


def score_video(video: np.ndarray, scene: Scene, flow=None) -> dict[str, float]:
    """:data:`METRICS` of ``uint8 (f, s, s, 3)`` frames against ``scene`` (a simple-split
    :class:`~inr_smooth.synthetic.Scene` or a rich-split
    :class:`~inr_smooth.synthetic_rich.RichScene`; DIS flow unless ``flow`` is given)."""
    from .metrics import DISFlow, flow_metrics
    from .synthetic_rich import RichScene, score_rich

    scorer = score_rich if isinstance(scene, RichScene) else score_object
    scores = scorer(video, scene).__dict__.copy()
    scores.update(flow_metrics(video, flow or DISFlow()))
    return {k: float(scores[k]) for k in METRICS}


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error) of ``values``; the error is NaN for one value, both for none."""
    if len(values) == 0:
        return float("nan"), float("nan")
    values = np.asarray(values, dtype=np.float64)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def _score(case: dict, method: str, metric: str) -> float:
    return case[method]["scores"].get(metric, float("nan"))


def summarize(cases: Sequence[dict[str, dict]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per method and metric: (mean, standard error of the mean) over cases."""
    return {
        method: {m: mean_se([_score(case, method, m) for case in cases]) for m in METRICS}
        for method in cases[0]
    }


def paired_differences(cases: Sequence[dict[str, dict]]) -> dict[str, dict[str, tuple]]:
    """Per comparison ``"a - b"`` of :data:`COMPARISONS` (those whose methods all cases have)
    and metric: (mean, standard error) of the per-case difference ``a - b``. The cases are
    shared, so this error is smaller than the two methods' errors combined: it is the one that
    says whether a method beats its baseline."""
    return {
        f"{a} - {b}": paired_difference([(case[a], case[b]) for case in cases])
        for a, b in COMPARISONS
        if all(a in case and b in case for case in cases)
    }


def paired_difference(pairs: Sequence[tuple[dict, dict]]) -> dict[str, tuple[float, float]]:
    """Per metric: (mean, standard error) of ``a - b`` over the ``(a, b)`` results (each with
    ``"scores"``) of the same clips."""
    return {
        m: mean_se([a["scores"].get(m, math.nan) - b["scores"].get(m, math.nan) for a, b in pairs])
        for m in METRICS
    }


def markdown_table(
    summary: dict[str, dict[str, tuple[float, float]]], n: int, digits: int = 3
) -> str:
    """Markdown table (one row per method, or per comparison of :func:`paired_differences`);
    with ``n > 1`` cells read ``mean ± s.e.``; ``digits`` after the decimal point."""
    head = "| method | " + " | ".join(title for title, _ in METRICS.values()) + " |"
    lines = [head, "|---|" + "---:|" * len(METRICS)]
    for method, values in summary.items():
        cells = []
        for metric in METRICS:
            mean, se = values[metric]
            cells.append(f"{mean:.{digits}f} ± {se:.{digits}f}" if n > 1 else f"{mean:.{digits}f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def motion_notes(summary: dict[str, dict[str, tuple[float, float]]]) -> list[str]:
    """One line per method whose mean motion is far from the target's: its smoothness scores
    are then not comparable with the others' (a frozen clip has no flicker)."""
    notes = []
    for method, values in summary.items():
        ratio = values["motion_ratio"][0]
        if not math.isfinite(ratio):
            continue
        if ratio < 0.5:
            notes.append(f"{method}: motion ratio {ratio:.2f}: the object moves less than half "
                         "as far as it should (nearly frozen), which by itself lowers flicker "
                         "and warp error")  # fmt: skip
        elif ratio > 2:
            notes.append(f"{method}: motion ratio {ratio:.2f}: the object travels more than "
                         "twice the target's path (it jumps back and forth)")  # fmt: skip
    return notes
