"""Benchmarks: the tune-step report's shape and ratios, the sweep's files, FLOP counting."""

from __future__ import annotations

import json

import pytest

from inr_smooth.bench.models import SD15_UNET_CONFIG, unet_flops_per_frame
from inr_smooth.bench.tune_step import TuneStepBench, run_tune_step_bench
from inr_smooth.cli import main


def test_tune_step_report_has_every_mode_with_ratios_to_none():
    """With --warmup 0 --repeats 1 the one round is timed (FLOPs from an extra untimed step)."""
    bench = TuneStepBench(frames=3, size=16, repeats=1, warmup=0)
    report = run_tune_step_bench(bench, progress=False)
    cases = {c["smoothing"]: c for c in report["cases"]}
    assert set(cases) == {"none", "smoothvideo", "inr"}
    none = cases["none"]
    assert none["time_ratio_to_none"] == 1 and none["memory_ratio_to_none"] == 1
    for c in cases.values():
        assert len(c["step_s_all"]) == 1 and c["median_step_s"] > 0
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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tune-step", "--repeats", "0"], "--repeats must be at least 1"),
        (["tune-step", "--warmup", "-1"], "--warmup must be at least 0"),
        (["edit", "--warmup", "-1"], "--warmup must be at least 0"),
        (["sweep", "--repeats", "0"], "--repeats must be at least 1"),
        (["quality", "--jobs", "0"], "--jobs must be at least 1"),
        (["quality", "--size", "20"], "multiple of 8"),
        (["tune-step", "--json", "FILE/r.json"], "is a file"),
        (["edit", "--json", "DIR"], "is a folder"),
        (["sweep", "--out", "FILE"], "is a file"),
        (["quality", "--out", "DIR", "--name", "mine"], "not a previous output"),
    ],
)
def test_bad_settings_and_outputs_are_one_line_before_any_work(
    tmp_path, capsys, monkeypatch, argv, message
):
    import inr_smooth.commands.bench as command

    def no_work(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(command, "_bench", no_work)
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    names = {"FILE": str(tmp_path / "FILE"), "DIR": str(tmp_path),
             "FILE/r.json": str(tmp_path / "FILE" / "r.json")}  # fmt: skip
    assert main(["bench", *[names.get(a, a) for a in argv]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_help_never_says_default_none_and_quality_writes_under_outputs(capsys):
    import inr_smooth.commands.bench as command

    for kind in ("tune-step", "edit", "sweep", "quality"):
        with pytest.raises(SystemExit):
            main(["bench", kind, "--help"])
        text = capsys.readouterr().out
        assert "(default: None)" not in text and "(default: False)" not in text, kind
        assert "(default: 5)" in text or "(default: 3)" in text or kind == "quality"
    parser = __import__("inr_smooth.cli", fromlist=["build_parser"]).build_parser()
    quality = parser.parse_args(["bench", "quality"])
    sweep = parser.parse_args(["bench", "sweep"])
    assert quality.out == sweep.out == command.DEFAULT_OUT
    assert "benchmarks" not in str(command.DEFAULT_OUT)


def test_a_write_failure_of_the_report_is_one_line_without_partial_files(
    tmp_path, capsys, monkeypatch
):
    import errno
    import os

    import inr_smooth.commands.bench as command

    case = {"smoothing": "none", "frames": 2, "size": 16, "median_step_s": 0.1,
            "time_ratio_to_none": 1.0, "peak_memory_mb": 10.0, "memory_ratio_to_none": 1.0,
            "step_tflop": 0.0, "achieved_tflops": 0.0}  # fmt: skip
    report = {"settings": {"model": "tiny", "mixed_precision": "no", "repeats": 1,
                           "gradient_checkpointing": False}, "device": "cpu",
              "memory_kind": "RSS", "cases": [case], "versions": {"device": "cpu"}}  # fmt: skip
    monkeypatch.setattr(command, "_run", lambda bench: report)  # no model: the writes only
    real = os.replace

    def full(src, dst):
        if str(dst).endswith(".png"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", full)
    argv = ["sweep", "--frames", "2", "--sizes", "16", "--repeats", "1", "--warmup", "0",
            "--modes", "none", "--out", str(tmp_path), "--name", "s"]  # fmt: skip
    assert main(["bench", *argv]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("inr-smooth bench: error: cannot write") and "s.png" in last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "s.md"]  # whole files only
