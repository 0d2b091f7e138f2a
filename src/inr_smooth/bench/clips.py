"""How many clips does ``bench quality`` need? (issue 20, item 4)

For a method ``a`` and its baseline ``b`` run on the same clips, the per-clip difference
``d = a - b`` of a metric has a standard deviation ``s_d``; the standard error of its mean over
``N`` clips is ``s_d / sqrt(N)``. A relative difference ``r`` (10 %) of the baseline's mean
``m`` shows at ``z`` standard errors when ``r m >= z s_d / sqrt(N)``, so

    N = ceil((z s_d / (r m))^2)

``z = 2`` is the brief's criterion (a true difference of exactly that size then clears two
standard errors about half the time); ``z = 2.8`` (1.96 + 0.84) is the usual 80 % power at a
two-sided 5 % level. ``s_d`` is itself estimated from the clips at hand: its one-sided 95 %
upper bound (chi-square with ``n - 1`` degrees of freedom, :func:`chi2_lower5`) gives the
conservative ``N``.

``python -m inr_smooth.bench.clips RESULTS.json ...`` prints the table for every comparison of
:data:`~inr_smooth.scores.COMPARISONS` in the files (``bench quality``'s ``results.json``).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..scores import COMPARISONS

__all__ = ["clip_count", "clip_table", "comparisons"]


def chi2_lower5(k: int) -> float:
    """The 5 % quantile of chi-square with ``k`` degrees of freedom (Wilson-Hilferty; within
    0.5 % of the exact value from k = 10 on)."""
    c = 2 / (9 * k)
    return k * (1 - c - 1.6448536 * math.sqrt(c)) ** 3


def clip_count(cases: Sequence[dict], a: str, b: str, metric: str = "color_flicker",
               relative: float = 0.1, z: float = 2.0) -> dict:  # fmt: skip
    """The clip count of the module docstring from per-clip ``cases`` (``{method: scores}``,
    as ``results.json`` stores them)."""
    base = np.array([c[b][metric] for c in cases], dtype=np.float64)
    diff = np.array([c[a][metric] for c in cases], dtype=np.float64) - base
    n, mean, sd = len(diff), float(base.mean()), float(diff.std(ddof=1))
    sd_upper = sd * math.sqrt((n - 1) / chi2_lower5(n - 1))

    def needed(s: float, zz: float) -> int:
        return math.ceil((zz * s / (relative * mean)) ** 2)

    return {
        "comparison": f"{a} - {b}", "metric": metric, "clips": n, "baseline_mean": mean,
        "difference_mean": float(diff.mean()), "difference_sd": sd,
        "correlation": float(np.corrcoef(base, base + diff)[0, 1]),
        "n_at_z": needed(sd, z), "n_at_z_sd_upper95": needed(sd_upper, z),
        "n_80_power": needed(sd, 2.8), "z": z, "relative": relative,
    }  # fmt: skip


def comparisons(results: dict) -> list[tuple[list[dict], str, str]]:
    """``(cases, a, b)`` for every comparison in a ``results.json``: of ``bench quality``, the
    :data:`~inr_smooth.scores.COMPARISONS` its methods allow; of ``bench quality-sweep``, each
    method at each value against the same method at the first value (``"m @ v"``)."""
    if results.get("report") != "inr-smooth bench quality-sweep":
        cases = results["cases"]
        return [(cases, a, b) for a, b in COMPARISONS if all(a in c and b in c for c in cases)]
    values, per_value = results["values"], results["cases"]
    out = []
    for method in (m for m in per_value[0][0] if m != "source"):
        b = f"{method} @ {values[0]:g}"
        for value, cases in zip(values[1:], per_value[1:], strict=True):
            a = f"{method} @ {value:g}"
            paired = [{a: now[method], b: then[method]}
                      for now, then in zip(cases, per_value[0], strict=True)]  # fmt: skip
            out.append((paired, a, b))
    return out


def clip_table(rows: Sequence[dict]) -> str:
    head = ("| results | comparison | clips | baseline mean | mean diff. | s.d. of diff. | "
            "corr. | N (2 s.e.) | N (2 s.e., s.d. upper 95 %) | N (80 % power) |")  # fmt: skip
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r.get('source', '')} | {r['comparison']} | {r['clips']} | "
            f"{r['baseline_mean']:.4f} | {r['difference_mean']:+.4f} | {r['difference_sd']:.4f} "
            f"| {r['correlation']:.2f} | {r['n_at_z']} | {r['n_at_z_sd_upper95']} | "
            f"{r['n_80_power']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path,
                        help="results.json of bench quality or quality-sweep")
    parser.add_argument("--metric", default="color_flicker")
    parser.add_argument("--relative", type=float, default=0.1)
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    rows = []
    for path in args.results:
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            parser.error(f"cannot read {path}: {exc}")
        for cases, a, b in comparisons(results):
            row = clip_count(cases, a, b, args.metric, args.relative)
            rows.append({"source": str(path.parent), **row})
    print(clip_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    from . import run_script

    run_script(main)
