"""`inr-smooth bench`: speed and memory of the smoothing modes, measured side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CLIError

DESCRIPTION = """\
Speed and memory benchmarks. Each reports ratios to the unsmoothed baseline measured in the
same run (modes interleaved, medians after warm-up), so they are meaningful on noisy machines.

  tune-step  the tuning step (forward, smoothing loss, backward, AdamW) per smoothing mode
  edit       training-free editing: plain inversion vs INR(TF) final-step / every-step
  sweep      tune-step over several frame counts and sizes: markdown table and PNG plots
  quality    every smoothing method on many seeded synthetic clips, scored with exact ground
             truth: mean ± standard error per method (the demo's comparison, at scale)

Models: tiny (a 32/64-channel UNet, seconds on a CPU), sd15-arch (Stable Diffusion 1.5's UNet
architecture with random weights: speed and memory do not depend on the weights; for GPUs),
or a local model folder.
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="tiny | sd15-arch | model folder")
    p.add_argument("--modes", nargs="+", default=["none", "smoothvideo", "inr"],
                   help="smoothing modes (must include none)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per mode")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds (FLOPs counted)")
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
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    step.add_argument("--frames", type=int, default=8, help="frames per step")
    step.add_argument("--size", type=int, default=64, help="pixels (latents: size / 8)")
    step.add_argument("--json", type=Path, help="write the report here")
    _common(step)
    step.set_defaults(handler=_run_tune_step)
    ed = kinds.add_parser("edit", help="plain inversion vs INR(TF) editing",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    ed.add_argument("--model", default="tiny", help="tiny | sd15-arch | model folder | mini")
    ed.add_argument("--frames", type=int, default=8, help="frames of the edited clip")
    ed.add_argument("--size", type=int, default=64, help="frame side in pixels")
    ed.add_argument("--inference-steps", type=int, default=50, help="DDIM steps, each way")
    ed.add_argument("--modes", nargs="+", default=["plain", "inr-final", "inr-every"],
                    help="plain; INR(TF) at gamma 1, final_step / every_step")  # fmt: skip
    ed.add_argument("--repeats", type=int, default=3, help="timed rounds per mode")
    ed.add_argument("--warmup", type=int, default=1, help="untimed rounds per mode")
    ed.add_argument("--dtype", choices=("auto", "fp16", "bf16", "fp32"), default="auto",
                    help="model precision (auto: fp16 on CUDA, fp32 on CPU)")  # fmt: skip
    ed.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ed.add_argument("--json", type=Path, help="write the report here")
    ed.set_defaults(handler=_run_edit)
    sweep = kinds.add_parser("sweep", help="tune-step over frames and sizes, with plots",
                             formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    sweep.add_argument("--frames", type=int, nargs="+", default=[8, 16, 24, 32],
                       help="frame counts to time")  # fmt: skip
    sweep.add_argument("--sizes", type=int, nargs="+", default=[64],
                       help="frame sides in pixels to time")  # fmt: skip
    sweep.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                       help="folder for <name>.json, .md and .png")  # fmt: skip
    sweep.add_argument("--name", default=None, help="file stem (default: sweep-<model>-<device>)")
    _common(sweep)
    sweep.set_defaults(handler=_run_sweep)
    quality = kinds.add_parser("quality", help="methods compared on many synthetic clips",
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    quality.add_argument("--clips", type=int, default=8, help="number of seeded clips")
    quality.add_argument("--seed", type=int, default=0, help="seed of the clips and the runs")
    quality.add_argument("--model", default="mini", help="base model")
    quality.add_argument("--frames", type=int, default=8, help="frames per clip (>= 3)")
    quality.add_argument("--size", type=int, default=64, help="frame side in px")
    quality.add_argument("--tune-steps", type=int, help="tuning steps (demo default)")
    quality.add_argument("--inference-steps", type=int, help="DDIM steps (demo default)")
    quality.add_argument("--device", default="auto", help="auto | cpu | cuda")
    quality.add_argument("--methods", nargs="+", metavar="METHOD",
                         help="methods (default: the demo's five; also tune:controlvideo, "
                         "tune:controlvideo+inr)")  # fmt: skip
    quality.add_argument("--jobs", type=int, default=1,
                         help="clips run at once, one CPU thread each (same results)")  # fmt: skip
    quality.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                         help="results folder")  # fmt: skip
    quality.add_argument("--name", default="quality",
                         help="subfolder of --out: table.md, chart.png, results.json")  # fmt: skip
    quality.set_defaults(handler=_run_quality)


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
    from ..bench.report import tune_step_table
    from ..runlog import write_json_atomic

    report = _run(_bench(args, args.frames, args.size))
    print(tune_step_table([report]))
    if args.json:
        write_json_atomic(args.json, report)
        print(f"wrote {args.json}")


def _run_sweep(args: argparse.Namespace) -> None:
    from ..bench.report import plot_scaling, tune_step_table
    from ..runlog import write_json_atomic

    reports = []
    for size in args.sizes:
        for frames in args.frames:
            reports.append(_run(_bench(args, frames, size)))
    name = args.name or f"sweep-{Path(args.model).name}-{reports[0]['versions']['device']}"
    table = tune_step_table(reports)
    write_json_atomic(args.out / f"{name}.json", {"reports": reports})
    (args.out / f"{name}.md").write_text(table)
    plot_scaling(reports, args.out / f"{name}.png")
    print(table)
    print(f"wrote {args.out / name}.json, .md, .png")


def _run_quality(args: argparse.Namespace) -> None:
    from ..demo import write_report
    from ..quality import METHODS, RUNNERS, QualitySettings, random_cases, run_cases, with_overrides
    from . import user_errors

    methods = tuple(args.methods or METHODS)
    if any(m not in RUNNERS for m in methods):
        raise CLIError(f"unknown --methods {methods}; expected some of {list(RUNNERS)}")
    if args.clips < 2:
        raise CLIError(f"--clips must be at least 2 (for standard errors), got {args.clips}")
    if args.jobs < 1:
        raise CLIError(f"--jobs must be at least 1, got {args.jobs}")
    if args.frames < 3:
        raise CLIError(f"--frames must be at least 3, got {args.frames}")
    base = QualitySettings(
        model=args.model, frames=args.frames, size=args.size, seed=args.seed, device=args.device
    )
    settings = with_overrides(
        base, tune_steps=args.tune_steps, inference_steps=args.inference_steps
    )
    pairs = random_cases(args.clips, args.seed)
    try:
        results = run_cases(pairs, settings, jobs=args.jobs, methods=methods)
    except user_errors() as exc:
        raise CLIError(str(exc)) from None
    title = (
        f"Quality benchmark: {args.clips} seeded synthetic clips (seed {args.seed}), model "
        f"{settings.model}, {settings.frames} frames at {settings.size} px; mean ± standard "
        "error over clips; scores against the edited scene's exact ground truth."
    )
    scenes = {"cases_scenes": [[s.__dict__, t.__dict__] for s, t in pairs]}
    folder = args.out / args.name
    print(write_report(folder, results, settings, title, scenes))
    print(f"wrote {folder}/table.md, chart.png, results.json")


def _run_edit(args: argparse.Namespace) -> None:
    from ..bench.edit import EditBench, edit_table, run_edit_bench
    from ..runlog import write_json_atomic
    from . import user_errors

    try:
        bench = EditBench(
            model=args.model, frames=args.frames, size=args.size,
            inference_steps=args.inference_steps, modes=tuple(args.modes),
            repeats=args.repeats, warmup=args.warmup, dtype=args.dtype, device=args.device,
        )  # fmt: skip
        report = run_edit_bench(bench)
    except user_errors() as exc:
        raise CLIError(str(exc)) from None
    print(edit_table(report))
    if args.json:
        write_json_atomic(args.json, report)
        print(f"wrote {args.json}")
