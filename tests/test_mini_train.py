"""The inr-smooth-mini training script and the `mini` model name (no shipped weights needed)."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

import inr_smooth.mini as mini_package
from inr_smooth.mini import resolve_model
from inr_smooth.mini.train import MiniTrainConfig, command_line, main, train_mini
from inr_smooth.pipelines.components import load_parts


def test_resolve_model_passes_paths_on_and_reports_a_missing_model(monkeypatch, tmp_path):
    assert resolve_model("some/other") == "some/other"
    monkeypatch.setattr(mini_package, "MINI_MODEL_DIR", tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="missing from"):
        resolve_model("mini")


def test_training_script_runs_end_to_end(tmp_path):
    out = tmp_path / "model"
    config = MiniTrainConfig(
        output=str(out), vae_steps=2, unet_steps=2, vae_batch_size=2, batch_size=2
    )
    train_mini(config)
    assert {p.name for p in out.iterdir()} == {
        "tokenizer", "text_encoder", "vae", "unet", "scheduler", "training.json",
        "model_index.json", "inr_smooth_defaults.json",
    }  # fmt: skip
    parts = load_parts(str(out))
    assert parts.unet.config.cross_attention_dim == parts.text_encoder.config.hidden_size
    assert parts.vae.config.scaling_factor != 0.18215  # measured from the latents
    record = json.loads((out / "training.json").read_text())
    assert record["command"] == command_line(config) and len(record["unet_loss"]) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temp folder left


def test_training_script_rejects_a_bad_holdout(tmp_path, capsys):
    with pytest.raises(ValueError, match="colour> <shape"):
        train_mini(MiniTrainConfig(output=str(tmp_path / "m"), holdout="pink circle"))
    with pytest.raises(SystemExit) as exc:  # the command line: one line, exit code 2
        main(["--output", str(tmp_path / "m"), "--holdout", "pink circle"])
    assert exc.value.code == 2
    assert "colour> <shape" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "m").exists()


def test_training_script_help(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping inside a help text
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--unet-steps" in out
    for item in fields(MiniTrainConfig):  # every flag says what it does
        assert item.metadata["help"] in out
