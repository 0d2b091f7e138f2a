"""bench.merge: two bench quality reports on the same clips as one, paired clip by clip."""

import json

import pytest

from inr_smooth.bench.merge import main, merge_results
from inr_smooth.quality import QualitySettings
from inr_smooth.scores import METRICS


def _report(path, methods: dict[str, list[float]], scenes=(("a", "b"), ("c", "d"), ("e", "f"))):
    """A results.json whose every metric of method m on clip i is methods[m][i]."""
    cases = [{m: dict.fromkeys(METRICS, values[i]) for m, values in methods.items()}
             for i in range(len(scenes))]  # fmt: skip
    path.write_text(json.dumps({
        "report": "inr-smooth bench quality", "settings": QualitySettings().__dict__,
        "cases": cases, "seconds": [dict.fromkeys(methods, 1.0) for _ in scenes],
        "cases_scenes": [[{"caption": s}, {"caption": t}] for s, t in scenes],
        "world": "simple", "metric_suite_version": "2"}))  # fmt: skip
    return path


def test_a_method_run_later_is_paired_with_its_baseline(tmp_path, capsys):
    a = _report(tmp_path / "a.json", {"source": [1, 1, 1], "tune:none": [0.1, 0.2, 0.4]})
    b = _report(tmp_path / "b.json", {"source": [1, 1, 1], "tune:smoothvideo": [0.2, 0.2, 0.6]})
    cases = merge_results(json.loads(a.read_text()), json.loads(b.read_text()))
    assert [sorted(c) for c in cases] == [["source", "tune:none", "tune:smoothvideo"]] * 3
    main([str(a), str(b), "--out", str(tmp_path), "--name", "m"])
    merged = json.loads((tmp_path / "m" / "results.json").read_text())
    mean, se = merged["paired_differences"]["tune:smoothvideo - tune:none"]["color_flicker"]
    assert mean == pytest.approx(0.1) and se == pytest.approx(0.1 / 3**0.5)
    assert "tune:smoothvideo - tune:none" in (tmp_path / "m" / "table.md").read_text()
    # the merged report merges again with a third
    c = _report(tmp_path / "c.json", {"tune:inr": [0, 0, 0]})
    main([str(tmp_path / "m" / "results.json"), str(c), "--out", str(tmp_path), "--name", "m3"])
    assert "tune:inr - tune:none" in (tmp_path / "m3" / "table.md").read_text()
    capsys.readouterr()


def test_a_shorter_run_of_the_same_clips_is_merged_on_its_clips(tmp_path, capsys):
    a = _report(tmp_path / "a.json", {"source": [1, 1, 1], "tune:none": [0.1, 0.2, 0.4]})
    b = _report(tmp_path / "b.json", {"source": [1, 1], "tune:smoothvideo": [0.3, 0.3]},
                scenes=(("a", "b"), ("c", "d")))  # fmt: skip
    main([str(a), str(b), "--out", str(tmp_path), "--name", "m"])
    merged = json.loads((tmp_path / "m" / "results.json").read_text())
    assert len(merged["cases"]) == len(merged["cases_scenes"]) == 2
    mean, _ = merged["paired_differences"]["tune:smoothvideo - tune:none"]["color_flicker"]
    assert mean == pytest.approx(0.15)  # (0.2 + 0.1) / 2: the third clip of a is left out
    assert "2 seeded synthetic clips" in (tmp_path / "m" / "table.md").read_text()
    capsys.readouterr()


@pytest.mark.parametrize(
    ("second", "message"),
    [({"methods": {"tune:none": [0.1, 0.2, 0.5]}}, "tune:none has other scores in the second "
                                                    "report on clip 2"),
     ({"methods": {"tune:inr": [0, 0, 0]}, "scenes": (("a", "b"), ("c", "d"), ("e", "x"))},
      "the two reports differ in cases_scenes"),
     ({"methods": {"tune:inr": [0, 0]}, "scenes": (("a", "b"), ("x", "d"))},
      "the two reports differ in cases_scenes")],
)  # fmt: skip
def test_reports_of_other_clips_or_other_scores_are_one_line(tmp_path, capsys, second, message):
    a = _report(tmp_path / "a.json", {"tune:none": [0.1, 0.2, 0.4]})
    b = _report(tmp_path / "b.json", second["methods"],
                **({"scenes": second["scenes"]} if "scenes" in second else {}))  # fmt: skip
    with pytest.raises(SystemExit) as stop:
        main([str(a), str(b), "--out", str(tmp_path), "--name", "m"])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_an_unwritable_output_is_one_line(tmp_path, capsys):
    a = _report(tmp_path / "a.json", {"tune:none": [0.1, 0.2, 0.4]})
    b = _report(tmp_path / "b.json", {"tune:inr": [0.1, 0.2, 0.3]})
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit) as stop:
        main([str(a), str(b), "--out", str(tmp_path / "file"), "--name", "m"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "cannot write" in err and "Traceback" not in err
