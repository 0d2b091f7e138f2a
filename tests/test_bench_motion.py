"""The motion diagnosis's helpers (issue 20, part A)."""

import pytest

from inr_smooth.bench.motion import Schedule, centres, motion_row
from inr_smooth.synthetic import Scene, render


def test_motion_row_reads_the_true_path_of_a_rendered_clip():
    scene = Scene("red", "circle", "right", "blue")
    clip = render(scene, 8, 64)
    row = motion_row(clip, scene)
    assert row["trajectory_error"] == 0.0 and row["motion_ratio"] == pytest.approx(1.0)
    xs = [scene.center(n, 8)[0] * 64 for n in range(8)]
    assert row["x_centres_px"] == pytest.approx(xs, abs=0.3)
    assert centres(clip[::-1], scene)[0] == pytest.approx(xs[-1], abs=0.3)  # reversed: jumps
    assert motion_row(clip[::-1], scene)["trajectory_error"] > 0.2


def test_schedule_names_say_what_differs_from_the_demo():
    assert Schedule(60, 1e-4).name == "tune:60x0.0001"
    assert Schedule(500, 3e-5, attention="full").name == "tune:500x3e-05:full"
    assert Schedule(60, 1e-4, group_norm="per_frame").name == "tune:60x0.0001:gn-per_frame"


def test_a_bench_quality_clip_gets_its_own_file(tmp_path, one_thread):
    import json

    from inr_smooth.bench.motion import run
    from inr_smooth.quality import random_cases

    scene, target = random_cases(4, 0)[3]
    results = run(tmp_path, ["vae"], case=3, guidance=2.0)
    saved = json.loads((tmp_path / "motion-case3.json").read_text())
    assert (saved["scene"], saved["target"]) == (scene.caption, target.caption)
    assert saved["settings"]["tune_guidance_scale"] == 2.0 and list(saved["rows"]) == ["vae"]
    assert results["source"] == motion_row(render(scene, 8, 64), scene)
    assert not (tmp_path / "motion.json").exists()


def test_bad_case_or_guidance_is_one_line_and_exit_2(capsys):
    from inr_smooth.bench.motion import main

    bad = ((["--case", "-1"], "a clip index from 0"), (["--guidance", "0.5"], "1 or more"))
    for argv, said in bad:
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2 and said in capsys.readouterr().err
