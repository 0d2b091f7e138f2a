"""`inr-smooth eval`: what is read (source at the videos' frames and size), row names, results
keyed by content and settings, malformed manifests, outputs checked first, write failures."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import numpy as np
import pytest

from inr_smooth.cli import main
from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import write_video

DIS = ["--no-clip", "--flow", "dis"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    scene = Scene(color="red", shape="circle", motion="right")
    (folder / "a").mkdir()
    (folder / "b").mkdir()
    return {
        "edit": write_video(folder / "a" / "clip.gif", render(scene, 4, 32)),
        "other": write_video(folder / "b" / "clip.gif", render(scene.edited(color="green"), 4, 32)),
        # a long, large, non-square source: 12 frames of 48 x 80
        "source": write_video(folder / "source.gif",
                              np.concatenate([render(scene, 12, 80)[:, 16:64]], axis=0)),
    }  # fmt: skip


def _run(argv, capsys):
    code = main(["eval", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_source_is_read_at_the_videos_frames_and_size(clips, tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = [str(clips["edit"]), "--source", str(clips["source"]), *DIS, "--json", str(out)]
    code, printed, err = _run(argv, capsys)
    assert code == 0, err
    source, edit = json.loads(out.read_text())["videos"]
    assert (edit["frames"], edit["height"], edit["width"]) == (4, 32, 32)
    assert (source["frames"], source["height"], source["width"]) == (4, 32, 32)
    assert "| source.gif | source | 4 × 32×32 |" in printed
    # --frames / --size win over the videos' own
    code, _, err = _run([*argv, "--frames", "3", "--size", "16"], capsys)
    assert code == 0, err
    rows = json.loads(out.read_text())["videos"]
    assert [(r["frames"], r["height"], r["width"]) for r in rows] == [(3, 16, 16)] * 2
    # videos of other sizes: the source is read like the first, and a note says so
    small = write_video(tmp_path / "small.gif", render(Scene(), 5, 16))
    code, _, err = _run([str(clips["edit"]), str(small), *argv[1:]], capsys)
    assert code == 0 and "note: source.gif is read as 4 frames of 32x32, like clip.gif" in err


def test_rows_of_same_named_videos_get_distinct_names(clips, tmp_path, capsys):
    out = tmp_path / "r.json"
    code, printed, err = _run([str(clips["edit"]), str(clips["other"]), *DIS, "--json", str(out)],
                              capsys)  # fmt: skip
    assert code == 0, err
    assert [r["name"] for r in json.loads(out.read_text())["videos"]] == ["a/clip.gif",
                                                                          "b/clip.gif"]  # fmt: skip
    assert "| a/clip.gif |" in printed and "| b/clip.gif |" in printed


def test_a_long_video_shows_progress_per_frame_pair(clips, capsys):
    code, _, err = _run([str(clips["source"]), *DIS], capsys)
    assert code == 0
    assert "flow source.gif" in err and "/11 " in err and "pair/s" in err


def test_manifest_results_are_keyed_by_video_content_and_settings(tmp_path, capsys):
    scene = Scene(color="red", shape="square", motion="down")
    one, two = tmp_path / "one.gif", tmp_path / "two.gif"
    write_video(one, render(scene, 4, 32))
    write_video(two, render(scene.edited(color="yellow"), 4, 32))
    manifest = tmp_path / "runs.csv"
    manifest.write_text(f"video,prompt,method\n{one},p,inr\n{two},p,none\n")
    out = tmp_path / "out"
    argv = ["--manifest", str(manifest), "--out", str(out), *DIS]

    def results():
        return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]

    assert _run(argv, capsys)[0] == 0
    first = results()
    # the same path, new content: that row is evaluated again, the other reused
    flicker = render(scene, 4, 32)
    flicker[1::2] //= 2
    write_video(one, flicker)
    code, printed, err = _run(argv, capsys)
    assert code == 0 and "dropped 1 earlier result(s) of other video contents" in err
    second = results()
    assert [r["method"] for r in second] == ["none", "inr"]  # kept, then appended
    assert second[0] == first[1]
    assert second[1]["warp_error"] > first[0]["warp_error"] + 0.01
    assert f"{second[1]['warp_error']:.4f}" in printed  # the table shows the new number
    # other settings: everything is evaluated again at 3 frames
    assert _run([*argv, "--frames", "3"], capsys)[0] == 0
    assert [r["frames"] for r in results()] == [3, 3]
    # unchanged: nothing is evaluated (no model is even built)
    import inr_smooth.commands.eval as command

    def no_models(args):
        raise AssertionError("models loaded although every result is stored")

    monkey = pytest.MonkeyPatch()
    monkey.setattr(command, "_models", no_models)
    try:
        assert _run([*argv, "--frames", "3"], capsys)[0] == 0
    finally:
        monkey.undo()


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("m.json", '[{"video": "a.gif", "prompt": "x"'),
        ("m.yaml", "- {video: a.gif, prompt: [x\n"),
        ("m.csv", "video,prompt\na.gif,x,extra\n"),
        ("m.csv", 'video,prompt\n"a.gif,x\n'),
        ("m.csv", b"video,prompt\n\xff\xfe,x\n"),
        ("m.csv", "name,text\na.gif,x\n"),
    ],
)
def test_a_malformed_manifest_is_one_line_naming_it(tmp_path, capsys, name, text):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    code, _, err = _run(["--manifest", str(path), *DIS], capsys)
    assert code == 2 and err.count("\n") == 1 and str(path) in err, err


def test_argument_and_output_errors_come_before_torch(clips, tmp_path):
    """Bad flags, missing videos, unwritable outputs and bad manifests: one line each, with
    torch and transformers never imported."""
    a_file = tmp_path / "file"
    a_file.write_text("x")
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    cases = [
        ["missing.gif", *DIS],
        [str(clips["edit"]), *DIS, "--frames", "1"],
        [str(clips["edit"]), *DIS, "--size", "30"],
        [str(clips["edit"]), *DIS, "--json", f"{a_file}/r.json"],
        [str(clips["edit"]), *DIS, "--csv", str(tmp_path)],
        [str(clips["edit"]), *DIS, "--out", str(a_file)],
        [str(clips["edit"]), "--prompt", "x", "--flow", "dis", "--clip-model", "/no/such/clip"],
        [str(clips["edit"]), "--no-clip", "--raft-weights", "/no/raft.pth"],
        ["--manifest", str(bad_json), *DIS],
    ]
    code = (
        "import sys, json; from inr_smooth.cli import main\n"
        f"codes = [main(['eval', *argv]) for argv in {cases!r}]\n"
        "print(json.dumps([codes, 'torch' in sys.modules, 'transformers' in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    codes, torch_loaded, transformers_loaded = json.loads(done.stdout.splitlines()[-1])
    assert codes == [2] * len(cases), done.stderr
    assert not torch_loaded and not transformers_loaded
    lines = done.stderr.strip().splitlines()
    assert len(lines) == len(cases) and all(x.startswith("inr-smooth eval: error:") for x in lines)


def test_outputs_are_checked_before_any_model_loads(clips, readonly_dir, capsys, monkeypatch):
    import inr_smooth.commands.eval as command

    monkeypatch.setattr(command, "_models", lambda args: pytest.fail("models loaded"))
    for flag, target in (("--json", readonly_dir / "r.json"), ("--out", readonly_dir / "o")):
        code, _, err = _run([str(clips["edit"]), *DIS, flag, str(target)], capsys)
        assert code == 2 and "not writable" in err and str(readonly_dir) in err
    assert list(readonly_dir.iterdir()) == []


def _leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name or p.stat().st_size == 0)


@pytest.mark.parametrize("failing", ["results.jsonl", "table.md", "chart.png", "r.json"])
def test_a_failing_write_is_one_line_and_leaves_no_partial_file(
    clips, tmp_path, capsys, monkeypatch, failing
):
    """Disk full (ENOSPC, monkeypatched so that it always runs) at each output in turn."""
    import io
    import os

    real_open, real_replace = io.open, os.replace

    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    def fake_open(path, mode="r", *args, **kwargs):
        if failing == "results.jsonl" and str(path).endswith(failing) and "a" in mode:
            handle = real_open(path, mode, *args, **kwargs)
            handle.write('{"half a li')  # the disk fills up in the middle of the line
            handle.close()
            full(path)
        return real_open(path, mode, *args, **kwargs)

    def fake_replace(src, dst):
        if str(dst).endswith(failing):
            full(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(io, "open", fake_open)
    monkeypatch.setattr(os, "replace", fake_replace)
    out = tmp_path / "out"
    argv = [str(clips["edit"]), *DIS, "--out", str(out), "--json", str(tmp_path / "r.json")]
    code, _, err = _run(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and failing in err and "No space left" in err
    assert _leftovers(tmp_path) == []
    if failing == "results.jsonl":
        assert not (out / "results.jsonl").exists()


def _fill(folder):
    """Fill the small tmpfs to the brim (writes fail with ENOSPC from here on)."""
    import os

    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_full_disk_is_one_line_and_leaves_no_partial_file(clips, full_dir, capsys):
    _fill(full_dir)
    out = full_dir / "out"
    code, _, err = _run([str(clips["source"]), *DIS, "--out", str(out)], capsys)
    assert code == 2 and "No space left on device" in err and err.count("\n") == 1
    assert _leftovers(full_dir) == []
