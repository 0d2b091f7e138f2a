"""Evaluating videos with the suite: one video, or a manifest of many with resumable results."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .clip import ClipFeatures, clip_frame_allpairs, clip_frame_consistency, clip_text_score
from .flow import FlowEstimator, flow_metrics

__all__ = [
    "COLUMNS",
    "evaluate_frames",
    "evaluate_rows",
    "markdown_table",
    "plot_methods",
    "read_manifest",
    "with_source_rows",
    "write_csv",
]

COLUMNS = ("clip_text", "clip_frame", "clip_frame_allpairs", "warp_error", "flow_magnitude")


def evaluate_frames(
    frames: np.ndarray, prompt: str | None, clip: ClipFeatures | None, flow: FlowEstimator
) -> dict[str, float | None]:
    """All metrics of ``uint8 (f, h, w, 3)`` frames; CLIP ones are None without ``clip``."""
    scores: dict[str, float | None] = dict.fromkeys(COLUMNS)
    if clip is not None:
        embeds = clip.images(frames)
        if prompt:
            scores["clip_text"] = clip_text_score(clip.text([prompt])[0], embeds)
        scores["clip_frame"] = clip_frame_consistency(embeds)
        scores["clip_frame_allpairs"] = clip_frame_allpairs(embeds)
    scores.update(flow_metrics(frames, flow))
    return scores


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows with ``video``, ``prompt`` and optional ``method``, ``source`` from CSV / JSON / YAML.

    Relative video paths are taken relative to the manifest's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    elif path.suffix.lower() in (".json", ".yaml", ".yml"):
        import yaml

        rows = yaml.safe_load(path.read_text())  # JSON is YAML
        rows = rows.get("videos", rows) if isinstance(rows, dict) else rows
    else:
        raise ValueError(f"expected a .csv, .json or .yaml manifest, got {path.name}")
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"expected a non-empty list of rows in {path}")
    out = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("video") or not row.get("prompt"):
            raise ValueError(f"{path}: row {i} needs 'video' and 'prompt', got {row!r}")
        clean = {k: str(v) for k, v in row.items() if v not in (None, "")}
        for key in ("video", "source"):
            if key in clean and not Path(clean[key]).is_absolute():
                clean[key] = str(path.parent / clean[key])
        out.append(clean)
    return out


def with_source_rows(rows: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """``rows`` preceded by one reference row (method ``source``) per distinct ``source``
    video, scored against the prompt of the first row that names it."""
    sources: dict[str, dict[str, str]] = {}
    for row in rows:
        if row.get("source") and row["source"] not in sources:
            sources[row["source"]] = {
                "video": row["source"],
                "prompt": row.get("prompt", ""),
                "method": "source",
            }
    return [*sources.values(), *rows]


def evaluate_rows(
    rows: Sequence[dict[str, str]],
    read: Callable[[str], np.ndarray],
    clip: ClipFeatures | None,
    flow: FlowEstimator,
    *,
    results_path: Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Evaluate each row's video; with ``results_path`` (JSON lines) every result is appended
    as soon as it exists and rows already there are not evaluated again (resume)."""
    from tqdm.auto import tqdm

    done = _read_results(results_path) if results_path else {}
    results = []
    for row in tqdm(rows, desc="eval", unit="video", disable=not progress or len(rows) < 2):
        key = _key(row)
        if key in done:
            results.append(done[key])
            continue
        result = {**row, **evaluate_frames(read(row["video"]), row.get("prompt"), clip, flow)}
        if results_path:
            _append(results_path, result)
        results.append(result)
    return results


def _key(row: dict) -> str:
    return json.dumps([row.get("video"), row.get("prompt"), row.get("method")])


def _read_results(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    results = {}
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash: evaluate that video again
            continue
        results[_key(entry)] = entry
    return results


def _append(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cut = path.is_file() and path.stat().st_size and not path.read_bytes().endswith(b"\n")
    with path.open("a") as handle:
        handle.write(("\n" if cut else "") + json.dumps(result) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def _cell(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def markdown_table(results: Sequence[dict]) -> str:
    """One row per video (with its method, if given)."""
    head = "| video | method | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|---|---|" + "---:|" * len(COLUMNS)]
    for r in results:
        cells = " | ".join(_cell(r.get(c)) for c in COLUMNS)
        lines.append(f"| {Path(r['video']).name} | {r.get('method', '')} | {cells} |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, results: Sequence[dict]) -> None:
    keys = ["video", "prompt", "method", "source", *COLUMNS]
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
    os.replace(tmp, path)


def plot_methods(path: Path, results: Sequence[dict]) -> Path:
    """Bar chart of each metric's mean per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = sorted({r.get("method", "") or "(none)" for r in results})
    columns = [c for c in COLUMNS if any(r.get(c) is not None for r in results)]
    fig, axes = plt.subplots(1, len(columns), figsize=(3 * len(columns), 3.4), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        means = []
        for method in methods:
            values = [r[column] for r in results if (r.get("method", "") or "(none)") == method
                      and r.get(column) is not None]  # fmt: skip
            means.append(float(np.mean(values)) if values else 0.0)
        ax.bar(range(len(methods)), means, color=[f"C{i}" for i in range(len(methods))])
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
        ax.set_title(column, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path
