"""``DIR/results.jsonl`` shared by all workers, and the report written from it (no torch).

Every line is one JSON entry: an output's scores (``status: "ok"``, ``key``: its result key)
or a job's failure (``status: "failed"``, ``job``, ``error``). Workers append whole batches
of lines under an exclusive ``flock`` with one ``write`` (``O_APPEND``), each preceded by a
newline when a crashed writer left a cut line, which reading then skips; nothing is ever
truncated or rewritten, so no worker can lose another's lines. The report (``table.md``,
``results.csv``, ``chart.png``) covers only the current grid's results: the file may hold
results of other grids run into the same folder, which stay valid for them.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

from ..outputs import write_errors, write_text_atomic
from ..scores import mean_se

__all__ = ["SUITE_COLUMNS", "TRUTH_COLUMNS", "BatchResults", "report_rows", "write_report"]

SUITE_COLUMNS = ("clip_text", "clip_frame", "clip_frame_allpairs", "warp_error", "flow_magnitude")
TRUTH_COLUMNS = ("color_accuracy", "shape_iou", "color_flicker", "motion_ratio",
                 "trajectory_error")  # fmt: skip
CSV_KEYS = ("key", "job", "label", "method", "name", "video", "source_prompt", "prompt",
            "params", "frames", "height", "width", "seconds", "output", *SUITE_COLUMNS,
            *TRUTH_COLUMNS)  # fmt: skip


class BatchResults:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def entries(self) -> list[dict]:
        if not self.path.is_file():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: that job is run again
                continue
            if isinstance(entry, dict) and entry.get("status") in ("ok", "failed"):
                entries.append(entry)
        return entries

    def append(self, entries: Sequence[dict]) -> None:
        data = "".join(json.dumps(e, default=str) + "\n" for e in entries).encode()
        with write_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # after a cut line
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)  # releases the lock


def report_rows(jobs, entries: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """The current grid's ok rows (in job order; the latest entry per key) and its failures
    (jobs without all their rows)."""
    ok = {e["key"]: e for e in entries if e["status"] == "ok"}
    failed = {e["job"]: e for e in entries if e["status"] == "failed"}
    rows, failures = [], []
    for job in jobs:
        found = [ok[k] for k in job.keys.values() if k in ok]
        rows.extend(found)
        if len(found) < len(job.keys) and job.id in failed:
            failures.append(failed[job.id])
    return rows, failures


def summarize(rows: Sequence[dict]) -> tuple[list[str], dict[str, dict]]:
    """The columns any row has, and per label: n and (mean, standard error) per column."""
    columns = [c for c in (*TRUTH_COLUMNS, *SUITE_COLUMNS)
               if any(r.get(c) is not None for r in rows)]  # fmt: skip
    summary: dict[str, dict] = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label]
        summary[label] = {"n": len(mine), **{
            c: mean_se([r[c] for r in mine if r.get(c) is not None]) for c in columns
        }}  # fmt: skip
    return columns, summary


def _cell(mean: float, se: float) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.4f}" + (f" ± {se:.4f}" if math.isfinite(se) else "")


def markdown_table(columns: Sequence[str], summary: dict[str, dict]) -> str:
    lines = ["| method | n | " + " | ".join(columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]  # fmt: skip
    for label, values in summary.items():
        cells = " | ".join(_cell(*values[c]) for c in columns)
        lines.append(f"| {label} | {values['n']} | {cells} |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: Sequence[dict]) -> Path:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=CSV_KEYS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "params": json.dumps(row.get("params", {}), sort_keys=True)})
    return write_text_atomic(path, buffer.getvalue())


def write_report(folder: Path, jobs, entries: Sequence[dict], title: str) -> str:
    """``table.md``, ``results.csv`` and ``chart.png`` of the current grid; returns the table
    (with the failed jobs listed under it)."""
    from ..charts import Panel, bar_panels

    rows, failures = report_rows(jobs, entries)
    columns, summary = summarize(rows)
    text = f"{title}\n\n" + (markdown_table(columns, summary) if rows else "(no results)\n")
    if failures:
        text += f"\n{len(failures)} failed job(s):\n\n" + "".join(
            f"* {f.get('describe', f['job'])}: {f.get('error', '?')}\n" for f in failures
        )
    table, chart = folder / "table.md", folder / "chart.png"
    unchanged = table.is_file() and chart.is_file() and table.read_text() == text
    write_text_atomic(table, text)
    write_csv(folder / "results.csv", rows)
    if rows and columns and not unchanged:  # (every worker writes it when the grid is done)
        labels = list(summary)
        panels = [Panel(c, [summary[lb][c][0] for lb in labels],
                        [summary[lb][c][1] for lb in labels],
                        reference=1.0 if c == "motion_ratio" else None) for c in columns]
        bar_panels(chart, labels, panels, title, columns=min(4, len(panels)))
    return text
