"""`inr-smooth bench`: speed and memory of the smoothing modes, measured side by side."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from . import CLIError

DEFAULT_OUT = Path("outputs/bench")  # never the committed benchmarks/results/ by default
SWEEP_FILES = ("table.md", "sweep.png", "results.json")  # what quality-sweep writes

DESCRIPTION = """\
Speed and memory benchmarks. Each reports ratios to the unsmoothed baseline measured in the
same run (modes interleaved, medians after warm-up), so they are meaningful on noisy machines.

  tune-step  the tuning step (forward, smoothing loss, backward, AdamW) per smoothing mode
  edit       training-free editing: plain inversion vs INR(TF) final-step / every-step
             (--editor fatezero, the default, or video-p2p: with its null-text stage)
  sweep      tune-step over several frame counts and sizes: markdown table and PNG plots
  quality    every smoothing method on many seeded synthetic clips, scored with exact ground
             truth: mean ± standard error per method (the demo's comparison, at scale)
  quality-sweep  quality over the values of one setting (lambda, gamma, guidance): a table,
             JSON and a figure of smoothness against alignment and motion

Models: tiny (a 32/64-channel UNet, seconds on a CPU), sd15-arch (Stable Diffusion 1.5's UNet
architecture with random weights: speed and memory do not depend on the weights; for GPUs),
or a local model folder.

Results go to outputs/bench/ unless --out / --json say otherwise; the committed tables in
benchmarks/results/ are regenerated only by passing --out benchmarks/results explicitly.
quality and quality-sweep append each finished clip to OUT/NAME.cases.jsonl: after a Ctrl-C
or a crash, the same command continues from it (removed once the report is written).
"""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except where there is none to show (None, an unset switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.help is None:
            return action.help or ""
        if "%(default)" in action.help or action.default is argparse.SUPPRESS:
            return action.help
        if isinstance(action.default, list | tuple):  # as typed: --modes none inr
            shown = " ".join(str(v) for v in action.default).replace("%", "%%")
            return f"{action.help} (default: {shown})"
        return super()._get_help_string(action)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="tiny | sd15-arch | model folder")
    p.add_argument("--modes", nargs="+", default=["none", "smoothvideo", "inr"],
                   help="smoothing modes (must include none)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per mode (>= 1)")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed rounds per mode (>= 0; FLOPs are counted in the first, or in "
                        "one extra untimed step with --warmup 0)")  # fmt: skip
    p.add_argument("--mixed-precision", choices=("no", "bf16", "fp16"), default="no",
                   help="autocast dtype of the step")  # fmt: skip
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute UNet activations in the backward pass")  # fmt: skip
    p.add_argument("--fp32-frozen", action="store_true",
                   help="keep frozen weights in fp32 under mixed precision")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--host", choices=("tune-a-video", "controlvideo"), default="tune-a-video",
                   help="controlvideo: ControlVideo's UNet + one ControlNet, its trainable set")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="speed and memory benchmarks",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    step = kinds.add_parser("tune-step", help="the tuning step per smoothing mode",
                            formatter_class=_HelpFormatter)  # fmt: skip
    step.add_argument("--frames", type=int, default=8, help="frames per step")
    step.add_argument("--size", type=int, default=64, help="pixels (latents: size / 8)")
    step.add_argument("--json", type=Path, help="write the report here")
    _common(step)
    step.set_defaults(handler=_run_tune_step)
    ed = kinds.add_parser("edit", help="plain inversion vs INR(TF) editing",
                          formatter_class=_HelpFormatter)  # fmt: skip
    ed.add_argument("--model", default="tiny", help="tiny | sd15-arch | model folder | mini")
    ed.add_argument("--frames", type=int, default=8, help="frames of the edited clip")
    ed.add_argument("--size", type=int, default=64, help="frame side in pixels")
    ed.add_argument("--inference-steps", type=int, default=50, help="DDIM steps, each way")
    ed.add_argument("--modes", nargs="+", default=["plain", "inr-final", "inr-every"],
                    help="plain; INR(TF) at gamma 1, final_step / every_step")  # fmt: skip
    ed.add_argument("--repeats", type=int, default=3, help="timed rounds per mode (>= 1)")
    ed.add_argument("--warmup", type=int, default=1, help="untimed rounds per mode (>= 0)")
    ed.add_argument("--dtype", choices=("auto", "fp16", "bf16", "fp32"), default="auto",
                    help="model precision (auto: fp16 on CUDA, fp32 on CPU)")  # fmt: skip
    ed.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ed.add_argument("--editor", choices=("fatezero", "video-p2p"), default="fatezero",
                    help="FateZero's editor or Video-P2P's (training-free, with null-text)")
    ed.add_argument("--fast", action="store_true",
                    help="video-p2p: skip the null-text optimisation (Video-P2P's --fast)")
    ed.add_argument("--json", type=Path, help="write the report here")
    ed.set_defaults(handler=_run_edit)
    sweep = kinds.add_parser("sweep", help="tune-step over frames and sizes, with plots",
                             formatter_class=_HelpFormatter)  # fmt: skip
    sweep.add_argument("--frames", type=int, nargs="+", default=[8, 16, 24, 32],
                       help="frame counts to time")  # fmt: skip
    sweep.add_argument("--sizes", type=int, nargs="+", default=[64],
                       help="frame sides in pixels to time")  # fmt: skip
    sweep.add_argument("--out", type=Path, default=DEFAULT_OUT,
                       help="folder for <name>.json, .md and .png")  # fmt: skip
    sweep.add_argument("--name", default=None, help="file stem (default: sweep-<model>-<device>)")
    _common(sweep)
    sweep.set_defaults(handler=_run_sweep)
    quality = kinds.add_parser("quality", help="methods compared on many synthetic clips",
                               formatter_class=_HelpFormatter)  # fmt: skip
    quality.add_argument("--clips", type=int, default=8, help="number of seeded clips")
    quality.add_argument("--seed", type=int, default=0, help="seed of the clips and the runs")
    quality.add_argument("--skip-clips", type=int, default=0, metavar="K",
                         help="start at the seed's clip K+1: a run that continues one of "
                         "K clips (python -m inr_smooth.bench.merge --append joins "
                         "them)")  # fmt: skip
    quality.add_argument("--world", choices=("simple", "rich"), default="simple",
                         help="simple: one flat object; rich: textures, two objects, occlusion,"
                              " a camera pan, scale change")  # fmt: skip
    quality.add_argument("--model", default="mini", help="base model")
    quality.add_argument("--frames", type=int, default=8, help="frames per clip (>= 3)")
    quality.add_argument("--size", type=int, default=64, help="frame side in px")
    quality.add_argument("--tune-steps", type=int,
                         help="tuning steps (default: the demo's)")  # fmt: skip
    quality.add_argument("--inference-steps", type=int,
                         help="DDIM steps (default: the demo's)")  # fmt: skip
    quality.add_argument("--device", default="auto", help="auto | cpu | cuda")
    quality.add_argument("--methods", nargs="+", metavar="METHOD",
                         help="methods (default: the demo's five; also tune:controlvideo, "
                         "tune:controlvideo+inr, edit:video-p2p, edit:video-p2p+inr)")  # fmt: skip
    quality.add_argument("--jobs", type=int, default=1,
                         help="clips run at once, one CPU thread each (same results)")  # fmt: skip
    quality.add_argument("--out", type=Path, default=DEFAULT_OUT,
                         help="results folder")  # fmt: skip
    quality.add_argument("--name", default="quality",
                         help="subfolder of --out: table.md, chart.png, results.json (a "
                              "previous report there is replaced)")  # fmt: skip
    quality.set_defaults(handler=_run_quality)
    qs = kinds.add_parser(
        "quality-sweep", help="bench quality over the values of one setting",
        formatter_class=_HelpFormatter,
        description="Run bench quality once per value of one numeric setting on the same clips "
                    "and write OUT/NAME/{table.md,results.json,sweep.png}: colour flicker and "
                    "warp error against colour accuracy, shape IoU, trajectory error and motion "
                    "ratio, a curve per method, error bars over clips. Example: inr-smooth bench "
                    "quality-sweep --param inversion_weight --values 0 0.5 1 --methods edit:inr",
    )  # fmt: skip
    qs.add_argument("--param", required=True,
                    help="a numeric setting: smooth_weight (lambda of tune:inr/smoothvideo), "
                         "inversion_weight (gamma of edit:inr), tune_guidance_scale, "
                         "...")  # fmt: skip
    qs.add_argument("--values", type=float, nargs="+", required=True, help="its values")
    qs.add_argument("--methods", nargs="+", metavar="METHOD", default=["tune:inr"],
                    help="methods run at every value")  # fmt: skip
    qs.add_argument("--clips", type=int, default=4, help="number of seeded clips (>= 2)")
    qs.add_argument("--seed", type=int, default=0, help="seed of the clips and the runs")
    qs.add_argument("--world", choices=("simple", "rich"), default="simple", help="clip split")
    qs.add_argument("--model", default="mini", help="base model")
    qs.add_argument("--frames", type=int, default=8, help="frames per clip (>= 3)")
    qs.add_argument("--size", type=int, default=64, help="frame side in px")
    qs.add_argument("--tune-steps", type=int, help="tuning steps (default: the demo's)")
    qs.add_argument("--inference-steps", type=int, help="DDIM steps (default: the demo's)")
    qs.add_argument("--device", default="auto", help="auto | cpu | cuda")
    qs.add_argument("--jobs", type=int, default=1, help="clips run at once")
    qs.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    qs.add_argument("--name", default=None,
                    help="subfolder of --out (default: sweep-<param>): table.md, sweep.png, "
                         "results.json")  # fmt: skip
    qs.set_defaults(handler=_run_quality_sweep)


def _at_least(**values: tuple[int | None, int]) -> None:
    """One line for the first ``flag=(value, least)`` below its least value."""
    for flag, (value, least) in values.items():
        if value is not None and value < least:
            raise CLIError(f"--{flag.replace('_', '-')} must be at least {least}, got {value}")


def _check_sizes(*sizes: int) -> None:
    for size in sizes:
        if size < 8 or size % 8:
            raise CLIError(f"--size must be a positive multiple of 8 (the VAE), got {size}")


def _check_output(check, path: Path, what: str) -> None:
    """Run an ``outputs`` check (torch-free) as one CLIError line."""
    from ..outputs import OutputError

    try:
        check(path, what=what)
    except OutputError as exc:
        raise CLIError(str(exc)) from None


def _written(write, *args) -> None:
    """A write whose failure (disk full, read-only) is one line naming the path."""
    from ..outputs import OutputError

    try:
        write(*args)
    except OutputError as exc:
        raise CLIError(str(exc)) from None


def _check_steps(args: argparse.Namespace, frames: list[int], sizes: list[int]) -> None:
    _at_least(repeats=(args.repeats, 1), warmup=(args.warmup, 0))
    _at_least(frames=(min(frames), 2))
    _check_sizes(*sizes)


def _bench(args: argparse.Namespace, frames: int, size: int):
    from ..bench.tune_step import TuneStepBench

    try:
        return TuneStepBench(
            model=args.model, frames=frames, size=size, modes=tuple(args.modes),
            repeats=args.repeats, warmup=args.warmup, mixed_precision=args.mixed_precision,
            gradient_checkpointing=args.gradient_checkpointing, device=args.device,
            frozen_low_precision=not args.fp32_frozen, host=args.host,
        )  # fmt: skip
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _run(bench) -> dict:
    from ..bench.tune_step import run_tune_step_bench

    try:
        return run_tune_step_bench(bench)
    except (ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from None


def _run_tune_step(args: argparse.Namespace) -> None:
    from ..outputs import check_output_file, write_json_atomic

    _check_steps(args, [args.frames], [args.size])
    if args.json:
        _check_output(check_output_file, args.json, "--json file")
    from ..bench.report import tune_step_table

    report = _run(_bench(args, args.frames, args.size))
    print(tune_step_table([report]))
    if args.json:
        _written(write_json_atomic, args.json, report)
        print(f"wrote {args.json}")


def _run_sweep(args: argparse.Namespace) -> None:
    from ..outputs import check_output_dir, write_json_atomic, write_text_atomic

    _check_steps(args, args.frames, args.sizes)
    _check_output(check_output_dir, args.out, "--out folder")
    from ..bench.report import plot_scaling, tune_step_table

    benches = [_bench(args, frames, size) for size in args.sizes for frames in args.frames]
    reports = [_run(bench) for bench in benches]
    name = args.name or f"sweep-{Path(args.model).name}-{reports[0]['versions']['device']}"
    table = tune_step_table(reports)
    _written(write_json_atomic, args.out / f"{name}.json", {"reports": reports})
    _written(write_text_atomic, args.out / f"{name}.md", table)
    _written(plot_scaling, reports, args.out / f"{name}.png")
    print(table)
    print(f"wrote {args.out / name}.json, .md, .png")


def _check_quality_args(args: argparse.Namespace, methods: tuple, runners) -> None:
    """The checks ``bench quality`` and ``quality-sweep`` share, before any model loads."""
    if any(m not in runners for m in methods):
        raise CLIError(f"unknown --methods {methods}; expected some of {list(runners)}")
    if args.clips < 2:
        raise CLIError(f"--clips must be at least 2 (for standard errors), got {args.clips}")
    _at_least(jobs=(args.jobs, 1), frames=(args.frames, 3), tune_steps=(args.tune_steps, 1),
              inference_steps=(args.inference_steps, 1))  # fmt: skip
    _check_sizes(args.size)


def _quality_settings(args: argparse.Namespace):
    """The demo's :class:`~inr_smooth.quality.QualitySettings` with the flags given."""
    from ..quality import QualitySettings, with_overrides

    base = QualitySettings(model=args.model, frames=args.frames, size=args.size, seed=args.seed,
                           device=args.device)  # fmt: skip
    return with_overrides(base, tune_steps=args.tune_steps, inference_steps=args.inference_steps)


@contextmanager
def _case_log(folder: Path, keys: set[str]) -> Iterator:
    """The finished cases of the run that writes ``folder``: ``FOLDER.cases.jsonl`` beside it,
    one line per case as it is scored. A rerun of the same command continues from it (only
    cases of the same clips, settings and methods count); it is removed once the report is
    written."""
    from ..results_log import ResultsLog

    log = ResultsLog(folder.with_name(folder.name + ".cases.jsonl"))
    log.keep_only(keys)
    found = len(log.read())
    if found:
        print(f"resuming: {found} of {len(keys)} cases already scored in {log.path}",
              file=sys.stderr)  # fmt: skip
    try:
        yield log
    except BaseException:
        kept = len(log.read())
        if kept:
            print(f"{kept} of {len(keys)} cases kept in {log.path}: the same command "
                  "continues from them", file=sys.stderr)  # fmt: skip
        raise
    log.path.unlink(missing_ok=True)


def _run_quality(args: argparse.Namespace) -> None:
    from ..demo import REPORT_FILES, check_report_folder
    from ..quality import METHODS, RUNNERS

    methods = tuple(args.methods or METHODS)
    _check_quality_args(args, methods, RUNNERS)
    _at_least(skip_clips=(args.skip_clips, 0))
    folder = args.out / args.name
    _check_output(lambda p, what: check_report_folder(p, REPORT_FILES, what), folder,
                  "quality report folder")  # fmt: skip
    from ..quality import case_key, random_cases, run_cases
    from . import user_errors

    settings = _quality_settings(args)
    pairs = random_cases(args.skip_clips + args.clips, args.seed, args.world)[args.skip_clips:]
    keys = {case_key(s, t, settings, methods) for s, t in pairs}
    try:
        with _case_log(folder, keys) as log:
            results = run_cases(pairs, settings, jobs=args.jobs, methods=methods, log=log)
            _write_quality(folder, results, settings, args, pairs)
    except user_errors() as exc:
        raise CLIError(str(exc)) from None
    print(f"wrote {folder}/{', '.join(REPORT_FILES)}")


def _write_quality(folder: Path, results, settings, args: argparse.Namespace, pairs) -> None:
    from ..demo import write_report, writing_folder
    from ..quality import scene_record

    skipped = f", from clip {args.skip_clips + 1}" if args.skip_clips else ""
    title = (
        f"Quality benchmark: {args.clips} seeded synthetic clips ({args.world} world, seed "
        f"{args.seed}{skipped}), model "
        f"{settings.model}, {settings.frames} frames at {settings.size} px; mean ± standard "
        "error over clips; scores against the edited scene's exact ground truth."
    )
    extra = {"cases_scenes": [[scene_record(s), scene_record(t)] for s, t in pairs],
             "world": args.world, "report": "inr-smooth bench quality",
             "first_clip": args.skip_clips}  # fmt: skip
    with writing_folder(folder) as tmp:
        print(write_report(tmp, results, settings, title, extra))


def _run_quality_sweep(args: argparse.Namespace) -> None:
    from ..bench.quality_sweep import check_param
    from ..demo import check_report_folder
    from ..quality import RUNNERS

    _check_quality_args(args, tuple(args.methods), RUNNERS)
    try:
        check_param(args.param, args.values)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    folder = args.out / (args.name or f"sweep-{args.param}")
    _check_output(lambda p, what: check_report_folder(p, SWEEP_FILES, what), folder,
                  "sweep report folder")  # fmt: skip
    from ..bench.quality_sweep import run_sweep, sweep_table
    from ..quality import case_key, random_cases
    from . import user_errors

    settings = _quality_settings(args)
    pairs = random_cases(args.clips, args.seed, args.world)
    methods = tuple(args.methods)
    keys = {case_key(s, t, replace(settings, **{args.param: v}), methods)
            for v in check_param(args.param, args.values) for s, t in pairs}  # fmt: skip
    title = (f"{args.param} sweep: {args.clips} seeded clips ({args.world} world, seed "
             f"{args.seed}), model {settings.model}, {settings.frames} frames at {settings.size}"
             " px; mean ± standard error over clips")  # fmt: skip
    try:
        with _case_log(folder, keys) as log:
            points = run_sweep(pairs, settings, methods, args.param, args.values,
                               jobs=args.jobs, log=log)  # fmt: skip
            text = sweep_table(points, args.param, title)
            _write_sweep(folder, title, text, points, settings, args, pairs)
    except user_errors() as exc:
        raise CLIError(str(exc)) from None
    print(text)
    print(f"wrote {folder}/{', '.join(SWEEP_FILES)}")


def _write_sweep(folder: Path, title: str, text: str, points, settings, args, pairs) -> None:
    from ..bench.quality_sweep import plot_sweep
    from ..demo import writing_folder
    from ..outputs import write_json_atomic, write_text_atomic
    from ..quality import scene_record

    with writing_folder(folder) as tmp:
        write_text_atomic(tmp / "table.md", text)
        plot_sweep(points, args.param, tmp / "sweep.png", title)
        write_json_atomic(tmp / "results.json", {
            "settings": settings.__dict__, "param": args.param,
            "values": [p["value"] for p in points],
            # per value, per clip: scores as bench quality stores them, and seconds
            "cases": [[{m: r["scores"] for m, r in c.items()} for c in p["cases"]]
                      for p in points],
            "seconds": [[{m: r.get("seconds") for m, r in c.items()} for c in p["cases"]]
                        for p in points],
            "losses": [[{m: r["losses"] for m, r in c.items() if "losses" in r}
                        for c in p["cases"]] for p in points],
            "points": [{k: v for k, v in p.items() if k != "cases"} for p in points],
            "world": args.world, "methods": list(args.methods),
            "cases_scenes": [[scene_record(s), scene_record(t)] for s, t in pairs],
            "report": "inr-smooth bench quality-sweep",
        })  # fmt: skip


def _run_edit(args: argparse.Namespace) -> None:
    from ..outputs import check_output_file, write_json_atomic

    _at_least(repeats=(args.repeats, 1), warmup=(args.warmup, 0), frames=(args.frames, 2),
              inference_steps=(args.inference_steps, 1))  # fmt: skip
    _check_sizes(args.size)
    if args.json:
        _check_output(check_output_file, args.json, "--json file")
    from ..bench.edit import EditBench, edit_table, run_edit_bench
    from . import user_errors

    try:
        bench = EditBench(
            model=args.model, frames=args.frames, size=args.size,
            inference_steps=args.inference_steps, modes=tuple(args.modes),
            repeats=args.repeats, warmup=args.warmup, dtype=args.dtype, device=args.device,
            editor=args.editor, fast=args.fast,
        )  # fmt: skip
        report = run_edit_bench(bench)
    except user_errors() as exc:
        raise CLIError(str(exc)) from None
    print(edit_table(report))
    if args.json:
        _written(write_json_atomic, args.json, report)
        print(f"wrote {args.json}")
