"""`inr-smooth demo`: the whole job offline, on the shipped mini model, with exact scores."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CLIError, user_errors

DESCRIPTION = """\
Run the whole job offline on a CPU in a few minutes, with the shipped inr-smooth-mini model:

  1. render a synthetic source clip: "a red circle moving right on a blue background"
  2. one-shot tuning with smoothing none, smoothvideo and inr, each generating the edit
     "a green square moving right on a blue background"
  3. training-free inversion editing with gamma 0 (plain inversion) and the default gamma
  4. score every output against the edited scene's exact ground truth (colour accuracy,
     shape IoU, position error, colour flicker) and with the DIS optical-flow warp error
  5. write comparison.mp4/.gif (all outputs side by side), table.md, chart.png and
     results.json into --output, and print the table

The table is reproducible from --seed. `--math` instead prints the tables of the INR
mathematics on constructed tensors (seconds, no model at all).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the whole job offline on the shipped mini model, with exact scores",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--output", type=Path, default=Path("outputs/demo"), help="output folder (outputs/demo)"
    )
    p.add_argument("--model", default="mini", help="base model (default: the shipped mini)")
    p.add_argument("--frames", type=int, default=8, help="frames of the clip (>= 3)")
    p.add_argument("--size", type=int, default=None, help="frame side in px (demo: 64)")
    p.add_argument("--tune-steps", type=int, default=None, help="tuning steps per method")
    p.add_argument("--inference-steps", type=int, default=None, help="DDIM steps")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument(
        "--methods", nargs="+", metavar="METHOD",
        help="methods to run (default: the five above; also tune:controlvideo and "
        "tune:controlvideo+inr: ControlVideo with the mini-canny ControlNet)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    math = p.add_argument_group("--math: the INR mathematics on constructed tensors")
    math.add_argument("--math", action="store_true", help="print the math tables only")
    math.add_argument("--ddim-steps", type=int, default=50, help="DDIM inversion steps")
    math.add_argument("--json", type=Path, default=None, help="also write the tables as JSON")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> None:
    if args.frames < 3:
        raise CLIError(f"--frames must be at least 3, got {args.frames}")
    if args.math:
        _run_math(args)
        return
    from ..demo import run_demo
    from ..quality import METHODS, RUNNERS, QualitySettings, with_overrides

    methods = tuple(args.methods or METHODS)
    unknown = [m for m in methods if m not in RUNNERS]
    if unknown:
        raise CLIError(f"unknown --methods {unknown}; expected some of {list(RUNNERS)}")

    settings = with_overrides(
        QualitySettings(model=args.model, frames=args.frames, seed=args.seed, device=args.device),
        size=args.size, tune_steps=args.tune_steps, inference_steps=args.inference_steps,
    )  # fmt: skip
    try:
        print(run_demo(settings, args.output, methods=methods))
    except user_errors() as exc:
        raise CLIError(str(exc)) from None


def _run_math(args: argparse.Namespace) -> None:
    from ..math_demo import run

    size = args.size or 32  # latent side
    if size < 4 or args.ddim_steps < 1:
        raise CLIError("--size must be at least 4 and --ddim-steps at least 1")
    print(run(args.frames, size, args.ddim_steps, args.seed, args.json))
    if args.json:
        print(f"\nwrote {args.json}")
