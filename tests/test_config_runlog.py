"""YAML configs (unknown keys raise) and the per-stage run log."""

import json
from dataclasses import dataclass
from typing import Literal

import pytest

from inr_smooth.config import ConfigError, config_to_dict, load_config
from inr_smooth.runlog import RunLog, write_json_atomic


@dataclass(frozen=True)
class Example:
    video: str
    steps: int = 10
    rate: float = 1e-3
    mode: Literal["a", "b"] = "a"
    prompts: tuple[str, ...] = ()
    weight: float | None = None


def test_yaml_preset_with_overrides(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("video: clip.mp4\nsteps: 5\nrate: 1\nprompts: [one, two]\nmode: b\n")
    config = load_config(Example, preset, steps=7, weight=None)
    assert config == Example("clip.mp4", 7, 1.0, "b", ("one", "two"), None)
    assert config_to_dict(config)["prompts"] == ["one", "two"]


@pytest.mark.parametrize(
    "text, match",
    [
        ("video: x\nstepz: 5\n", "unknown Example key.*stepz"),
        ("video: x\nmode: c\n", r"mode must be one of \['a', 'b'\]"),
        ("video: x\nsteps: five\n", "steps must be int"),
        ("steps: 5\n", "video"),
        ("- a\n- b\n", "mapping"),
        ("video: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_presets(tmp_path, text, match):
    preset = tmp_path / "p.yaml"
    preset.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(Example, preset)


def test_missing_preset_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Example, tmp_path / "nope.yaml")


def test_run_log_records_stages_and_series(tmp_path):
    log = RunLog("cpu")
    with log.stage("work"):
        sum(range(10000))
    log.append("loss", 1.0)
    log.write(tmp_path / "log.json")
    data = json.loads((tmp_path / "log.json").read_text())
    assert data["stages"]["work"]["seconds"] >= 0
    assert any(key.startswith("peak_cpu_rss_mb") for key in data["stages"]["work"])
    assert data["loss"] == [1.0] and data["environment"]["torch"]


def test_atomic_json_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"x": 1})

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("inr_smooth.outputs.os.replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(target, {"x": 2})
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
    assert json.loads(target.read_text()) == {"x": 1}
