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
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["merge_results"]

_SAME = ("settings", "world", "metric_suite_version")


def _cases(results: dict) -> list[dict[str, dict]]:
    """The report's cases as :func:`~inr_smooth.demo.write_report` takes them."""
    return [{m: {"scores": scores, "seconds": seconds.get(m)} for m, scores in case.items()}
            for case, seconds in zip(results["cases"], results["seconds"], strict=True)]


def shared_clips(a: dict, b: dict) -> int:
    """How many first clips two reports share (all of the shorter one's, else ValueError)."""
    n = min(len(a["cases_scenes"]), len(b["cases_scenes"]))
    if not n or a["cases_scenes"][:n] != b["cases_scenes"][:n]:
        raise ValueError("the two reports differ in cases_scenes: not the same clips")
    return n


def merge_results(a: dict, b: dict) -> list[dict[str, dict]]:
    """The cases of two bench quality reports on the same (first) clips, with the methods of
    both (raises ValueError where they are not the same clips and settings, or disagree)."""
    for results in (a, b):
        if results.get("report") != "inr-smooth bench quality":
            raise ValueError("not a bench quality results file")
    for key in _SAME:
        if a.get(key) != b.get(key):
            raise ValueError(f"the two reports differ in {key}: not the same clips and settings")
    n = shared_clips(a, b)
    merged = []
    for i, (x, y) in enumerate(zip(_cases(a)[:n], _cases(b)[:n], strict=True)):
        for method in x.keys() & y.keys():
            if x[method]["scores"] != y[method]["scores"]:
                raise ValueError(f"{method} has other scores in the second report on clip {i}: "
                                 "the runs were not the same")  # fmt: skip
        merged.append({**x, **y})
    return merged


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs=2, help="two bench quality results.json")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"),
                        help="results folder (default: %(default)s)")
    parser.add_argument("--name", default="merged", help="subfolder of --out (default: "
                        "%(default)s; a previous report there is replaced)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        a, b = (json.loads(path.read_text()) for path in args.results)
        cases = merge_results(a, b)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    from ..demo import write_report, writing_folder
    from ..quality import QualitySettings

    settings = QualitySettings(**a["settings"])
    title = (f"Quality benchmark: {len(cases)} seeded synthetic clips ({a['world']} world), model "
             f"{settings.model}, {settings.frames} frames at {settings.size} px; merged from "
             f"{args.results[0]} and {args.results[1]}; mean ± standard error over clips; scores "
             "against the edited scene's exact ground truth.")  # fmt: skip
    extra = {"cases_scenes": a["cases_scenes"][: len(cases)], "world": a["world"]}
    extra.update(report="inr-smooth bench quality", merged_from=[str(p) for p in args.results])
    folder = args.out / args.name
    with writing_folder(folder) as tmp:
        print(write_report(tmp, cases, settings, title, extra))
    print(f"wrote {folder}")


if __name__ == "__main__":
    from . import run_script

    run_script(main)
