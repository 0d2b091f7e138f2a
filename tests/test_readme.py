"""Every `inr-smooth` command written in the README parses: no stale flag in the docs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from inr_smooth.cli import build_parser

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            words = line.split()
            if words and Path(words[0]).name == "inr-smooth":
                commands.append(line)
    return commands


def test_the_readme_has_commands():
    assert len(readme_commands()) >= 10


@pytest.mark.parametrize("command", readme_commands())
def test_a_readme_command_parses(command):
    argv = shlex.split(command)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"does not parse ({exc.code}): {command}")
    assert args.command is not None or argv == []
