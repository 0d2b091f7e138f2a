"""Evaluating videos with the suite: one video, or a manifest of many with resumable results.

:func:`plan_jobs` decides, before any model loads, what each row is read as (frames, size) and
whether a stored result is still valid for it (:func:`~.inputs.result_key`: the video's content
and the settings); :func:`evaluate_jobs` evaluates the rest, appending each result to a
:class:`ResultsLog` as soon as it exists.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..results_log import ResultsLog
from .clip import ClipFeatures, clip_frame_allpairs, clip_frame_consistency, clip_text_score
from .flow import FlowEstimator, flow_metrics
from .inputs import file_digest, result_key, short_names
from .report import COLUMNS, markdown_table, plot_methods, write_csv

__all__ = [
    "COLUMNS",
    "Job",
    "ResultsLog",
    "evaluate_frames",
    "evaluate_jobs",
    "markdown_table",
    "plan_jobs",
    "plot_methods",
    "write_csv",
]

Reader = Callable[[str, int | None, tuple[int, int] | None], np.ndarray]
_KEEP_IN_MEMORY = 256 * 2**20  # decoded frames kept from the check to the evaluation (bytes)


def evaluate_frames(
    frames: np.ndarray,
    prompt: str | None,
    clip: ClipFeatures | None,
    flow: FlowEstimator,
    *,
    progress: bool | str = False,
) -> dict[str, float | None]:
    """All metrics of ``uint8 (f, h, w, 3)`` frames; CLIP ones are None without ``clip``;
    ``progress`` (True or a label) shows a bar over the frame pairs of the flow metrics."""
    scores: dict[str, float | None] = dict.fromkeys(COLUMNS)
    if clip is not None:
        embeds = clip.images(frames)
        if prompt:
            scores["clip_text"] = clip_text_score(clip.text([prompt])[0], embeds)
        scores["clip_frame"] = clip_frame_consistency(embeds)
        scores["clip_frame_allpairs"] = clip_frame_allpairs(embeds)
    scores.update(flow_metrics(frames, flow, progress=progress))
    return scores


@dataclass
class Job:
    """One row to evaluate: how its video is read, its result's key, and the stored result
    (``cached``) when one is still valid."""

    row: dict[str, str]
    frames: int | None  # frames read (None: all)
    size: tuple[int, int] | None  # (h, w) read (None: as stored)
    key: str
    cached: dict | None = None
    shape: tuple[int, int, int] | None = None  # (f, h, w) as read
    data: np.ndarray | None = field(default=None, repr=False)


def _read_checked(read: Reader, job: Job) -> np.ndarray:
    frames = read(job.row["video"], job.frames, job.size)
    if len(frames) < 2:
        raise ValueError(f"expected a video of at least 2 frames, {job.row['video']} has 1")
    job.shape = frames.shape[:3]
    return frames


def plan_jobs(
    rows: Sequence[dict[str, str]],
    references: dict[str, list[int]],
    read: Reader,
    *,
    frames: int | None,
    size: int | None,
    settings: dict[str, Any],
    done: dict[str, dict],
) -> list[Job]:
    """A :class:`Job` per row, every video read once (or found in ``done``) to check it.

    ``references`` maps the index of a reference row (a source) to the rows it is compared
    with: it is read at their frame count and size, unless ``frames`` / ``size`` say
    otherwise. Other rows are read with ``frames`` / ``size`` (None: as stored).
    """
    names = short_names([row["video"] for row in rows])
    digests: dict[str, str] = {}
    jobs: dict[int, Job] = {}
    kept = 0

    def job_for(i: int, n: int | None, hw: tuple[int, int] | None) -> Job:
        nonlocal kept
        row = {**rows[i], "name": names[i]}
        digest = digests.setdefault(row["video"], file_digest(row["video"]))
        key = result_key(digest, row, {**settings, "frames": n, "size": hw})
        job = Job(row, n, hw, key, done.get(key))
        if job.cached is not None:
            c = job.cached
            job.shape = (c["frames"], c["height"], c["width"])
        else:
            data = _read_checked(read, job)
            if kept + data.nbytes <= _KEEP_IN_MEMORY:
                job.data, kept = data, kept + data.nbytes
        return job

    square = None if size is None else (size, size)
    for i in range(len(rows)):
        if i not in references:
            jobs[i] = job_for(i, frames, square)
    for i, compared in references.items():
        f, h, w = jobs[compared[0]].shape
        jobs[i] = job_for(i, frames or f, square or (h, w))
    return [jobs[i] for i in range(len(rows))]


def evaluate_jobs(
    jobs: Sequence[Job],
    read: Reader,
    clip: ClipFeatures | None,
    flow: FlowEstimator,
    *,
    log: ResultsLog | None = None,
    progress: bool = True,
) -> list[dict]:
    """Each job's result (its stored one when valid), in order; new results go to ``log``
    as soon as they exist."""
    from tqdm.auto import tqdm

    todo = [job for job in jobs if job.cached is None]
    bar = tqdm(total=len(todo), desc="eval", unit="video", disable=not progress or len(todo) < 2)
    results = []
    for job in jobs:
        if job.cached is not None:
            results.append({**job.cached, "name": job.row["name"]})
            continue
        frames = job.data if job.data is not None else _read_checked(read, job)
        job.data = None
        label = f"flow {job.row['name']}" if progress else False
        scores = evaluate_frames(frames, job.row.get("prompt"), clip, flow, progress=label)
        f, h, w = frames.shape[:3]
        result = {**job.row, "frames": f, "height": h, "width": w, **scores, "key": job.key}
        if log is not None:
            log.append(result)
        results.append(result)
        bar.update(1)
    bar.close()
    return results
