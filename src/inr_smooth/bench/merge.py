"""Two ``bench quality`` reports on the same clips as one: a method run later, paired with the rest.

``python -m inr_smooth.bench.merge A/results.json B/results.json --out OUT --name NAME`` writes
``OUT/NAME/`` (``table.md``, ``chart.png``, ``results.json``, as ``bench quality`` does) with
every method of both reports on each clip, so that a method run on its own later (e.g.
``--methods tune:smoothvideo`` over the clips of a ``tune:none tune:inr`` run) is compared with
its baseline clip by clip. The reports must hold the same clips (scenes) -- or the clips of one
must be the first clips of the other's (a 60-clip run of the same seed against a 240-clip one:
the merge keeps those first clips) -- and the same settings, world and metric suite; a method in
both must have the same scores on every clip (bench quality's scores are repeatable on one
thread: a difference means the runs were not the same), else one line and exit 2.

With ``--append``, B continues A instead: B ran ``bench quality --skip-clips K`` with K the
clips A ends at (its first clip plus its number of clips), with the same methods, settings,
world and metric suite, and the report holds A's clips then B's -- the report one run of
both lengths would have written, since a clip's scores depend on its scenes and the settings
only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["append_results", "merge_results"]

_SAME = ("settings", "world", "metric_suite_version")


def _cases(results: dict) -> list[dict[str, dict]]:
    """The report's cases as :func:`~inr_smooth.demo.write_report` takes them."""
    return [{m: {"scores": scores, "seconds": seconds.get(m)} for m, scores in case.items()}
            for case, seconds in zip(results["cases"], results["seconds"], strict=True)]


def _shared_clips(a: dict, b: dict) -> int:
    """How many first clips two reports share (all of the shorter one's, else ValueError)."""
    n = min(len(a["cases_scenes"]), len(b["cases_scenes"]))
    if not n or a["cases_scenes"][:n] != b["cases_scenes"][:n]:
        raise ValueError("the two reports differ in cases_scenes: not the same clips")
    return n


def _check_same_runs(a: dict, b: dict) -> None:
    for results in (a, b):
        if results.get("report") != "inr-smooth bench quality":
            raise ValueError("not a bench quality results file")
    for key in _SAME:
        if a.get(key) != b.get(key):
            raise ValueError(f"the two reports differ in {key}: not the same clips and settings")


def merge_results(a: dict, b: dict) -> list[dict[str, dict]]:
    """The cases of two bench quality reports on the same (first) clips, with the methods of
    both (raises ValueError where they are not the same clips and settings, or disagree)."""
    _check_same_runs(a, b)
    n = _shared_clips(a, b)
    merged = []
    for i, (x, y) in enumerate(zip(_cases(a)[:n], _cases(b)[:n], strict=True)):
        for method in x.keys() & y.keys():
            if x[method]["scores"] != y[method]["scores"]:
                raise ValueError(f"{method} has other scores in the second report on clip {i}: "
                                 "the runs were not the same")  # fmt: skip
        merged.append({**x, **y})
    return merged


def append_results(a: dict, b: dict) -> list[dict[str, dict]]:
    """The cases of report ``a`` then those of ``b``, which continues it (raises ValueError
    where ``b`` does not start at ``a``'s end or ran other methods or settings)."""
    _check_same_runs(a, b)
    end = a.get("first_clip", 0) + len(a["cases"])
    if b.get("first_clip", 0) != end:
        raise ValueError(f"the second report does not continue the first: it starts at clip "
                         f"{b.get('first_clip', 0) + 1}, the first ends at clip {end} (run "
                         f"it with --skip-clips {end})")  # fmt: skip
    methods = {frozenset(case) for case in a["cases"] + b["cases"]}
    if len(methods) != 1:
        raise ValueError("the two reports ran other methods")
    return _cases(a) + _cases(b)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs=2, help="two bench quality results.json")
    parser.add_argument("--append", action="store_true",
                        help="the second report continues the first (bench quality "
                        "--skip-clips): A's clips then B's")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"),
                        help="results folder (default: %(default)s)")
    parser.add_argument("--name", default="merged", help="subfolder of --out (default: "
                        "%(default)s; a previous report there is replaced)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        a, b = (json.loads(path.read_text()) for path in args.results)
        cases = (append_results if args.append else merge_results)(a, b)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    from ..demo import write_report, writing_folder
    from ..outputs import OutputError
    from ..quality import QualitySettings

    settings = QualitySettings(**a["settings"])
    first = a.get("first_clip", 0)
    skipped = f", from clip {first + 1}" if first else ""
    title = (f"Quality benchmark: {len(cases)} seeded synthetic clips ({a['world']} world"
             f"{skipped}), model "
             f"{settings.model}, {settings.frames} frames at {settings.size} px; merged from "
             f"{args.results[0]} and {args.results[1]}; mean ± standard error over clips; scores "
             "against the edited scene's exact ground truth.")  # fmt: skip
    scenes = a["cases_scenes"] + b["cases_scenes"] if args.append else a["cases_scenes"]
    extra = {"cases_scenes": scenes[: len(cases)], "world": a["world"],
             "first_clip": first}  # fmt: skip
    extra.update(report="inr-smooth bench quality", merged_from=[str(p) for p in args.results])
    folder = args.out / args.name
    try:
        with writing_folder(folder) as tmp:
            print(write_report(tmp, cases, settings, title, extra))
    except (OSError, OutputError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    print(f"wrote {folder}")


if __name__ == "__main__":
    from . import run_script

    run_script(main)
