"""Which scenes does a method fail on? ``bench quality`` scores broken down by scene attribute.

``python -m inr_smooth.bench.breakdown RESULTS.json --method tune:none`` groups the clips of a
``bench quality`` results file by each attribute of the source scene (motion, background,
background colour, shape, colour) and prints, per value: the number of clips, the metric's mean
± standard error, and the share of clips above ``--above`` (a failure: by default a trajectory
error above 0.1 of the frame) with its binomial standard error. With ``--minus BASELINE`` the
metric is the per-clip difference ``method - baseline`` (what a method changes, per kind of
scene).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

__all__ = ["ATTRIBUTES", "breakdown", "breakdown_table"]

ATTRIBUTES = ("motion", "background", "background_color", "shape", "color")


def _values(results: dict, method: str, metric: str, minus: str | None) -> list[float]:
    cases = results["cases"]
    for name in filter(None, (method, minus)):
        if name not in cases[0]:
            raise ValueError(f"no method {name!r} in the results (have {list(cases[0])})")
    value = [c[method][metric] for c in cases]
    if minus:
        value = [v - c[minus][metric] for v, c in zip(value, cases, strict=True)]
    return value


def _row(values: Sequence[float], above: float) -> dict:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    share = sum(v > above for v in values) / n
    return {"clips": n, "mean": mean, "se": sd / math.sqrt(n), "above": share,
            "above_se": math.sqrt(share * (1 - share) / n)}  # fmt: skip


def breakdown(results: dict, method: str, metric: str = "trajectory_error", *,
              minus: str | None = None, above: float = 0.1,
              attributes: Sequence[str] = ATTRIBUTES) -> list[dict]:  # fmt: skip
    """One row for all clips, then one per attribute value: ``{"attribute", "value", "clips",
    "mean", "se", "above", "above_se"}`` (rows of a value sorted by failure share)."""
    values = _values(results, method, metric, minus)
    scenes = [source for source, _ in results["cases_scenes"]]
    rows = [{"attribute": "all", "value": "", **_row(values, above)}]
    for attribute in attributes:
        groups: dict[str, list[float]] = {}
        for scene, value in zip(scenes, values, strict=True):
            groups.setdefault(str(scene[attribute]), []).append(value)
        part = [{"attribute": attribute, "value": v, **_row(g, above)} for v, g in groups.items()]
        rows += sorted(part, key=lambda r: -r["above"])
    return rows


def breakdown_table(rows: Sequence[dict], label: str, above: float) -> str:
    lines = [f"| attribute | value | clips | {label} (mean ± s.e.) | share > {above:g} |",
             "|---|---|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['attribute']} | {r['value']} | {r['clips']} | "
                     f"{r['mean']:.4f} ± {r['se']:.4f} | {r['above']:.2f} ± {r['above_se']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, help="a bench quality results.json")
    parser.add_argument("--method", default="tune:none")
    parser.add_argument("--minus", help="a baseline method: break down the paired difference")
    parser.add_argument("--metric", default="trajectory_error")
    parser.add_argument("--above", type=float, default=0.1, help="a failure: the metric above")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
        rows = breakdown(results, args.method, args.metric, minus=args.minus, above=args.above)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a missing or foreign file
        kind = f"{type(exc).__name__}: " if isinstance(exc, KeyError) else ""
        parser.exit(2, f"{parser.prog}: error: {args.results}: {kind}{exc}\n")
    label = f"{args.metric} of {args.method}" + (f" − {args.minus}" if args.minus else "")
    print(breakdown_table(rows, label, args.above))
    if args.json:
        from ..outputs import write_json_atomic

        write_json_atomic(args.json, {"results": str(args.results), "method": args.method,
                                      "minus": args.minus, "metric": args.metric,
                                      "above": args.above, "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
