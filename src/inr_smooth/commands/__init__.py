"""One module per ``inr-smooth`` subcommand, each with ``register(subparsers)``.

A command module parses arguments, builds a config and calls the library; it raises
:class:`CLIError` for anything the user can fix, which the CLI prints as one line.
"""

from __future__ import annotations


class CLIError(Exception):
    """An error the user can fix; printed as one line without a traceback."""


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions the library raises for input the user can fix (shown as one line). Importing
    them loads no torch: an argument error is reported before any heavy import."""
    from ..config import ConfigError
    from ..model_info import ModelLoadError
    from ..outputs import OutputError
    from ..video_io import VideoError

    return (ConfigError, ModelLoadError, OutputError, VideoError, FileNotFoundError,
            FileExistsError, NotADirectoryError, ValueError)  # fmt: skip
