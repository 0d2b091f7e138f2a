"""`inr-smooth edit` end to end on a tiny SD folder: outputs, log, presets, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inr_smooth.cli import main
from inr_smooth.pipelines.edit import EditPipeline
from inr_smooth.pipelines.sampling import slug
from inr_smooth.synthetic import random_scene, render
from inr_smooth.video_io import read_video, write_video

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "edit"
SCENE = random_scene(np.random.default_rng(0))
EDITED = SCENE.edited(color="green" if SCENE.color != "green" else "yellow").caption


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames = render(SCENE, frames=6, size=32)
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=8)


def edit_args(tiny_sd_folder, video, output, *extra) -> list[str]:
    return [
        "edit", "--video", str(video), "--source-prompt", SCENE.caption, "--prompt", EDITED,
        "--model", str(tiny_sd_folder), "--frames", "4", "--size", "16", "--inference-steps", "3",
        "--output", str(output), *extra,
    ]  # fmt: skip


def test_cli_edit_end_to_end_with_the_cache(tiny_sd_folder, video, tmp_path, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    extra = [
        "--blend-words",
        SCENE.shape,
        "--fusion-min-downsample",
        "1",
        "--cache-dir",
        str(cache),
    ]
    assert main(edit_args(tiny_sd_folder, video, out, *extra)) == 0, capsys.readouterr().err
    assert "inversion cache: miss (saved)" in capsys.readouterr().out
    name = slug(EDITED)
    assert {p.name for p in out.iterdir()} == {
        f"{name}.mp4", f"{name}.gif", f"{name}-side-by-side.mp4", "config.yaml", "log.json",
    }  # fmt: skip
    assert read_video(out / f"{name}.mp4").shape == (4, 16, 16, 3)
    log = json.loads((out / "log.json").read_text())
    stages = {"load", "encode", "inversion", "sampling", "decode", "write"}
    assert set(log["stages"]) == stages
    for entry in log["stages"].values():
        assert entry["seconds"] >= 0 and any(k.startswith("peak_cpu_rss_mb") for k in entry)
    assert log["config"]["inversion_weight"] == 1.0 and log["config"]["guidance_scale"] == 7.5
    assert log["config"]["attention"] == "sparse_causal"  # FateZero's default
    assert log["config"]["blend_words"] == [SCENE.shape] and log["config"]["cross_replace"] == 0.8
    report = log["attention_store"]
    assert report["entries"] > 0 and report["stored_mb"] > 0
    assert set(report["by_kind"]) == {"self", "cross", "blend"}  # cross-attention maps included
    assert sum(report["by_kind"].values()) == pytest.approx(report["stored_mb"], abs=2e-3)
    assert log["prompt_control"]["controller"] == "replace" and log["prompt_control"]["cross_steps"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())

    again = tmp_path / "again"
    code = main(edit_args(tiny_sd_folder, video, again, *extra, "--inversion-weight", "0.5"))
    assert code == 0 and "inversion cache: hit" in capsys.readouterr().out
    assert "inversion_weight: 0.5" in (again / "config.yaml").read_text()


def test_cli_edit_with_a_preset(tiny_sd_folder, video, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["edit", "--config", str(PRESETS / "origami-rabbit.yaml"), "--video", str(video),
            "--model", str(tiny_sd_folder), "--frames", "3", "--size", "16",
            "--inference-steps", "2", "--output", str(out)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    config = (out / "config.yaml").read_text()
    assert "an origami rabbit is jumping on the grass" in config and "origami: 10.0" in config
    assert (out / "an-origami-rabbit-is-jumping-on-the-grass-side-by-side.mp4").is_file()


def with_flag(args: list[str], flag: str, value: str | None) -> list[str]:
    """``args`` with ``flag`` set to ``value`` (added if absent; None: removed)."""
    args = list(args)
    if flag not in args:
        return [*args, flag, value]
    i = args.index(flag)
    if value is None:
        del args[i : i + 2]
    else:
        args[i + 1] = value
    return args


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--video", "{tmp}/missing.mp4", "video not found"),
        ("--model", "{tmp}", "not a diffusers Stable Diffusion folder"),
        ("--size", "20", "size must be a positive multiple of 8"),
        ("--frames", "50", "too few frames"),
        ("--frames", "1", "frames must be at least 2"),
        ("--blend-words", "tiger", "blend word 'tiger' is not in"),
        ("--inversion-weight", "2", "must be in [0, 1]"),
        ("--reweight", "tiger=2", "reweight word 'tiger' is not in the edit prompt"),
        ("--reweight", "green", "expected reweight entries as WORD=SCALE"),
        ("--cross-replace", "1.5", "cross_replace must be a fraction in [0, 1]"),
        ("--prompt", None, "--prompt required"),
        ("--output", "{tmp}/full", "exists and is not empty"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tiny_sd_folder, video, tmp_path, capsys, flag, value, message
):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    value = value.format(tmp=tmp_path) if value else value
    args = with_flag(edit_args(tiny_sd_folder, video, tmp_path / "out"), flag, value)
    before = sorted(tmp_path.rglob("*"))
    assert main(args) == 2
    err = capsys.readouterr().err  # (model loading may draw a progress bar before it)
    errors = [line for line in err.splitlines() if "inr-smooth edit: error: " in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert sorted(tmp_path.rglob("*")) == before


def test_ctrl_c_leaves_no_half_written_output(tiny_sd_folder, video, tmp_path, capsys, monkeypatch):
    def interrupted(self, start, store):
        raise KeyboardInterrupt

    monkeypatch.setattr(EditPipeline, "sample", interrupted)
    cache = tmp_path / "cache"
    args = edit_args(tiny_sd_folder, video, tmp_path / "out", "--cache-dir", str(cache),
                     "--attention-store", "disk")  # fmt: skip
    assert main(args) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no output, no temp folder
    suffixes = sorted(p.suffix for p in cache.iterdir() if p.name.startswith("inversion-"))
    assert suffixes == [".safetensors", ".sha256"] and len(list(cache.iterdir())) == 2


def test_help_teaches_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["edit", "--help"])
    text = capsys.readouterr().out
    for phrase in ("--inversion-weight GAMMA", "final_step", "every_step", "implied",
                   "--self-replace", "--blend-words", "--cache-dir", "examples:",
                   "--cross-replace FRACTION", "--reweight WORD=SCALE", "--controller",
                   "middle", "--cross-frame-min-channels"):  # fmt: skip
        assert phrase in text
