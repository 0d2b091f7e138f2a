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
    (folder / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return {
        "corrupt": folder / "corrupt.mp4",
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
    assert "metric suite v2" in printed and "| smooth.gif |" in printed
    report = json.loads(out.read_text())
    assert report["suite"]["version"] == "2" and report["clip_backbone"] == str(clip_folder)
    assert report["flow_estimator"].startswith("DISFlow")
    assert {"torch", "transformers", "torchvision", "opencv", "av", "device"} <= set(
        report["environment"]
    )
    source, video = report["videos"]
    assert source["method"] == "source"
    for key in ("clip_text", "clip_frame", "clip_frame_allpairs", "warp_error", "flow_magnitude"):
        assert np.isfinite(video[key])
    assert -1 <= video["clip_text"] <= 1 and video["clip_frame"] <= 1 + 1e-6
    assert source["warp_error"] > 2 * video["warp_error"]  # the flickering source
    assert (
        (tmp_path / "r.csv")
        .read_text()
        .startswith("video,name,prompt,method,source,frames,height,width,clip_text")
    )
    assert (video["frames"], video["height"], video["width"]) == (6, 32, 32)


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
    # a rerun after a crash evaluates only the missing video (the earlier result is reused)
    (out / "results.jsonl").write_text(lines[0] + "\n" + '{"cut by a cra')
    assert main(argv) == 0
    again = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["method"] for r in again] == ["inr", "none"] and again[0] == json.loads(lines[0])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.mp4", "--prompt", "x", "--flow", "dis"], "video not found"),
        (["--prompt", "x"], "give VIDEO arguments or --manifest"),
        (["V", "--flow", "dis"], "--prompt is needed"),
        (["V", "--prompt", "x", "--flow", "dis", "--clip-model", "/no/such/clip"],
         "CLIP model folder not found"),
        (["V", "--prompt", "x", "--flow", "dis", "--clip-model", "CORRUPT"], "got a file"),
        (["V", "--prompt", "x", "--flow", "dis", "--clip-model", "DIR"],
         "could not load the CLIP model"),
        (["CORRUPT", "--no-clip", "--flow", "dis"], "cannot decode"),
        (["V", "--no-clip", "--flow", "dis", "--frames", "1"], "--frames must be at least 2"),
        (["V", "--no-clip", "--flow", "dis", "--size", "30"], "multiple of 8"),
        (["V", "--no-clip", "--flow", "raft", "--raft-weights", "/no/raft.pth"],
         "RAFT weights not found"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line(videos, capsys, argv, message):
    names = {"V": str(videos["smooth"]), "CORRUPT": str(videos["corrupt"]),
             "DIR": str(videos["smooth"].parent)}  # fmt: skip
    argv = [names.get(a, a) for a in argv]
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("inr-smooth eval: error:") and "\n" not in err and message in err


def test_clip_features_batch_and_match_the_model(clip_folder, videos):
    """Embeddings do not depend on the batch size and are CLIPModel's own projections."""
    import torch

    from inr_smooth.metrics import ClipFeatures
    from inr_smooth.video_io import read_video

    frames = read_video(videos["smooth"])
    one = ClipFeatures(str(clip_folder), device="cpu", batch_size=1)
    many = ClipFeatures(str(clip_folder), device="cpu", batch_size=16)
    images, text = one.images(frames), one.text(["a red circle", "a blue square"])
    assert images.shape == (6, 16) and text.shape == (2, 16)
    assert torch.allclose(images, many.images(frames), atol=1e-5)
    inputs = one.processor(text=["a red circle"], images=list(frames[:2]), return_tensors="pt")
    with torch.no_grad():
        out = one.model(**inputs)
    unit = torch.nn.functional.normalize
    assert torch.allclose(unit(images[:2], dim=-1), out.image_embeds, atol=1e-5)
    assert torch.allclose(unit(text[:1], dim=-1), out.text_embeds, atol=1e-5)


def test_yaml_manifest_scores_each_source_once(videos, tmp_path, capsys):
    manifest = tmp_path / "runs.yaml"
    manifest.write_text(
        f"- {{video: {videos['smooth']}, prompt: a red circle, method: inr,"
        f" source: {videos['flicker']}}}\n"
        f"- {{video: {videos['smooth']}, prompt: a red circle, method: none,"
        f" source: {videos['flicker']}}}\n"
    )
    out = tmp_path / "results"
    argv = ["eval", "--manifest", str(manifest), "--out", str(out), "--no-clip", "--flow", "dis"]
    assert main([*argv, "--json", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["videos"]
    assert [r["method"] for r in rows] == ["source", "inr", "none"]
    assert "| flicker.gif | source |" in capsys.readouterr().out
    assert main([*argv, "--source", str(videos["flicker"])]) == 2
    assert "--source goes with VIDEO arguments" in capsys.readouterr().err


def test_help_defines_every_metric(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = capsys.readouterr().out
    for name in ("clip_text", "clip_frame_allpairs", "warp_error", "flow_magnitude"):
        assert name in text
    assert "[-1, 1]" in text and "0.01 (|f_fw|^2 + |f_bw|^2) + 0.5" in text
