"""``inr-smooth bench quality-sweep``: the quality benchmark over a range of one setting.

For each value of one numeric field of :class:`~inr_smooth.quality.QualitySettings` (λ =
``smooth_weight`` for ``tune:inr`` / ``tune:smoothvideo``, γ = ``inversion_weight`` for
``edit:inr``, or any other, e.g. ``tune_guidance_scale``), every selected method runs on the
same seeded clips (:func:`~inr_smooth.quality.run_cases`), and the sweep writes

* ``table.md`` -- one row per method and value, mean ± standard error over clips (for a
  lambda sweep also what lambda weighs: the tuning losses, :func:`weight_table`), then the
  paired differences of each value from the first (:func:`sweep_differences`);
* ``results.json`` -- settings, values, per-value per-clip scores and summaries;
* ``sweep.png`` -- smoothness (colour flicker, warp error) on x against alignment (colour
  accuracy, shape IoU) and motion (trajectory error, motion ratio) on y: one curve per method
  through the values, error bars over clips on both axes, each point labelled with its value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path

from ..scores import METRICS, markdown_table, paired_difference, summarize

__all__ = [
    "SWEEPABLE",
    "plot_sweep",
    "run_sweep",
    "sweep_differences",
    "sweep_table",
    "weight_table",
]

X_METRICS = ("color_flicker", "warp_error")
Y_METRICS = ("color_accuracy", "shape_iou", "trajectory_error", "motion_ratio")


def _sweepable() -> dict[str, type]:
    from ..quality import QualitySettings

    numeric = {"int": int, "float": float, "float | None": float}
    return {f.name: numeric[str(f.type)] for f in fields(QualitySettings)
            if str(f.type) in numeric and f.name != "seed"}  # fmt: skip


SWEEPABLE = tuple(_sweepable())


def check_param(param: str, values: Sequence[float]) -> list:
    """The values as the field's type; ValueError (one line) for an unknown field."""
    kinds = _sweepable()
    if param not in kinds:
        raise ValueError(f"--param must be one of {sorted(kinds)}, got {param!r}")
    if not values:
        raise ValueError("--values needs at least one value")
    kind = kinds[param]
    if kind is int and any(float(v) != int(float(v)) for v in values):
        raise ValueError(f"{param} takes whole numbers, got {list(values)}")
    return [kind(float(v)) if kind is int else float(v) for v in values]


def run_sweep(pairs, settings, methods: Sequence[str], param: str, values: Sequence[float],
              *, jobs: int = 1, progress: bool = True, log=None) -> list[dict]:  # fmt: skip
    """Per value: ``{"value", "settings", "cases", "summary"}`` (cases without videos);
    ``log``: :func:`~inr_smooth.quality.run_cases`'s, one for all the values."""
    from ..quality import run_cases

    out = []
    for value in check_param(param, values):
        at = replace(settings, **{param: value})
        cases = run_cases(pairs, at, jobs=jobs, progress=progress, methods=methods, log=log)
        out.append({"value": value, "settings": at.__dict__, "cases": cases,
                    "summary": summarize(cases)})  # fmt: skip
    return out


def _rows(points: list[dict], param: str) -> dict:
    rows = {}
    for method in points[0]["summary"]:
        if method == "source":
            continue
        for point in points:
            rows[f"{method} @ {param}={point['value']:g}"] = point["summary"][method]
    rows["source"] = points[0]["summary"]["source"]
    return rows


def sweep_differences(points: list[dict], param: str) -> dict[str, dict]:
    """Per method and value after the first: (mean, s.e.) of the per-clip difference from the
    method's output at the first value (the same clips: the error that decides)."""
    first = points[0]
    out = {}
    for method in (m for m in first["summary"] if m != "source"):
        for point in points[1:]:
            pairs = zip(point["cases"], first["cases"], strict=True)
            out[f"{method} @ {point['value']:g} - @ {first['value']:g}"] = paired_difference(
                [(now[method], then[method]) for now, then in pairs]
            )
    return out


def sweep_table(points: list[dict], param: str, title: str) -> str:
    n = len(points[0]["cases"])
    text = f"{title}\n\n{markdown_table(_rows(points, param), n)}"
    if len(points) > 1 and n > 1:
        text += (f"\nPaired differences from {param}={points[0]['value']:g} (mean ± standard "
                 "error of the per-clip difference):\n\n"
                 + markdown_table(sweep_differences(points, param), n, 4))  # fmt: skip
    if param == "smooth_weight" and any(_losses(points[0], m) for m in points[0]["summary"]):
        text += ("\nWhat lambda weighs (mean over clips of the tuning run's mean losses; the "
                 "smoothing loss unweighted):\n\n" + weight_table(points))
    return text


def _losses(point: dict, method: str) -> list[dict]:
    return [case[method]["losses"] for case in point["cases"] if "losses" in case.get(method, {})]


def weight_table(points: list[dict]) -> str:
    """Per method and lambda: the diffusion loss, the smoothing loss and lambda times the
    smoothing loss over the diffusion loss (per clip, then averaged over clips)."""
    lines = ["| method | lambda | diffusion loss | smoothing loss | lambda x smoothing / diffusion"
             " |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for method in points[0]["summary"]:
        for point in points:
            losses = _losses(point, method)
            if not losses:
                continue
            lam = point["value"]
            ratio = sum(lam * x["smoothing"] / x["diffusion"] for x in losses) / len(losses)
            diffusion = sum(x["diffusion"] for x in losses) / len(losses)
            smoothing = sum(x["smoothing"] for x in losses) / len(losses)
            lines.append(f"| {method} | {lam:g} | {diffusion:.4f} | {smoothing:.4f} | "
                         f"{ratio:.3g} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot_sweep(points: list[dict], param: str, path: Path, title: str) -> Path:
    """The figure of the module docstring (a PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..charts import save_figure

    methods = [m for m in points[0]["summary"] if m != "source"]
    fig, axes = plt.subplots(len(X_METRICS), len(Y_METRICS), squeeze=False,
                             figsize=(3.2 * len(Y_METRICS), 3.0 * len(X_METRICS) + 0.6),
                             layout="constrained")  # fmt: skip
    for row, x_metric in enumerate(X_METRICS):
        for col, y_metric in enumerate(Y_METRICS):
            ax = axes[row][col]
            for i, method in enumerate(methods):
                xs = [p["summary"][method][x_metric] for p in points]
                ys = [p["summary"][method][y_metric] for p in points]
                ax.errorbar([m for m, _ in xs], [m for m, _ in ys], xerr=[_se(s) for _, s in xs],
                            yerr=[_se(s) for _, s in ys], marker="o", markersize=3,
                            capsize=2, linewidth=1, color=f"C{i % 10}", label=method)  # fmt: skip
                for p, (x, _), (y, _) in zip(points, xs, ys, strict=True):
                    ax.annotate(f"{p['value']:g}", (x, y), fontsize=6, xytext=(2, 2),
                                textcoords="offset points")  # fmt: skip
            if METRICS[y_metric][1] == "one":
                ax.axhline(1.0, color="0.3", linestyle="--", linewidth=1)
            ax.set_xlabel(METRICS[x_metric][0], fontsize=8)
            ax.set_ylabel(METRICS[y_metric][0], fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"{title} (points: {param})", fontsize=9)
    return save_figure(fig, Path(path), plt)


def _se(value: float) -> float:
    return value if math.isfinite(value) else 0.0
