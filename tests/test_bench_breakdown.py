"""bench.breakdown: quality scores grouped by the source scene's attributes."""

import json
import math
import os
import subprocess
import sys

import pytest

from inr_smooth.bench.breakdown import attribute_values, breakdown, main, paired_events


def _results():
    scenes = [{"motion": m, "background": b, "background_color": "red", "shape": "circle",
               "color": "blue"} for m, b in (("up", "plain"), ("up", "striped"),
                                              ("left", "plain"), ("left", "plain"))]  # fmt: skip
    errors = [0.3, 0.2, 0.05, 0.01]
    cases = [{"tune:none": {"trajectory_error": e}, "tune:inr": {"trajectory_error": e - 0.01 * i}}
             for i, e in enumerate(errors)]  # fmt: skip
    return {"cases": cases, "cases_scenes": [[s, s] for s in scenes]}


def test_groups_carry_means_and_failure_shares():
    rows = breakdown(_results(), "tune:none", attributes=("motion", "background"))
    assert [(r["attribute"], r["value"], r["clips"]) for r in rows] == [
        ("all", "", 4), ("motion", "up", 2), ("motion", "left", 2),
        ("background", "striped", 1), ("background", "plain", 3)]  # fmt: skip
    up = rows[1]
    assert up["mean"] == pytest.approx(0.25) and up["above"] == 1 and up["above_se"] == 0
    assert up["se"] == pytest.approx(math.sqrt(0.005) / math.sqrt(2))
    assert rows[0]["above"] == 0.5 and rows[0]["above_se"] == pytest.approx(0.25)
    # the paired difference: tune:inr - tune:none = -0.01 i on clip i
    diff = breakdown(_results(), "tune:inr", minus="tune:none", above=-0.015,
                     attributes=("motion",))  # fmt: skip
    assert diff[0]["mean"] == pytest.approx(-0.015)
    assert [r["mean"] for r in diff[1:]] == pytest.approx([-0.005, -0.025])


def test_the_command_writes_json_and_refuses_a_foreign_file(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results()))
    main([str(path), "--json", str(tmp_path / "rows.json")])
    assert "| motion | up | 2 | 0.2500 ± 0.0500 | 1.00 ± 0.00 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "rows.json").read_text())["rows"][0]["clips"] == 4
    with pytest.raises(SystemExit) as stop:
        main([str(path), "--method", "edit:inr"])
    assert stop.value.code == 2 and "no method 'edit:inr'" in capsys.readouterr().err
    path.write_text("{}")
    with pytest.raises(SystemExit):
        main([str(path)])
    assert "KeyError" in capsys.readouterr().err


def test_paired_events_count_failures_and_sign_test_the_discordant_clips(capsys, tmp_path):
    # 10 clips: both fail on 1, only the method on 0, only the baseline on 6, neither on 3
    method = [0.5] + [1.0] * 9
    baseline = [0.5] * 7 + [1.0] * 3
    results = {"cases": [{"a": {"color_accuracy": m}, "b": {"color_accuracy": b}}
                         for m, b in zip(method, baseline, strict=True)]}  # fmt: skip
    events = paired_events(results, "a", "b")
    assert (events["both"], events["only_method"], events["only_baseline"], events["neither"]) \
        == (1, 0, 6, 3)  # fmt: skip
    assert events["p_sign"] == pytest.approx(2 / 2**6)  # 0 of 6 discordant: 2 * 0.5^6
    assert paired_events(results, "a", "a")["p_sign"] == 1
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    main([str(path), "--method", "a", "--minus", "b", "--events"])
    assert "only b 6, neither 3; sign test p = 0.0312" in capsys.readouterr().out


def test_derived_attributes_split_at_the_median_and_cross():
    from inr_smooth.synthetic import COLORS

    def pair(color, background, target):
        return [{"color": color, "background_color": background, "motion": "up"},
                {"color": target, "background_color": background}]  # fmt: skip

    pairs = [pair("red", "blue", "orange"), pair("red", "blue", "white"),
             pair("black", "white", "yellow"), pair("yellow", "white", "black")]  # fmt: skip
    change = [math.dist(COLORS[s["color"]], COLORS[t["color"]]) for s, t in pairs]
    assert [round(c) for c in change] == [102, 284, 288, 288]
    labels = attribute_values(pairs, "colour_change")
    # 102 (red-orange) and 284 (red-white) at or below the median of 102, 284, 288, 288
    assert labels == ["≤ 286", "≤ 286", "> 286", "> 286"]
    # red on blue 256, black on white 381, yellow on white 202: median 256
    assert attribute_values(pairs, "source_contrast") == ["≤ 256", "≤ 256", "> 256", "≤ 256"]
    crossed = attribute_values(pairs, "colour_change:motion")
    assert crossed == [f"{c} / up" for c in labels]
    results = {"cases": [{"a": {"trajectory_error": e}} for e in (0.0, 0.2, 0.4, 0.4)],
               "cases_scenes": pairs}  # fmt: skip
    rows = breakdown(results, "a", attributes=("colour_change",))
    assert [(r["value"], r["clips"]) for r in rows[1:]] == [("> 286", 2), ("≤ 286", 2)]
    assert [r["mean"] for r in rows[1:]] == pytest.approx([0.4, 0.1])


def test_a_rich_world_file_groups_by_the_subjects_attributes(tmp_path, capsys):
    from inr_smooth.quality import random_cases, scene_record

    pairs = [[scene_record(s), scene_record(t)] for s, t in random_cases(6, 0, "rich")]
    results = {"cases": [{"a": {"trajectory_error": 0.05 * i}} for i in range(6)],
               "cases_scenes": pairs}  # fmt: skip
    rows = breakdown(results, "a")
    # no motion field in the rich world: the other attributes, the subject's shape and colour
    assert {r["attribute"] for r in rows} == {"all", "background", "background_color", "shape",
                                              "color", "colour_change", "source_contrast"}
    shapes = [r["value"] for r in rows if r["attribute"] == "shape"]
    assert sorted(shapes) == sorted({s["subject_shape"] for s, _ in pairs})
    path = tmp_path / "rich.json"
    path.write_text(json.dumps(results))
    with pytest.raises(SystemExit) as stop:
        main([str(path), "--method", "a", "--attributes", "motion"])
    assert stop.value.code == 2 and "no attribute 'motion'" in capsys.readouterr().err


def test_the_script_piped_into_a_reader_that_stops_ends_quietly(tmp_path):

    path = tmp_path / "results.json"
    path.write_text(json.dumps(_results()))
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the table is printed (`| head`)
    done = subprocess.run([sys.executable, "-m", "inr_smooth.bench.breakdown", str(path)],
                          stdout=write, stderr=subprocess.PIPE, text=True)  # fmt: skip
    os.close(write)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
