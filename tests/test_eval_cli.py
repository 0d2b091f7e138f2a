"""`inr-smooth eval` end to end: one video, a resumable manifest, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from inr_smooth.cli import main
from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import write_video
from tiny_clip import save_tiny_clip


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    smooth = render(Scene(color="red", shape="circle", motion="right"), frames=6, size=32)
    flicker = smooth.copy()
    flicker[1::2] = (flicker[1::2] * 0.5).astype(np.uint8)
    return {
        "smooth": write_video(folder / "smooth.gif", smooth),
        "flicker": write_video(folder / "flicker.gif", flicker),
    }


def test_eval_one_video_with_a_tiny_clip_and_dis(clip_folder, videos, tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(["eval", str(videos["smooth"]), "--prompt", "a red circle", "--source",
                 str(videos["flicker"]), "--clip-model", str(clip_folder), "--flow", "dis",
                 "--json", str(out), "--csv", str(tmp_path / "r.csv")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "metric suite v1" in printed and "| smooth.gif |" in printed
    report = json.loads(out.read_text())
    assert report["suite"]["version"] == "1" and report["clip_backbone"] == str(clip_folder)
    assert report["flow_estimator"].startswith("DISFlow")
    source, video = report["videos"]
    assert source["method"] == "source"
    for key in ("clip_text", "clip_frame", "clip_frame_allpairs", "warp_error", "flow_magnitude"):
        assert np.isfinite(video[key])
    assert -1 <= video["clip_text"] <= 1 and video["clip_frame"] <= 1 + 1e-6
    assert source["warp_error"] > 2 * video["warp_error"]  # the flickering source
    assert (tmp_path / "r.csv").read_text().startswith("video,prompt,method,source,clip_text")


def test_manifest_resumes_and_writes_table_csv_and_chart(videos, tmp_path, capsys):
    manifest = tmp_path / "runs.csv"
    manifest.write_text(
        "video,prompt,method\n"
        f"{videos['smooth']},a red circle,inr\n{videos['flicker']},a red circle,none\n"
    )
    out = tmp_path / "results"
    argv = ["eval", "--manifest", str(manifest), "--out", str(out), "--no-clip", "--flow", "dis"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "chart.png", "results.csv", "results.jsonl", "table.md"
    ]  # fmt: skip
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["clip_text"] is None
    # a rerun with one more video evaluates only that one (the earlier results are reused)
    (out / "results.jsonl").write_text(lines[0] + "\n" + '{"cut by a cra')
    assert main(argv) == 0
    again = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()[::2]]
    assert [r["method"] for r in again] == ["inr", "none"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.mp4", "--prompt", "x", "--flow", "dis"], "video not found"),
        (["--prompt", "x"], "give VIDEO arguments or --manifest"),
        (["V", "--flow", "dis"], "--prompt is needed"),
        (["V", "--prompt", "x", "--flow", "dis", "--clip-model", "/no/such/clip"],
         "could not load the CLIP model"),
        (["V", "--no-clip", "--flow", "raft", "--raft-weights", "/no/raft.pth"],
         "RAFT weights not found"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(videos, capsys, argv, message):
    argv = [str(videos["smooth"]) if a == "V" else a for a in argv]
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("inr-smooth eval: error:") and "\n" not in err and message in err
