"""The ``inr-smooth`` command line: parse arguments, build a config, call the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__

DESCRIPTION = """\
Temporally smooth diffusion video synthesis with interframe noise relations (INR Smooth).

  tune      one-shot video tuning (Tune-A-Video style) with a smoothing loss
  generate  sample videos from a tuned model
  edit      training-free, inversion-based video editing with INR inversion noise
  eval      the metric suite: CLIP text alignment, CLIP frame consistency, warp error
  bench     speed and memory benchmarks
  demo      an offline demonstration of the INR math (no model weights needed)

Run `inr-smooth COMMAND --help` for each command's options.
"""

# subcommands whose issues have not landed yet: name -> (one-line help, what it will do)
PLANNED = {
    "tune": (
        "one-shot tuning with none | smoothvideo | inr smoothing",
        "Tune a Stable Diffusion 1.x model on one video with the INR(T) smoothing loss.",
    ),
    "generate": (
        "sample videos from a tuned model",
        "Generate edited videos from weights written by `inr-smooth tune`.",
    ),
    "edit": (
        "training-free editing with INR inversion noise",
        "Invert a video with DDIM, rebuild the inversion noise with INR(TF), and edit.",
    ),
    "eval": (
        "CLIP text alignment, CLIP frame consistency, optical-flow warp error",
        "Evaluate videos with the declared metric suite.",
    ),
    "bench": (
        "speed and memory benchmarks",
        "Time and measure the training step and the editor per smoothing mode.",
    ),
}


class CLIError(Exception):
    """An error the user can fix; printed as one line without a traceback."""


def _add_demo(sub: argparse._SubParsersAction) -> None:
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
    from .math_demo import run

    if args.frames < 3:
        raise CLIError(f"--frames must be at least 3, got {args.frames}")
    if args.size < 4 or args.steps < 1:
        raise CLIError("--size must be at least 4 and --steps at least 1")
    print(run(args.frames, args.size, args.steps, args.seed, args.json))
    if args.json:
        print(f"\nwrote {args.json}")


def _add_planned(sub: argparse._SubParsersAction, name: str, summary: str, text: str) -> None:
    p = sub.add_parser(
        name,
        help=f"{summary} (not yet available)",
        description=f"{text}\n\nNot yet available in this version.",
    )

    def handler(args: argparse.Namespace) -> None:
        raise CLIError(f"`inr-smooth {name}` is not yet available in version {__version__}")

    p.set_defaults(handler=handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inr-smooth",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"inr-smooth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (summary, text) in PLANNED.items():
        _add_planned(sub, name, summary, text)
    _add_demo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        args.handler(args)
    except CLIError as exc:
        print(f"inr-smooth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"inr-smooth {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
