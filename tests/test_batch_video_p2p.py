"""`inr-smooth batch` with Video-P2P: both stages resolved as the CLI resolves them, one T2S run
per clip shared by its jobs, and the edit the API's two stages make."""

from __future__ import annotations

import json

import numpy as np
import yaml

from inr_smooth.batch.grid import load_grid
from inr_smooth.batch.jobs import expand
from inr_smooth.cli import main
from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import read_video, write_video

RED = Scene()
EDIT = RED.edited(shape="square")


def _grid(folder, **parameters):
    write_video(folder / "red.gif", render(RED, 3, 64))
    grid = {"model": "mini",
            "videos": [{"path": "red.gif", "prompt": RED.caption, "scene": dict(RED.__dict__)}],
            "prompts": [EDIT.caption], "methods": ["edit:video-p2p", "edit:video-p2p+inr"],
            "parameters": {"video-p2p": {"blend_words": ["circle"],
                                         "edit_blend_words": ["square"], **parameters}},
            "frames": 3, "stride": 1, "inference_steps": 2, "seed": 0,
            "eval": {"clip": False, "flow": "dis"}}  # fmt: skip
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def test_video_p2p_jobs_resolve_both_stages(tmp_path):
    from inr_smooth.pipelines.video_p2p_config import video_p2p_config

    plain, inr = expand(load_grid(_grid(tmp_path)))
    cli = video_p2p_config(video="v", source_prompt="s", prompt="p", model="mini").config
    for job, gamma in ((plain, 0.0), (inr, 0.5)):  # the paper's gamma for Video-P2P
        c = job.prepared.config
        assert (c.editor, c.inversion_weight, c.frames) == ("video-p2p", gamma, 3)
        assert (c.cross_replace, c.attention, c.self_replace) == (
            cli.cross_replace, cli.attention, cli.self_replace)  # fmt: skip
        assert (c.t2s_steps, c.t2s_learning_rate) == (60, 1e-4)  # mini's recommendation
    # a value the grid gives is kept, even FateZero's default (gamma 1.0)
    (job,) = [j for j in expand(load_grid(_grid(tmp_path, gamma=1.0, t2s_steps=0)))
              if j.method == "edit:video-p2p+inr"]  # fmt: skip
    assert (job.prepared.config.inversion_weight, job.prepared.config.t2s_steps) == (1.0, 0)


def test_video_p2p_batch_tunes_once_per_clip_and_edits_as_the_api(tmp_path, one_thread):
    from inr_smooth.pipelines.edit import edit
    from inr_smooth.pipelines.tune import tune
    from inr_smooth.pipelines.video_p2p_config import t2s_config, video_p2p_config

    out = tmp_path / "out"
    assert main(["batch", str(_grid(tmp_path, t2s_steps=2)), "--output", str(out),
                 "--threads", "1", "--skip-memory-check"]) == 0  # fmt: skip
    (t2s,) = [p for p in (out / "t2s").iterdir()]  # one run for both methods, none left over
    assert (t2s / "weights" / "tune.json").is_file() and not t2s.name.startswith(".")
    records = {json.loads(p.read_text())["method"]: p.parent
               for p in out.glob("runs/*/batch-job.json")}  # fmt: skip
    assert sorted(records) == ["edit:video-p2p", "edit:video-p2p+inr"]
    video = str(tmp_path / "red.gif")
    tune(t2s_config(video=video, prompt=RED.caption, model="mini", smoothing="none", frames=3,
                    steps=2, learning_rate=1e-4, checkpoint_every=0, output=str(tmp_path / "t")),
         progress=False)  # fmt: skip
    api = edit(video_p2p_config(
        video=video, source_prompt=RED.caption, prompt=EDIT.caption, model="mini", frames=3,
        weights=str(tmp_path / "t" / "weights"), inference_steps=2, inversion_weight=0.5,
        blend_words=("circle",), edit_blend_words=("square",), output=str(tmp_path / "api"),
    ), progress=False)  # fmt: skip
    expected = read_video(next(p for p in api.files if p.suffix == ".gif"))
    (gif,) = (records["edit:video-p2p+inr"] / "edit").glob("*.gif")
    np.testing.assert_array_equal(read_video(gif), expected)
    assert "edit:video-p2p+inr" in (out / "table.md").read_text()
