"""Reports of ``inr-smooth eval``: markdown table, CSV and a chart of means per method."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..outputs import write_text_atomic

__all__ = ["COLUMNS", "CSV_KEYS", "markdown_table", "plot_methods", "write_csv"]

COLUMNS = ("clip_text", "clip_frame", "clip_frame_allpairs", "warp_error", "flow_magnitude")
CSV_KEYS = ("video", "name", "prompt", "method", "source", "frames", "height", "width", *COLUMNS)


def _cell(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _name(result: dict) -> str:
    return result.get("name") or Path(result["video"]).name


def _read_as(result: dict) -> str:
    if "frames" not in result:
        return ""
    return f"{result['frames']} × {result['width']}×{result['height']}"


def markdown_table(results: Sequence[dict]) -> str:
    """One row per video (its name, method, and frames × width×height as evaluated)."""
    head = "| video | method | frames × size | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|---|---|---|" + "---:|" * len(COLUMNS)]
    for r in results:
        cells = " | ".join(_cell(r.get(c)) for c in COLUMNS)
        lines.append(f"| {_name(r)} | {r.get('method', '')} | {_read_as(r)} | {cells} |")
    return "\n".join(lines) + "\n"


def write_csv(path: str | Path, results: Sequence[dict]) -> Path:
    """The rows as CSV (:data:`CSV_KEYS`), written atomically; failures are OutputError."""
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=CSV_KEYS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(results)
    return write_text_atomic(path, buffer.getvalue())


def plot_methods(path: str | Path, results: Sequence[dict], title: str = "mean per method") -> Path:
    """Bar chart of each metric's mean per method."""
    from ..charts import Panel, bar_panels

    def method_of(r: dict) -> str:
        return r.get("method", "") or "(none)"

    methods = list(dict.fromkeys(method_of(r) for r in results))
    panels = []
    for column in COLUMNS:
        means = []
        for method in methods:
            values = [r[column] for r in results
                      if method_of(r) == method and r.get(column) is not None]  # fmt: skip
            means.append(float(np.mean(values)) if values else float("nan"))
        if any(np.isfinite(means)):
            panels.append(Panel(column, means))
    return bar_panels(path, methods, panels, title, columns=len(panels) or 1)
