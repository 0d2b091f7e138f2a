"""`inr-smooth demo`: an offline demonstration of the INR math (no model weights needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CLIError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="offline demonstration of the INR math (no weights needed)",
        description=(
            "Show what the INR losses and INR inversion noise do, on constructed tensors and an "
            "analytic DDIM inversion of a synthetic latent clip. Needs no model weights and "
            "runs in seconds on a CPU."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--frames", type=int, default=8, help="number of frames (>= 3)")
    p.add_argument("--size", type=int, default=32, help="latent height and width")
    p.add_argument("--steps", type=int, default=50, help="DDIM inversion steps")
    p.add_argument("--seed", type=int, default=0, help="seed of every random tensor")
    p.add_argument("--json", type=Path, default=None, help="also write the tables as JSON here")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> None:
    from ..math_demo import run

    if args.frames < 3:
        raise CLIError(f"--frames must be at least 3, got {args.frames}")
    if args.size < 4 or args.steps < 1:
        raise CLIError("--size must be at least 4 and --steps at least 1")
    print(run(args.frames, args.size, args.steps, args.seed, args.json))
    if args.json:
        print(f"\nwrote {args.json}")
