"""One module per ``inr-smooth`` subcommand, each with ``register(subparsers)``.

A command module parses arguments, builds a config and calls the library; it raises
:class:`CLIError` for anything the user can fix, which the CLI prints as one line.
"""

from __future__ import annotations


class CLIError(Exception):
    """An error the user can fix; printed as one line without a traceback."""


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions the library raises for input the user can fix (shown as one line)."""
    from ..config import ConfigError
    from ..pipelines.components import ModelLoadError

    errors: list[type[Exception]] = [ConfigError, ModelLoadError]
    try:
        from ..video_io import VideoError

        errors.append(VideoError)
    except ImportError:  # video I/O not installed in this version
        pass
    return (*errors, FileNotFoundError, FileExistsError, NotADirectoryError, ValueError)
