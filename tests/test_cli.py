"""The command line: --help everywhere, the demo, one-line errors."""

import argparse
import json
import subprocess
import sys

import pytest

from inr_smooth import __version__
from inr_smooth.cli import build_parser, main


def subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


@pytest.mark.parametrize("command", subcommands())
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"usage: inr-smooth {command}" in capsys.readouterr().out


def test_every_option_says_what_it_does():
    def undocumented(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from undocumented(sub, [*path, name])
            elif action.option_strings and not action.help:
                yield " ".join([*path, action.option_strings[-1]])

    assert list(undocumented(build_parser(), ["inr-smooth"])) == []


def test_top_level_help_lists_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for command in ("tune", "edit", "eval", "demo"):
        assert command in out


def test_demo_prints_tables_and_writes_json(tmp_path, capsys):
    out_json = tmp_path / "sub" / "demo.json"
    assert (
        main(
            [
                "demo",
                "--math",
                "--frames",
                "4",
                "--size",
                "8",
                "--ddim-steps",
                "5",
                "--json",
                str(out_json),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "INR(T)" in out and "INR(TF)" in out
    payload = json.loads(out_json.read_text())
    perfect = payload["inr_t"][0]
    assert perfect["inr"] == 0 and perfect["smoothvideo_simple"] > 0
    plain = payload["inr_tf"][0]
    assert plain["gamma"] == 0 and plain["final_latent_shift_rms"] == 0
    assert [p.name for p in out_json.parent.iterdir()] == ["demo.json"]  # no temp file left


def test_demo_rejects_too_few_frames(capsys):
    assert main(["demo", "--math", "--frames", "2"]) == 2
    assert (
        capsys.readouterr().err.strip() == "inr-smooth demo: error: --frames must be at "
        "least 3, got 2"
    )


def test_console_entry_point_runs_as_module():
    result = subprocess.run(
        [sys.executable, "-m", "inr_smooth", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == f"inr-smooth {__version__}"
