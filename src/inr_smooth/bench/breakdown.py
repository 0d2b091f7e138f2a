"""Which scenes does a method fail on? ``bench quality`` scores broken down by scene attribute.

``python -m inr_smooth.bench.breakdown RESULTS.json --method tune:none`` groups the clips of a
``bench quality`` results file by each attribute of the source scene (motion, background,
background colour, shape, colour; in a rich-world file the edited object's shape and colour),
by two of the edit (colour change: the RGB distance of the source's object colour to the
target's; source contrast: of the source's object colour to its background; each split at its
median over the file's clips) and, with ``--attributes A:B``, by
pairs of them; and prints, per value: the number of clips, the metric's mean
± standard error, and the share of clips above ``--above`` (a failure: by default a trajectory
error above 0.1 of the frame) with its binomial standard error. With ``--minus BASELINE`` the
metric is the per-clip difference ``method - baseline`` (what a method changes, per kind of
scene). ``--events`` counts, instead, the clips where each of the two methods fails (the metric
below ``--below``: by default a frame whose colour is lost, colour accuracy below 1) and the
two-sided sign test of the discordant clips -- the fair test when a mean is made of a few such
failures, as the tuned models' colour flicker is.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from ..scores import mean_se

__all__ = ["ATTRIBUTES", "DERIVED", "attribute_values", "available_attributes", "breakdown",
           "breakdown_table", "paired_events", "scene_value"]  # fmt: skip


def _rgb_distance(a: str, b: str) -> float:
    from ..synthetic import COLORS

    return math.dist(COLORS[a], COLORS[b])


def scene_value(record: dict, name: str):
    """A scene record's field ``name``; in a rich-world record the edited object's, its
    ``subject_`` field (``color`` -> ``subject_color``)."""
    for key in (name, f"subject_{name}"):
        if key in record:
            return record[key]
    raise ValueError(f"the scenes have no attribute {name!r} (have {sorted(record)})")


# numeric attributes of a (source, target) pair, split at their median over the clips
DERIVED = {
    "colour_change": lambda source, target: _rgb_distance(scene_value(source, "color"),
                                                          scene_value(target, "color")),
    "source_contrast": lambda source, _: _rgb_distance(scene_value(source, "color"),
                                                       source["background_color"]),
}  # fmt: skip
ATTRIBUTES = ("motion", "background", "background_color", "shape", "color", *DERIVED)


def _has(record: dict, attribute: str) -> bool:
    try:
        attribute_values([[record, record]], attribute)
    except ValueError:
        return False
    return True


def available_attributes(results: dict) -> tuple[str, ...]:
    """The :data:`ATTRIBUTES` a results file's scenes have (a rich world's have no motion)."""
    first = results["cases_scenes"][0][0]
    return tuple(a for a in ATTRIBUTES if _has(first, a))


def _median_split(values: Sequence[float]) -> list[str]:
    median = statistics.median(values)
    return [f"≤ {median:.0f}" if v <= median else f"> {median:.0f}" for v in values]


def attribute_values(pairs: Sequence[Sequence[dict]], attribute: str) -> list[str]:
    """Each clip's value of ``attribute`` (a scene field, a :data:`DERIVED` name, or several
    joined by ``:``, crossed) for ``pairs`` of (source, target) scene records."""
    if ":" in attribute:
        columns = [attribute_values(pairs, part) for part in attribute.split(":")]
        return [" / ".join(values) for values in zip(*columns, strict=True)]
    if attribute in DERIVED:
        return _median_split([DERIVED[attribute](source, target) for source, target in pairs])
    return [str(scene_value(source, attribute)) for source, _ in pairs]


def _cases_with(results: dict, *methods: str | None) -> list[dict]:
    cases = results["cases"]
    if not cases or not isinstance(cases[0], dict):  # a quality-sweep's cases: one list per value
        raise ValueError("not a bench quality results file (a sweep's? it has cases per value)")
    for name in filter(None, methods):
        if name not in cases[0]:
            raise ValueError(f"no method {name!r} in the results (have {list(cases[0])})")
    return cases


def _values(results: dict, method: str, metric: str, minus: str | None) -> list[float]:
    cases = _cases_with(results, method, minus)
    value = [c[method][metric] for c in cases]
    if minus:
        value = [v - c[minus][metric] for v, c in zip(value, cases, strict=True)]
    return value


def _row(values: Sequence[float], above: float) -> dict:
    n = len(values)
    mean, se = mean_se(values)  # se: NaN for a single clip
    share = sum(v > above for v in values) / n
    return {"clips": n, "mean": mean, "se": se, "above": share,
            "above_se": math.sqrt(share * (1 - share) / n)}  # fmt: skip


def breakdown(results: dict, method: str, metric: str = "trajectory_error", *,
              minus: str | None = None, above: float = 0.1,
              attributes: Sequence[str] | None = None) -> list[dict]:  # fmt: skip
    """One row for all clips, then one per attribute value: ``{"attribute", "value", "clips",
    "mean", "se", "above", "above_se"}`` (rows of a value sorted by failure share).
    ``attributes`` None: every one of :data:`ATTRIBUTES` the file's scenes have."""
    values = _values(results, method, metric, minus)
    rows = [{"attribute": "all", "value": "", **_row(values, above)}]
    for attribute in attributes or available_attributes(results):
        groups: dict[str, list[float]] = {}
        labels = attribute_values(results["cases_scenes"], attribute)
        for label, value in zip(labels, values, strict=True):
            groups.setdefault(label, []).append(value)
        part = [{"attribute": attribute, "value": v, **_row(g, above)} for v, g in groups.items()]
        rows += sorted(part, key=lambda r: -r["above"])
    return rows


