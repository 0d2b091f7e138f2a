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
  4. score every output against the edited scene's exact ground truth: colour accuracy and
     shape IoU where the output object is, colour flicker and the DIS warp error (suite v2),
     and beside them the object's motion: motion ratio (its path over the target's; 1 = as
     far as the target, near 0 = frozen) and trajectory error (distance from the target's
     centre per frame), so that a frozen clip never looks like the smoothest
  5. write comparison.mp4/.gif (all outputs side by side), table.md, chart.png and
     results.json into --output (written whole when done; a previous demo output there is
     replaced, any other non-empty folder refused), and print the table

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
        "tune:controlvideo+inr: ControlVideo with the mini-canny ControlNet; edit:video-p2p "
        "and edit:video-p2p+inr: Video-P2P, T2S tuning then its editor)",
    )  # fmt: skip
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    math = p.add_argument_group("--math: the INR mathematics on constructed tensors")
    math.add_argument("--math", action="store_true", help="print the math tables only")
    math.add_argument("--ddim-steps", type=int, default=50, help="DDIM inversion steps")
    math.add_argument("--json", type=Path, default=None, help="also write the tables as JSON")
    p.set_defaults(handler=_run)


def _check(args: argparse.Namespace) -> None:
    """Every flag and the output, before anything heavy is imported (one line each)."""
    from ..outputs import OutputError, check_output_file

    if args.frames < 3:
        raise CLIError(f"--frames must be at least 3, got {args.frames}")
    for flag, value in (("--tune-steps", args.tune_steps), ("--inference-steps",
                        args.inference_steps), ("--ddim-steps", args.ddim_steps)):  # fmt: skip
        if value is not None and value < 1:
            raise CLIError(f"{flag} must be at least 1, got {value}")
    if args.math:
        if args.size is not None and args.size < 4:
            raise CLIError(f"--size must be at least 4 (latent side), got {args.size}")
    elif args.size is not None and (args.size < 8 or args.size % 8):
        raise CLIError(f"--size must be a positive multiple of 8 (the VAE), got {args.size}")
    try:
        if args.math and args.json:
            check_output_file(args.json, what="--json file")
        if not args.math:
            from ..demo import DEMO_FILES, check_report_folder

            check_report_folder(args.output, DEMO_FILES, what="--output folder")
    except OutputError as exc:
        raise CLIError(str(exc)) from None


def _run(args: argparse.Namespace) -> None:
    _check(args)
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
    from ..outputs import OutputError

    try:
        print(run(args.frames, args.size or 32, args.ddim_steps, args.seed, args.json))
    except OutputError as exc:
        raise CLIError(str(exc)) from None
    if args.json:
        print(f"\nwrote {args.json}")
