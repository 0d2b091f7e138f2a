"""Benchmarks: the tune-step report's shape and ratios, the sweep's files, FLOP counting."""

from __future__ import annotations

import json

import pytest

from inr_smooth.bench.models import SD15_UNET_CONFIG, unet_flops_per_frame
from inr_smooth.bench.tune_step import TuneStepBench, run_tune_step_bench
from inr_smooth.cli import main


def test_tune_step_report_has_every_mode_with_ratios_to_none():
    report = run_tune_step_bench(TuneStepBench(frames=3, size=16, repeats=2), progress=False)
    cases = {c["smoothing"]: c for c in report["cases"]}
    assert set(cases) == {"none", "smoothvideo", "inr"}
    none = cases["none"]
    assert none["time_ratio_to_none"] == 1 and none["memory_ratio_to_none"] == 1
    for c in cases.values():
        assert len(c["step_s_all"]) == 2 and c["median_step_s"] > 0
        ratio = c["median_step_s"] / none["median_step_s"]
        assert c["time_ratio_to_none"] == pytest.approx(ratio, abs=1e-3)
        assert c["step_tflop"] >= 0 and c["peak_memory_mb"] > 0
    assert report["trainable_parameters"] > 0 and "torch" in report["versions"]


def test_sd15_unet_forward_is_about_0_8_tflop_per_frame_at_512px():
    flops = unet_flops_per_frame(SD15_UNET_CONFIG, 512)
    assert 0.75e12 < flops < 0.85e12


def test_bench_rejects_bad_settings(capsys):
    assert main(["bench", "tune-step", "--size", "20"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert main(["bench", "tune-step", "--modes", "inr"]) == 2
    assert "must include 'none'" in capsys.readouterr().err


def test_sweep_writes_json_markdown_and_plot(tmp_path, capsys):
    code = main(["bench", "sweep", "--frames", "2", "3", "--sizes", "16", "--repeats", "1",
                 "--modes", "none", "inr", "--out", str(tmp_path), "--name", "s"])  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.md", "s.png"]
    reports = json.loads((tmp_path / "s.json").read_text())["reports"]
    assert [r["settings"]["frames"] for r in reports] == [2, 3]
    assert (tmp_path / "s.md").read_text().count("| inr |") == 2


def test_edit_bench_reports_every_mode_against_plain(tmp_path, capsys):
    out = tmp_path / "edit.json"
    code = main(["bench", "edit", "--frames", "3", "--size", "16", "--inference-steps", "2",
                 "--repeats", "1", "--warmup", "0", "--json", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    cases = {c["mode"]: c for c in json.loads(out.read_text())["cases"]}
    assert set(cases) == {"plain", "inr-final", "inr-every"}
    assert cases["plain"]["time_ratio_to_plain"] == 1 and cases["plain"]["inversion_weight"] == 0
    assert all(c["inversion_s"] > 0 and c["sampling_s"] > 0 for c in cases.values())
    assert "| inr-final | 1 |" in capsys.readouterr().out
