"""The offline end-to-end demo behind ``inr-smooth demo`` and ``inr-smooth bench quality``.

The demo takes one synthetic clip ("a red circle moving right on a blue background"), asks for
an edit ("a green square ..."), runs every method of :mod:`inr_smooth.quality` on the shipped
inr-smooth-mini model, scores the outputs with exact ground truth, and writes into the output
folder: ``comparison.mp4`` / ``.gif`` (all outputs side by side, labelled), ``table.md``,
``chart.png`` and ``results.json``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from .quality import (
    METHODS,
    METRICS,
    QualitySettings,
    markdown_table,
    one_torch_thread,
    paired_differences,
    run_case,
    summarize,
)
from .runlog import environment, write_json_atomic
from .synthetic import Scene

__all__ = ["DEMO_SCENE", "DEMO_TARGET", "plot_scores", "run_demo", "write_report"]

DEMO_SCENE = Scene(color="red", shape="circle", motion="right", background_color="blue")
DEMO_TARGET = DEMO_SCENE.edited(color="green", shape="square")


def plot_scores(summary: dict, path: Path, title: str) -> Path:
    """One bar group per metric, one bar per method (error bars when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = list(METRICS)
    methods = list(summary)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3 * len(metrics), 3.6))
    for ax, metric in zip(axes, metrics, strict=True):
        means = [summary[m][metric][0] for m in methods]
        errors = [summary[m][metric][1] for m in methods]
        errors = None if all(np.isnan(errors)) else errors
        ax.bar(
            range(len(methods)), means, yerr=errors, color=[f"C{i}" for i in range(len(methods))]
        )
        ax.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=7)
        ax.set_title(METRICS[metric][0], fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_report(
    folder: Path, cases: Sequence[dict], settings: QualitySettings, title: str, extra: dict
) -> str:
    """Write ``table.md``, ``chart.png`` and ``results.json``; return the table (with more
    than one case, followed by the paired differences of each method from its baseline)."""
    summary = summarize(cases)
    text = f"{title}\n\n{markdown_table(summary, len(cases))}"
    differences = paired_differences(cases) if len(cases) > 1 else {}
    if differences:
        text += (
            "\nPaired differences (method - baseline on the same clips; mean ± standard error "
            f"of the per-clip difference):\n\n{markdown_table(differences, len(cases), 4)}"
        )
    _write_text(folder / "table.md", text)
    plot_scores(summary, folder / "chart.png", title)
    scores = [{m: r["scores"] for m, r in case.items()} for case in cases]
    seconds = [{m: r.get("seconds") for m, r in case.items()} for case in cases]
    write_json_atomic(
        folder / "results.json",
        {
            "settings": settings.__dict__, "cases": scores, "seconds": seconds,
            "summary": summary, "paired_differences": differences,
            "metrics": {k: v[0] for k, v in METRICS.items()},
            "environment": environment(), **extra,
        },
    )  # fmt: skip
    return text


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def run_demo(
    settings: QualitySettings,
    output: Path,
    *,
    progress: bool = True,
    methods: Sequence[str] = METHODS,
) -> str:
    """Run the demo (``methods``, of :data:`~inr_smooth.quality.RUNNERS`) into ``output``;
    returns the printed report."""
    from tqdm.auto import tqdm

    from .video_io import write_side_by_side

    output = Path(output)
    bar = tqdm(total=len(methods), desc="demo", unit="method", disable=not progress)

    started: list[str] = []

    def next_method(method: str) -> None:
        if started:  # the previous method is done
            bar.update(1)
        started.append(method)
        bar.set_postfix_str(method)

    with one_torch_thread():  # the same table every run (see one_torch_thread)
        result = run_case(
            DEMO_SCENE, DEMO_TARGET, settings, methods=methods, on_method=next_method
        )
    bar.update(bar.total - bar.n)
    bar.close()
    videos = [r["video"] for r in result.values()]
    labels = list(result)
    for suffix in (".mp4", ".gif"):
        write_side_by_side(output / f"comparison{suffix}", videos, labels, fps=4, columns=3)
    title = (
        f'Source "{DEMO_SCENE.caption}" -> edit "{DEMO_TARGET.caption}"; model '
        f"{settings.model}, {settings.frames} frames at {settings.size} px, seed {settings.seed}. "
        "Scores against the edited scene's exact ground truth (the source row: the unedited "
        "clip against its own scene)."
    )
    scenes = {"scene": DEMO_SCENE.__dict__, "target": DEMO_TARGET.__dict__}
    report = write_report(output, [result], settings, title, scenes)
    return (
        report
        + f"\nwrote {output}/comparison.mp4, comparison.gif, table.md, chart.png, "
        + ("results.json")
    )
