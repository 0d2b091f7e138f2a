"""Bar charts of scores per method (demo, ``bench quality``, ``eval``): PNG, written atomically.

Horizontal bars, so method names of any length stay whole on the y axis; a grid of panels
(one per metric) under a title wrapped to the figure's width.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .outputs import write_errors

__all__ = ["Panel", "bar_panels", "save_figure"]


@dataclass(frozen=True)
class Panel:
    """One metric: a value (and optional error bar) per label; ``reference`` draws a dashed
    line at that value (e.g. 1 for a ratio whose target is 1)."""

    title: str
    values: Sequence[float]
    errors: Sequence[float] | None = None
    reference: float | None = None


def bar_panels(
    path: str | Path,
    labels: Sequence[str],
    panels: Sequence[Panel | None],
    title: str = "",
    *,
    columns: int = 4,
) -> Path:
    """Draw ``panels`` (each with one bar per label; None leaves its slot empty) row by row,
    ``columns`` to a row, into the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    columns = max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    label_chars = max((len(str(label)) for label in labels), default=1)
    width = 2.6 * columns + 0.07 * label_chars + 0.6
    height = rows * (0.9 + 0.28 * len(labels)) + 0.25 * _title_lines(title, width)
    fig, axes = plt.subplots(rows, columns, figsize=(width, height), squeeze=False,
                             layout="constrained")  # fmt: skip
    colors = [f"C{i % 10}" for i in range(len(labels))]
    positions = list(range(len(labels)))
    for index, ax in enumerate(axes.flat):
        panel = panels[index] if index < len(panels) else None
        if panel is None:
            ax.set_visible(False)
            continue
        values = [_finite(v) for v in panel.values]
        errors = None
        if panel.errors is not None and any(math.isfinite(e) for e in panel.errors):
            errors = [_finite(e) for e in panel.errors]
        ax.barh(positions, values, xerr=errors, color=colors, capsize=2)
        if panel.reference is not None:
            ax.axvline(panel.reference, color="0.3", linestyle="--", linewidth=1)
        ax.set_yticks(positions, labels if index % columns == 0 else [""] * len(labels),
                      fontsize=8)  # fmt: skip
        ax.invert_yaxis()  # the first label on top, as in the tables
        ax.set_title(panel.title, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    if title:
        fig.suptitle(textwrap.fill(title, _title_chars(width)), fontsize=9)
    return save_figure(fig, path, plt)


def _finite(value: float) -> float:
    return value if value is not None and math.isfinite(value) else 0.0


def _title_chars(width_inches: float) -> int:
    return max(40, int(width_inches * 14))  # characters of a 9-pt line


def _title_lines(title: str, width: float) -> int:
    return len(textwrap.wrap(title, _title_chars(width))) if title else 0


def save_figure(fig, path: Path, plt, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` atomically (a temporary file, then a rename) and close it."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        with write_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(tmp, dpi=dpi)
            os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
