"""The offline end-to-end demo behind ``inr-smooth demo`` and ``inr-smooth bench quality``.

The demo takes one synthetic clip ("a red circle moving right on a blue background"), asks for
an edit ("a green square ..."), runs every method of :mod:`inr_smooth.quality` on the shipped
inr-smooth-mini model, scores the outputs with exact ground truth, and writes into the output
folder: ``comparison.mp4`` / ``.gif`` (all outputs side by side, labelled), ``source.gif``
(the source clip, to try the other commands on), ``table.md``, ``chart.png`` and
``results.json``.

Output folders are written whole (:func:`~inr_smooth.outputs.atomic_folder`): a failure or
Ctrl-C leaves the previous output or nothing. A folder is replaced only when it is empty or a
previous output of the same kind (:func:`check_report_folder`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .charts import Panel, bar_panels
from .outputs import (
    WRITE_ERRNOS,
    OutputError,
    atomic_folder,
    check_output_dir,
    describe_write_error,
    write_json_atomic,
    write_text_atomic,
)
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
from .scores import DEFINITIONS, motion_notes
from .synthetic import Scene

__all__ = [
    "DEMO_FILES",
    "DEMO_SCENE",
    "DEMO_TARGET",
    "REPORT_FILES",
    "check_report_folder",
    "plot_scores",
    "run_demo",
    "write_report",
]

DEMO_SCENE = Scene(color="red", shape="circle", motion="right", background_color="blue")
DEMO_TARGET = DEMO_SCENE.edited(color="green", shape="square")
REPORT_FILES = ("table.md", "chart.png", "results.json")
DEMO_FILES = ("comparison.mp4", "comparison.gif", "source.gif", *REPORT_FILES)


def check_report_folder(folder: str | Path, files: Sequence[str] = REPORT_FILES,
                        what: str = "output folder") -> Path:  # fmt: skip
    """Raise OutputError unless ``folder`` can take a report: missing or empty, or a previous
    report (nothing but ``files``, with a ``results.json`` holding settings and cases), and
    writable. Torch-free: commands call it before any model loads."""
    folder = check_output_dir(folder, what=what)
    if not folder.is_dir() or not any(folder.iterdir()):
        return folder
    names = {p.name for p in folder.iterdir()}
    others = sorted(names - set(files))
    if not others and _is_report(folder / "results.json"):
        return folder
    detail = f"it holds {', '.join(others[:3])}" if others else "it has no readable results.json"
    raise OutputError(
        f"the {what} {folder} is not empty and not a previous output of this command ({detail}):"
        " choose another folder or empty it"
    )


def _is_report(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"settings", "cases"} <= set(data)


@contextmanager
def writing_folder(final: Path) -> Iterator[Path]:
    """:func:`~inr_smooth.outputs.atomic_folder` (replacing ``final``) whose write errors are
    one :class:`OutputError` naming ``final``, not the temporary folder."""
    made: list[Path] = []
    try:
        with atomic_folder(final, overwrite=True) as tmp:
            made.append(tmp)
            yield tmp
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise OutputError(describe_write_error(OSError(exc.errno, exc.strerror), final)) from None
    except OutputError as exc:
        message = str(exc).replace(str(made[0]), str(final)) if made else str(exc)
        raise OutputError(message) from None


# the chart's rows: smoothness with motion beside it, then appearance and the flow
CHART_ROWS = (("color_flicker", "warp_error", "motion_ratio", "trajectory_error"),
              ("color_accuracy", "shape_iou", "flow_magnitude", None))  # fmt: skip


def plot_scores(summary: dict, path: Path, title: str) -> Path:
    """One panel per metric (:data:`CHART_ROWS`), one bar per method (error bars when given);
    motion ratio with a dashed line at 1, the target's motion."""
    methods = list(summary)
    panels = []
    for metric in (m for row in CHART_ROWS for m in row):
        if metric is None:
            panels.append(None)
            continue
        column, better = METRICS[metric]
        means = [summary[m][metric][0] for m in methods]
        errors = [summary[m][metric][1] for m in methods]
        panels.append(Panel(column, means, errors, reference=1.0 if better == "one" else None))
    return bar_panels(path, methods, panels, title, columns=len(CHART_ROWS[0]))


def write_report(
    folder: Path, cases: Sequence[dict], settings: QualitySettings, title: str, extra: dict
) -> str:
    """Write ``table.md``, ``chart.png`` and ``results.json``; return the table (with more
    than one case, followed by the paired differences of each method from its baseline)."""
    from .metrics import METRIC_SUITE_VERSION
    from .runlog import environment

    summary = summarize(cases)
    text = f"{title}\n\n{markdown_table(summary, len(cases))}"
    notes = motion_notes(summary)
    if notes:
        text += "\nMotion:\n\n" + "".join(f"* {note}\n" for note in notes)
    differences = paired_differences(cases) if len(cases) > 1 else {}
    if differences:
        text += (
            "\nPaired differences (method - baseline on the same clips; mean ± standard error "
            f"of the per-clip difference):\n\n{markdown_table(differences, len(cases), 4)}"
        )
    write_text_atomic(folder / "table.md", text)
    plot_scores(summary, folder / "chart.png", title)
    scores = [{m: r["scores"] for m, r in case.items()} for case in cases]
    seconds = [{m: r.get("seconds") for m, r in case.items()} for case in cases]
    write_json_atomic(
        folder / "results.json",
        {
            "settings": settings.__dict__, "cases": scores, "seconds": seconds,
            "summary": summary, "paired_differences": differences, "motion_notes": notes,
            "metrics": {k: v[0] for k, v in METRICS.items()}, "definitions": DEFINITIONS,
            "metric_suite_version": METRIC_SUITE_VERSION, "environment": environment(),
            **extra,
        },
    )  # fmt: skip
    return text


def run_demo(
    settings: QualitySettings,
    output: Path,
    *,
    progress: bool = True,
    methods: Sequence[str] = METHODS,
) -> str:
    """Run the demo (``methods``, of :data:`~inr_smooth.quality.RUNNERS`) into ``output``
    (replaced whole when complete); returns the printed report."""
    from tqdm.auto import tqdm

    from .video_io import write_side_by_side, write_video

    output = check_report_folder(output, DEMO_FILES)
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
    title = (
        f'Source "{DEMO_SCENE.caption}" -> edit "{DEMO_TARGET.caption}"; model '
        f"{settings.model}, {settings.frames} frames at {settings.size} px, seed {settings.seed}. "
        "Scores against the edited scene's exact ground truth (the source row: the unedited "
        "clip against its own scene)."
    )
    scenes = {"scene": DEMO_SCENE.__dict__, "target": DEMO_TARGET.__dict__,
              "report": "inr-smooth demo"}  # fmt: skip
    with writing_folder(output) as tmp:
        for suffix in (".mp4", ".gif"):
            write_side_by_side(tmp / f"comparison{suffix}", videos, labels, fps=4, columns=3)
        write_video(tmp / "source.gif", result["source"]["video"], fps=4)  # to try the CLI on
        report = write_report(tmp, [result], settings, title, scenes)
    files = ", ".join(["comparison.gif", "source.gif", *REPORT_FILES])
    return f"{report}\nwrote {output}/comparison.mp4, {files}"
