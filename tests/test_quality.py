"""The synthetic comparison behind `inr-smooth demo` and `bench quality`, on a tiny model."""

from __future__ import annotations

import json

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
    assert own["color_accuracy"] == 1 and own["shape_iou"] == 1 and own["position_error"] == 0
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
        "chart.png", "comparison.gif", "comparison.mp4", "results.json", "table.md"
    ]  # fmt: skip
    assert "| tune:inr |" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["tune_steps"] == 1 and len(results["cases"]) == 1


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
