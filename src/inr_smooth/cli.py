"""The ``inr-smooth`` command line: parse arguments, build a config, call the library."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from . import __version__
from .commands import CLIError

DESCRIPTION = """\
Temporally smooth diffusion video synthesis with interframe noise relations (INR Smooth).

Every command runs offline on the shipped inr-smooth-mini model (--model mini, 64 px frames of
a synthetic shapes world); real use takes a Stable Diffusion 1.x hub id or local folder.
Start with `inr-smooth demo`. Run `inr-smooth COMMAND --help` for each command's options.
"""

# every subcommand, in the order of --help; each has a module inr_smooth.commands.<name>
COMMANDS = ("tune", "generate", "edit", "eval", "bench", "demo", "batch", "ui")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inr-smooth",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"inr-smooth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMANDS:
        importlib.import_module(f".commands.{name}", __package__).register(sub)
    return parser


def _one_line_warnings(command: str) -> None:
    """Warnings (a cut prompt, a cache that could not be written, ...) as one line each."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"inr-smooth {command}: warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _one_line_warnings(args.command)
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
    except OSError as exc:  # a write that failed late (disk full, a folder made read-only)
        from .outputs import WRITE_ERRNOS, describe_write_error

        if exc.errno not in WRITE_ERRNOS:
            raise
        print(f"inr-smooth {args.command}: error: {describe_write_error(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
