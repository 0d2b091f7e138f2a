"""bench quality-sweep: the quality benchmark over the values of one setting."""

import json

import pytest

from inr_smooth.bench.quality_sweep import SWEEPABLE, check_param
from inr_smooth.cli import main


def test_sweepable_settings_are_the_numeric_ones():
    assert {"smooth_weight", "inversion_weight", "tune_guidance_scale", "tune_steps"} <= set(
        SWEEPABLE
    )
    assert "model" not in SWEEPABLE and "seed" not in SWEEPABLE
    assert check_param("tune_steps", [10.0, 20]) == [10, 20]
    with pytest.raises(ValueError, match="whole numbers"):
        check_param("tune_steps", [1.5])
    with pytest.raises(ValueError, match="--param must be one of"):
        check_param("lam", [1])


def test_a_gamma_sweep_writes_table_json_and_figure(tiny_sd_folder, tmp_path, capsys):
    code = main(["bench", "quality-sweep", "--param", "inversion_weight", "--values", "0", "1",
                 "--methods", "edit:inr", "--model", str(tiny_sd_folder), "--clips", "2",
                 "--frames", "3", "--size", "16", "--inference-steps", "2",
                 "--out", str(tmp_path), "--name", "s"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "| edit:inr @ inversion_weight=0 |" in out and "| edit:inr @ inversion_weight=1 |" in out
    results = json.loads((tmp_path / "s" / "results.json").read_text())
    assert results["values"] == [0.0, 1.0] and len(results["cases"]) == 2
    assert [p["settings"]["inversion_weight"] for p in results["points"]] == [0.0, 1.0]
    assert len(results["cases"][0]) == 2  # clips
    assert (tmp_path / "s" / "sweep.png").stat().st_size > 0
    # gamma 0 is edit:plain: the same clips, the same scores as bench quality's edit:plain
    assert main(["bench", "quality", "--methods", "edit:plain", "--model", str(tiny_sd_folder),
                 "--clips", "2", "--frames", "3", "--size", "16", "--inference-steps", "2",
                 "--out", str(tmp_path), "--name", "q"]) == 0  # fmt: skip
    plain = json.loads((tmp_path / "q" / "results.json").read_text())["cases"]
    assert [c["edit:plain"] for c in plain] == [c["edit:inr"] for c in results["cases"][0]]
    # a bad parameter is one line before any model loads
    assert main(["bench", "quality-sweep", "--param", "lam", "--values", "1"]) == 2
    assert "--param must be one of" in capsys.readouterr().err


def test_a_lambda_sweep_says_what_lambda_weighs():
    from inr_smooth.bench.quality_sweep import weight_table
    from inr_smooth.quality import loss_means

    # a tuning run's [step, loss, diffusion, smoothing] rows
    assert loss_means([[0, 1.0, 0.2, 0.1], [1, 1.0, 0.4, 0.3]]) == pytest.approx(
        {"diffusion": 0.3, "smoothing": 0.2}
    )
    scores = {"color_flicker": 0.1}
    points = [
        {"value": lam, "summary": {"source": {}, "tune:inr": {}},
         "cases": [{"source": {"scores": scores},
                    "tune:inr": {"scores": scores, "losses": {"diffusion": d, "smoothing": sm}}}
                   for d, sm in ((0.2, 0.1), (0.4, 0.1))]}
        for lam in (0.0, 2.0)
    ]  # fmt: skip
    table = weight_table(points)
    # per clip lambda * smoothing / diffusion: 2 * 0.1 / 0.2 = 1 and 2 * 0.1 / 0.4 = 0.5
    assert "| tune:inr | 2 | 0.3000 | 0.1000 | 0.75 |" in table
    assert "| tune:inr | 0 | 0.3000 | 0.1000 | 0 |" in table


def test_the_sweep_table_gives_paired_differences_from_the_first_value():
    from inr_smooth.bench.quality_sweep import sweep_differences

    def case(flicker):
        return {"source": {"scores": {}}, "edit:inr": {"scores": {"color_flicker": flicker}}}

    points = [{"value": g, "summary": {"source": {}, "edit:inr": {}},
               "cases": [case(f) for f in flickers]}
              for g, flickers in ((0.0, (0.1, 0.2, 0.3)), (1.0, (0.08, 0.19, 0.25)))]  # fmt: skip
    (row,) = sweep_differences(points, "inversion_weight").items()
    assert row[0] == "edit:inr @ 1 - @ 0"
    mean, se = row[1]["color_flicker"]
    # per clip -0.02, -0.01, -0.05: mean -0.02667, s.e. = sd / sqrt(3)
    assert mean == pytest.approx(-0.08 / 3) and se == pytest.approx(0.0120185, rel=1e-4)
