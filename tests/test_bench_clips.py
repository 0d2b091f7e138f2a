"""The clip-count calculation of issue 20 (item 4)."""

import json
import math

import numpy as np
import pytest

from inr_smooth.bench.clips import chi2_lower5, clip_count, main


def _cases(base, diff):
    return [{"tune:none": {"color_flicker": b}, "tune:inr": {"color_flicker": b + d}}
            for b, d in zip(base, diff, strict=True)]  # fmt: skip


def test_clip_count_is_the_paired_standard_error_criterion():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.02, 0.12, 30)
    diff = rng.normal(0, 0.01, 30)
    row = clip_count(_cases(base, diff), "tune:inr", "tune:none")
    sd, mean = diff.std(ddof=1), base.mean()
    n = row["n_at_z"]
    assert n == math.ceil((2 * sd / (0.1 * mean)) ** 2)
    # at n clips the 10 % difference is at least two standard errors, at n - 1 it is not
    assert 0.1 * mean >= 2 * sd / math.sqrt(n) and 0.1 * mean < 2 * sd / math.sqrt(n - 1)
    assert row["n_at_z_sd_upper95"] > n and row["n_80_power"] > n
    # the clips' spread does not matter, only the spread of the difference
    spread = base.mean() + 3 * (base - base.mean())
    assert clip_count(_cases(spread, diff), "tune:inr", "tune:none")["n_at_z"] == n


def test_chi_square_quantile_is_close_to_the_exact_one():
    exact = {10: 3.9402991, 23: 13.0905142, 50: 34.7642517}  # scipy.stats.chi2.ppf(0.05, k)
    for k, value in exact.items():
        assert chi2_lower5(k) == pytest.approx(value, rel=5e-3)


def test_the_command_reads_results_files(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"cases": _cases([0.05, 0.07, 0.06], [0.01, -0.01, 0.0])}))
    main([str(path), "--json", str(tmp_path / "rows.json")])
    assert "| tune:inr - tune:none | 3 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "rows.json").read_text())[0]["clips"] == 3


def test_a_sweep_compares_each_value_with_the_first_on_the_same_clips():
    from inr_smooth.bench.clips import comparisons

    def case(flicker):
        return {"source": {"color_flicker": 0.0}, "edit:inr": {"color_flicker": flicker}}

    sweep = {"report": "inr-smooth bench quality-sweep", "values": [0.0, 0.5, 1.0],
             "cases": [[case(0.1), case(0.2)], [case(0.1), case(0.3)], [case(0.0), case(0.2)]]}
    rows = comparisons(sweep)
    assert [(a, b) for _, a, b in rows] == [("edit:inr @ 0.5", "edit:inr @ 0"),
                                            ("edit:inr @ 1", "edit:inr @ 0")]  # fmt: skip
    cases, a, b = rows[1]
    assert [c[a]["color_flicker"] - c[b]["color_flicker"] for c in cases] == [-0.1, 0.0]
    assert clip_count(cases, a, b)["clips"] == 2


def test_a_missing_or_corrupt_results_file_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{")
    for path in (tmp_path / "missing.json", tmp_path / "bad.json"):
        with pytest.raises(SystemExit) as exit_:
            main([str(path)])
        assert exit_.value.code == 2 and f"cannot read {path}" in capsys.readouterr().err
