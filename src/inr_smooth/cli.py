"""The ``inr-smooth`` command line: parse arguments, build a config, call the library."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .commands import CLIError

DESCRIPTION = """\
Temporally smooth diffusion video synthesis with interframe noise relations (INR Smooth).

  tune      one-shot video tuning (Tune-A-Video style) with a smoothing loss
  generate  sample videos from a tuned model
  edit      training-free, inversion-based video editing with INR inversion noise
  eval      the metric suite: CLIP text alignment, CLIP frame consistency, warp error
  bench     speed and memory benchmarks
  demo      the whole job offline on synthetic clips, scored with exact ground truth

Run `inr-smooth COMMAND --help` for each command's options.
"""

# every subcommand, in the order of --help; each has a module inr_smooth.commands.<name>
COMMANDS = ("tune", "generate", "edit", "eval", "bench", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inr-smooth",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"inr-smooth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).register(sub)
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
