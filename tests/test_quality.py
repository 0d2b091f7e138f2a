"""The synthetic comparison behind `inr-smooth demo` and `bench quality`, on a tiny model."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from inr_smooth.cli import main
from inr_smooth.quality import (
    METHODS,
    METRICS,
    QualitySettings,
    edit_of,
    markdown_table,
    paired_differences,
    random_cases,
    run_case,
    run_cases,
    score_video,
    summarize,
)
from inr_smooth.synthetic import Scene, render


def test_scores_of_the_true_clip_are_perfect_and_an_edit_changes_them():
    scene = Scene(color="red", shape="circle", motion="right")
    target = edit_of(scene)
    assert target.color not in (scene.color, scene.background_color)
    assert target.shape != scene.shape and target.motion == scene.motion
    clip = render(scene, 6, 32)
    own = score_video(clip, scene)
    assert own["color_accuracy"] == 1 and own["shape_iou"] == 1 and own["trajectory_error"] == 0
    assert own["motion_ratio"] == pytest.approx(1)
    assert own["flow_magnitude"] > 0.5  # the object moves
    assert score_video(clip, target)["color_accuracy"] == 0


def test_every_method_runs_on_a_tiny_model_and_the_report_summarises(tiny_sd_folder, tmp_path):
    settings = QualitySettings(model=str(tiny_sd_folder), frames=3, size=16, tune_steps=1,
                               inference_steps=2)  # fmt: skip
    ((scene, target),) = random_cases(1, seed=3)
    result = run_case(scene, target, settings)
    assert list(result) == ["source", *METHODS]
    for method in METHODS:
        video = result[method]["video"]
        assert video.shape == (3, 16, 16, 3) and video.dtype == np.uint8
        assert result[method]["seconds"] > 0
        assert set(result[method]["scores"]) >= {"color_accuracy", "warp_error"}
    # the tuned runs carry their mean losses (what lambda weighs), the edits none
    losses = result["tune:inr"]["losses"]
    assert losses["diffusion"] > 0 and losses["smoothing"] >= 0
    assert "losses" not in result["edit:inr"]
    summary = summarize([result, result])
    mean, se = summary["tune:inr"]["warp_error"]
    assert mean == pytest.approx(result["tune:inr"]["scores"]["warp_error"]) and se == 0
    table = markdown_table(summary, 2)
    assert table.count("\n") == 2 + 1 + len(METHODS) and "±" in table


def test_parallel_cases_give_the_same_scores_as_serial_ones(tiny_sd_folder):
    settings = QualitySettings(model=str(tiny_sd_folder), frames=3, size=16, tune_steps=1,
                               inference_steps=2)  # fmt: skip
    pairs = random_cases(2, seed=5)
    serial = run_cases(pairs, settings, progress=False)
    parallel = run_cases(pairs, settings, jobs=2, progress=False)
    assert [list(case) for case in serial] == [["source", *METHODS]] * 2
    strip = [{m: r["scores"] for m, r in case.items()} for case in serial]
    assert strip == [{m: r["scores"] for m, r in case.items()} for case in parallel]
    assert strip[0] != strip[1]  # two different clips


def test_demo_command_writes_its_outputs(tiny_sd_folder, tmp_path, capsys):
    out = tmp_path / "demo"
    code = main(["demo", "--model", str(tiny_sd_folder), "--frames", "3", "--size", "16",
                 "--tune-steps", "1", "--inference-steps", "2", "--output", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [
        "chart.png", "comparison.gif", "comparison.mp4", "results.json", "source.gif", "table.md"
    ]  # fmt: skip
    assert "| tune:inr |" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["tune_steps"] == 1 and len(results["cases"]) == 1
    assert {"motion_ratio", "trajectory_error"} <= set(results["cases"][0]["tune:inr"])
    assert results["metric_suite_version"] == "2" and "motion_ratio" in results["definitions"]


def test_demo_without_the_shipped_model_says_so(tmp_path, capsys, monkeypatch):
    import inr_smooth.mini as mini

    monkeypatch.setattr(mini, "MINI_MODEL_DIR", tmp_path / "nothing")
    assert main(["demo", "--output", str(tmp_path / "out"), "--tune-steps", "1"]) == 2
    assert "inr-smooth-mini model is missing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_paired_differences_use_the_per_clip_difference():
    def case(shift: float, noise: float) -> dict:
        scores = {m: 0.5 + noise for m in METRICS}
        shifted = {m: v + shift for m, v in scores.items()}
        return {m: {"scores": shifted if m.endswith("inr") else scores} for m in METHODS}

    cases = [case(0.1, noise) for noise in (0.0, 0.3, -0.2)]  # clips differ, the gap does not
    differences = paired_differences(cases)
    assert list(differences) == ["tune:inr - tune:none", "tune:smoothvideo - tune:none",
                                 "edit:inr - edit:plain"]  # fmt: skip
    mean, se = differences["edit:inr - edit:plain"]["warp_error"]
    assert mean == pytest.approx(0.1) and se == pytest.approx(0, abs=1e-12)
    assert summarize(cases)["edit:inr"]["warp_error"][1] > 0.1  # unpaired: the clips' spread
    assert differences["tune:smoothvideo - tune:none"]["shape_iou"] == (0.0, 0.0)
    partial = [{k: v for k, v in c.items() if k.startswith("edit")} for c in cases]
    assert list(paired_differences(partial)) == ["edit:inr - edit:plain"]


def test_bench_quality_command_writes_a_report_with_paired_differences(
    tiny_sd_folder, tmp_path, capsys
):
    code = main(["bench", "quality", "--model", str(tiny_sd_folder), "--clips", "2",
                 "--frames", "3", "--size", "16", "--tune-steps", "1", "--inference-steps", "2",
                 "--out", str(tmp_path), "--name", "q"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "| tune:inr - tune:none |" in out and "±" in out
    results = json.loads((tmp_path / "q" / "results.json").read_text())
    assert len(results["cases"]) == 2 and results["settings"]["frames"] == 3
    assert set(results["paired_differences"]) == {
        "tune:inr - tune:none", "tune:smoothvideo - tune:none", "edit:inr - edit:plain"
    }  # fmt: skip
    assert (tmp_path / "q" / "chart.png").stat().st_size > 0
    assert main(["bench", "quality", "--clips", "1"]) == 2


def test_demo_and_serial_bench_compute_on_one_thread(monkeypatch, tmp_path):
    """Two threads made the demo's tuned videos differ between runs; one thread does not."""
    import torch

    import inr_smooth.demo as demo
    import inr_smooth.quality as quality

    seen = []

    def fake_case(scene, target, settings, **_):
        seen.append(torch.get_num_threads())
        video = render(target, 3, 16)
        return {"source": {"video": video, "scores": score_video(video, target)}}

    monkeypatch.setattr(demo, "run_case", fake_case)
    monkeypatch.setattr(quality, "run_case", fake_case)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        demo.run_demo(QualitySettings(frames=3, size=16), tmp_path / "d", progress=False)
        run_cases(random_cases(2, seed=1), QualitySettings(), progress=False)
        assert seen == [1, 1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def _fake_case(scene, target, settings, **_):
    """run_case without models: the source, a frozen edit and a moving one."""
    moving = render(target, settings.frames, settings.size)
    frozen = np.repeat(moving[:1], settings.frames, axis=0)
    source = render(scene, settings.frames, settings.size)
    return {
        "source": {"video": source, "scores": score_video(source, scene)},
        "edit:plain": {"video": moving, "scores": score_video(moving, target), "seconds": 1.0},
        "edit:inr": {"video": frozen, "scores": score_video(frozen, target), "seconds": 1.0},
    }


def test_the_demo_table_shows_a_frozen_clip_as_frozen(monkeypatch, tmp_path):
    """A frozen edit has the best flicker and warp error; the motion columns beside them and
    a note under the table say why."""
    import inr_smooth.demo as demo

    monkeypatch.setattr(demo, "run_case", _fake_case)
    report = demo.run_demo(QualitySettings(frames=6, size=32), tmp_path / "d", progress=False)
    header = report.splitlines()[2]
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns.index("motion ratio →1") == columns.index("warp err. (DIS) ↓") + 1
    assert "edit:inr: motion ratio 0.00" in report and "nearly frozen" in report
    results = json.loads((tmp_path / "d" / "results.json").read_text())
    frozen, moving = results["cases"][0]["edit:inr"], results["cases"][0]["edit:plain"]
    assert frozen["warp_error"] <= moving["warp_error"] and frozen["color_flicker"] == 0
    assert frozen["motion_ratio"] == 0 < moving["motion_ratio"]
    assert frozen["trajectory_error"] > 0.2 > moving["trajectory_error"]


def test_the_demo_output_is_replaced_whole_or_left_as_it_was(monkeypatch, tmp_path, capsys):
    import inr_smooth.demo as demo

    monkeypatch.setattr(demo, "run_case", _fake_case)
    out = tmp_path / "demo"
    settings = QualitySettings(frames=4, size=16)
    demo.run_demo(settings, out, progress=False)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(first) == sorted(demo.DEMO_FILES)
    # a failure (or Ctrl-C) while writing leaves the previous output, and no temporary folder
    import inr_smooth.video_io as video_io

    calls = []

    def interrupted(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, *args, **kwargs)

    real = video_io.write_side_by_side
    monkeypatch.setattr(video_io, "write_side_by_side", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(replace(settings, seed=1), out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    monkeypatch.setattr(video_io, "write_side_by_side", real)
    # a rerun into its own previous output replaces it
    demo.run_demo(replace(settings, seed=1), out, progress=False)
    assert json.loads((out / "results.json").read_text())["settings"]["seed"] == 1


def test_the_demo_refuses_a_folder_that_is_not_its_output_before_any_model(
    monkeypatch, tmp_path, capsys
):
    import inr_smooth.demo as demo

    monkeypatch.setattr(demo, "run_case", lambda *a, **k: pytest.fail("ran the methods"))
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert main(["demo", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a previous output" in err and "thesis.tex" in err and err.count("\n") == 1
    assert main(["demo", "--output", str(out / "thesis.tex")]) == 2
    assert "is a file" in capsys.readouterr().err
    (out / "thesis.tex").unlink()
    (out / "table.md").write_text("a table from elsewhere")  # a demo file name, no results.json
    assert main(["demo", "--output", str(out)]) == 2
    assert "no readable results.json" in capsys.readouterr().err
    for flags in (["--tune-steps", "0"], ["--size", "20"], ["--inference-steps", "-1"]):
        assert main(["demo", "--output", str(tmp_path / "new"), *flags]) == 2
        assert capsys.readouterr().err.count("\n") == 1


def test_a_full_disk_during_the_demo_is_one_line_naming_the_output(monkeypatch, tmp_path, capsys):
    import errno

    import inr_smooth.demo as demo
    import inr_smooth.video_io as video_io

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(demo, "run_case", _fake_case)
    monkeypatch.setattr(video_io, "write_side_by_side", full)
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--frames", "3", "--size", "16"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert last.startswith("inr-smooth demo: error: cannot write")
    assert f"cannot write {out}: No space left on device" in last
    assert list(tmp_path.iterdir()) == []


def test_charts_keep_titles_and_labels_whole(tmp_path):
    """The demo's chart fits its long title and every method name (checked on the drawn
    figure's text extents: nothing outside the canvas)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from inr_smooth.demo import plot_scores

    methods = ["source", *METHODS, "tune:smoothvideo-faithful"]
    summary = {m: {k: (0.1 * (i + 1), 0.01) for k in METRICS} for i, m in enumerate(methods)}
    outside, checked = [], []
    real_close = plt.close

    def check_then_close(fig=None):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        shown = [ax for ax in fig.axes if ax.get_visible()]
        texts = [fig._suptitle] + [
            t
            for ax in shown
            for t in ax.get_xticklabels() + ax.get_yticklabels()
            if t.get_text() in methods
        ]
        for text in texts:
            box = text.get_window_extent(renderer)
            if box.x0 < 0 or box.x1 > fig.bbox.width or box.y0 < 0 or box.y1 > fig.bbox.height:
                outside.append(text.get_text())
        checked.append({t.get_text() for t in texts[1:]})
        real_close(fig)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(plt, "close", check_then_close)
        plot_scores(summary, tmp_path / "c.png", "A long title of the demo's chart " * 8)
    assert outside == [] and checked == [set(methods)]
    assert (tmp_path / "c.png").stat().st_size > 0