def paired_events(results: dict, method: str, baseline: str, metric: str = "color_accuracy",
                  below: float = 1.0) -> dict:  # fmt: skip
    """Clips where ``method`` / ``baseline`` fail (``metric < below``): ``{"both", "only_method",
    "only_baseline", "neither", "p_sign"}``; ``p_sign`` is the exact two-sided sign test of the
    discordant clips (1 when there are none)."""
    fails = [(c[method][metric] < below, c[baseline][metric] < below)
             for c in _cases_with(results, method, baseline)]  # fmt: skip
    only_m = sum(m and not b for m, b in fails)
    only_b = sum(b and not m for m, b in fails)
    n, k = only_m + only_b, min(only_m, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n if n else 0.5
    return {"clips": len(fails), "both": sum(m and b for m, b in fails), "only_method": only_m,
            "only_baseline": only_b, "neither": sum(not (m or b) for m, b in fails),
            "p_sign": min(1.0, 2 * tail)}  # fmt: skip


def breakdown_table(rows: Sequence[dict], label: str, above: float) -> str:
    lines = [f"| attribute | value | clips | {label} (mean ± s.e.) | share > {above:g} |",
             "|---|---|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['attribute']} | {r['value']} | {r['clips']} | "
                     f"{r['mean']:.4f} ± {r['se']:.4f} | {r['above']:.2f} ± {r['above_se']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="a bench quality results.json")
    parser.add_argument("--method", default="tune:none",
                        help="the method scored (default: %(default)s)")  # fmt: skip
    parser.add_argument("--minus", help="a baseline method: break down the paired difference")
    parser.add_argument("--metric",
                        help="default: trajectory_error; with --events, color_accuracy")
    parser.add_argument("--above", type=float, default=0.1,
                        help="a failure: the metric above this (default: %(default)s)")
    parser.add_argument("--events", action="store_true",
                        help="count failures of --method and --minus (metric below --below)")
    parser.add_argument("--below", type=float, default=1.0,
                        help="--events: a failure is the metric below this (default: %(default)s)")
    parser.add_argument("--attributes", nargs="+", metavar="NAME",
                        help="group by these (A:B crosses two; default: those of "
                             f"{' '.join(ATTRIBUTES)} the scenes have)")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    if args.events and not args.minus:
        parser.error("--events compares two methods: give --minus BASELINE")
    args.metric = args.metric or ("color_accuracy" if args.events else "trajectory_error")
    try:
        results = json.loads(args.results.read_text())
        if args.events:
            report = paired_events(results, args.method, args.minus, args.metric, args.below)
            text = (f"{args.metric} < {args.below:g} on {report['clips']} clips: both "
                    f"{report['both']}, only {args.method} {report['only_method']}, only "
                    f"{args.minus} {report['only_baseline']}, neither {report['neither']}; "
                    f"sign test p = {report['p_sign']:.3g}")
        else:
            rows = breakdown(results, args.method, args.metric, minus=args.minus,
                             above=args.above, attributes=args.attributes)  # fmt: skip
            label = f"{args.metric} of {args.method}" + (f" − {args.minus}" if args.minus else "")
            text, report = breakdown_table(rows, label, args.above), {"rows": rows}
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a missing or foreign file
        kind = f"{type(exc).__name__}: " if isinstance(exc, KeyError) else ""
        parser.exit(2, f"{parser.prog}: error: {args.results}: {kind}{exc}\n")
    print(text)
    if args.json:
        from ..outputs import write_json_atomic

        unused = ("results", "json", "below" if not args.events else "above")
        settings = {k: v for k, v in vars(args).items() if k not in unused}
        write_json_atomic(args.json, {"results": str(args.results), **settings, **report})


if __name__ == "__main__":
    from . import run_script

    run_script(main)
