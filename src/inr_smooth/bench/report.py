"""Benchmark reports: markdown tables and PNG plots of time and memory against frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..charts import save_figure

__all__ = ["plot_scaling", "tune_step_table"]


def tune_step_table(reports: Sequence[dict]) -> str:
    """One markdown table of the cases of one or more tune-step reports."""
    first = reports[0]
    lines = [
        f"Tune-step benchmark: model `{first['settings']['model']}`, device {first['device']}, "
        f"precision {first['settings']['mixed_precision']}, gradient checkpointing "
        f"{first['settings']['gradient_checkpointing']}; memory = {first['memory_kind']}; "
        f"median of {first['settings']['repeats']} interleaved rounds.",
        "",
        "| frames | size | smoothing | step (s) | time / none | peak memory (MB) "
        "| memory / none | TFLOP / step | TFLOP/s |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for report in reports:
        for c in report["cases"]:
            lines.append(
                f"| {c['frames']} | {c['size']} | {c['smoothing']} | {c['median_step_s']:.4f} "
                f"| {c['time_ratio_to_none']:.3f} | {c['peak_memory_mb']:.0f} "
                f"| {c['memory_ratio_to_none']:.4f} | {c['step_tflop']:.3f} "
                f"| {c['achieved_tflops']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot_scaling(reports: Sequence[dict], path: Path) -> Path:
    """Step time and peak memory against frames, one line per smoothing mode and size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    series: dict[tuple[str, int], list[dict]] = {}
    for report in reports:
        for c in report["cases"]:
            series.setdefault((c["smoothing"], c["size"]), []).append(c)
    for (mode, size), cases in sorted(series.items()):
        cases.sort(key=lambda c: c["frames"])
        frames = [c["frames"] for c in cases]
        label = f"{mode}, {size} px"
        axes[0].plot(frames, [c["median_step_s"] for c in cases], marker="o", label=label)
        axes[1].plot(frames, [c["peak_memory_mb"] for c in cases], marker="o", label=label)
    axes[0].set(xlabel="frames", ylabel="median step time (s)", title="time per tuning step")
    axes[1].set(xlabel="frames", ylabel="peak memory (MB)", title="peak memory")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"model {reports[0]['settings']['model']} on {reports[0]['device']}")
    fig.tight_layout()
    return save_figure(fig, Path(path), plt, dpi=120)
