"""One module per ``inr-smooth`` subcommand, each with ``register(subparsers)``.

A command module parses arguments, builds a config and calls the library; it raises
:class:`CLIError` for anything the user can fix, which the CLI prints as one line.
"""

from __future__ import annotations


class CLIError(Exception):
    """An error the user can fix; printed as one line without a traceback."""
