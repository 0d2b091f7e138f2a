"""Long quality runs continue where they stopped: each finished case is kept in a log."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import inr_smooth.quality as quality
from inr_smooth.cli import main
from inr_smooth.quality import QualitySettings, case_key, random_cases, run_cases, score_video
from inr_smooth.results_log import ResultsLog
from inr_smooth.synthetic import render


class FakeCases:
    """run_case without models, counting its calls; Ctrl-C on call number ``stop_at``."""

    def __init__(self, stop_at: int | None = None):
        self.calls, self.stop_at = 0, stop_at

    def __call__(self, scene, target, settings, methods=(), **_):
        self.calls += 1
        if self.calls == self.stop_at:
            raise KeyboardInterrupt
        out = render(target, settings.frames, settings.size)
        shift = settings.inversion_weight * 0.01  # the settings reach the scores
        entry = {"video": out, "scores": {**score_video(out, target), "shift": shift},
                 "seconds": 1.0}  # fmt: skip
        source = render(scene, settings.frames, settings.size)
        return {"source": {"video": source, "scores": score_video(source, scene)},
                **{m: entry for m in methods}}  # fmt: skip


SETTINGS = QualitySettings(frames=3, size=16)
METHODS = ("edit:plain", "edit:inr")


def test_the_key_depends_on_scenes_settings_and_methods():
    (a, ta), (b, tb) = random_cases(2, seed=0)
    key = case_key(a, ta, SETTINGS, METHODS)
    assert key == case_key(a, ta, QualitySettings(frames=3, size=16), list(METHODS))
    assert key != case_key(b, tb, SETTINGS, METHODS)
    assert key != case_key(a, ta, replace(SETTINGS, inversion_weight=0.5), METHODS)
    assert key != case_key(a, ta, SETTINGS, METHODS[:1])
    rich = random_cases(1, seed=0, world="rich")[0]
    assert case_key(*rich, SETTINGS, METHODS) != key


def test_an_interrupted_run_continues_and_ends_as_an_uninterrupted_one(monkeypatch, tmp_path):
    pairs = random_cases(4, seed=2)
    whole = FakeCases()
    monkeypatch.setattr(quality, "run_case", whole)
    expected = run_cases(pairs, SETTINGS, methods=METHODS, progress=False)

    log = ResultsLog(tmp_path / "cases.jsonl")
    monkeypatch.setattr(quality, "run_case", FakeCases(stop_at=3))
    with pytest.raises(KeyboardInterrupt):
        run_cases(pairs, SETTINGS, methods=METHODS, progress=False, log=log)
    assert len(log.read()) == 2  # the two finished cases, each as it ended
    rest = FakeCases()
    monkeypatch.setattr(quality, "run_case", rest)
    assert run_cases(pairs, SETTINGS, methods=METHODS, progress=False, log=log) == expected
    assert rest.calls == 2
    # other settings are other cases: nothing is reused for them
    other = FakeCases()
    monkeypatch.setattr(quality, "run_case", other)
    run_cases(pairs, replace(SETTINGS, inversion_weight=0.5), methods=METHODS, progress=False,
              log=log)  # fmt: skip
    assert other.calls == 4 and len(log.read()) == 8


def _quality(tmp_path, *extra):
    return main(["bench", "quality", "--clips", "3", "--frames", "3", "--size", "16",
                 "--methods", *METHODS, "--out", str(tmp_path), "--name", "q", *extra])  # fmt: skip


def test_bench_quality_keeps_finished_clips_after_ctrl_c_and_resumes(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(quality, "run_case", FakeCases(stop_at=3))
    assert _quality(tmp_path) == 130
    err = capsys.readouterr().err
    log = tmp_path / "q.cases.jsonl"
    assert f"2 of 3 cases kept in {log}" in err and "the same command continues" in err
    assert not (tmp_path / "q").exists() and len(log.read_text().splitlines()) == 2

    rest = FakeCases()
    monkeypatch.setattr(quality, "run_case", rest)
    assert _quality(tmp_path) == 0
    assert f"resuming: 2 of 3 cases already scored in {log}" in capsys.readouterr().err
    assert rest.calls == 1 and not log.exists()  # the report is written, the log removed
    resumed = json.loads((tmp_path / "q" / "results.json").read_text())["cases"]

    monkeypatch.setattr(quality, "run_case", FakeCases())
    assert _quality(tmp_path) == 0  # a finished run starts afresh, to the same scores
    assert json.loads((tmp_path / "q" / "results.json").read_text())["cases"] == resumed


def test_a_sweep_resumes_across_its_values(monkeypatch, tmp_path, capsys):
    def sweep():
        return main(["bench", "quality-sweep", "--param", "inversion_weight", "--values", "0",
                     "1", "--methods", *METHODS, "--clips", "2", "--frames", "3", "--size",
                     "16", "--out", str(tmp_path), "--name", "s"])  # fmt: skip

    monkeypatch.setattr(quality, "run_case", FakeCases(stop_at=4))  # in the second value
    assert sweep() == 130
    assert "3 of 4 cases kept" in capsys.readouterr().err
    rest = FakeCases()
    monkeypatch.setattr(quality, "run_case", rest)
    assert sweep() == 0
    assert "resuming: 3 of 4 cases" in capsys.readouterr().err and rest.calls == 1
    points = json.loads((tmp_path / "s" / "results.json").read_text())["cases"]
    assert [c["edit:inr"]["shift"] for p in points for c in p] == [0, 0, 0.01, 0.01]
    assert not (tmp_path / "s.cases.jsonl").exists()


def test_a_run_that_skips_the_first_clips_continues_a_shorter_one(monkeypatch, tmp_path, capsys):
    from inr_smooth.bench.merge import main as merge

    monkeypatch.setattr(quality, "run_case", FakeCases())

    def run(name, clips, *extra):
        assert main(["bench", "quality", "--clips", str(clips), "--frames", "3", "--size", "16",
                     "--methods", *METHODS, "--out", str(tmp_path), "--name", name,
                     *extra]) == 0  # fmt: skip
        return tmp_path / name / "results.json"

    whole, first = run("whole", 5), run("first", 3)
    rest, wrong = run("rest", 2, "--skip-clips", "3"), run("wrong", 2, "--skip-clips", "2")
    assert "seed 0, from clip 4" in (tmp_path / "rest" / "table.md").read_text()
    merge([str(rest), str(rest), "--out", str(tmp_path), "--name", "rest-again"])
    assert "world, from clip 4)" in (tmp_path / "rest-again" / "table.md").read_text()
    merge([str(first), str(rest), "--append", "--out", str(tmp_path), "--name", "joined"])
    joined = json.loads((tmp_path / "joined" / "results.json").read_text())
    expected = json.loads(whole.read_text())
    for key in ("cases", "cases_scenes", "summary", "paired_differences", "first_clip"):
        assert joined[key] == expected[key], key
    with pytest.raises(SystemExit) as stop:
        merge([str(first), str(wrong), "--append", "--out", str(tmp_path), "--name", "bad"])
    assert stop.value.code == 2
    assert "starts at clip 3, the first ends at clip 3 (run it with --skip-clips 3)" in (
        capsys.readouterr().err)
    assert main(["bench", "quality", "--skip-clips", "-1"]) == 2
    assert "--skip-clips must be at least 0" in capsys.readouterr().err
