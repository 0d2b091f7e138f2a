"""Reading and writing videos: the only module that touches codecs (PyAV).

* Disk side: ``uint8 (f, h, w, 3)`` RGB arrays. Model side: float32 ``(3, f, h, w)`` in [-1, 1]
  (:func:`video_to_tensor`, :func:`tensor_to_video`).
* Reads mp4 / webm / mov / mkv / avi / gif files and folders of numbered PNG / JPG frames; picks
  frames by ``start``, ``stride`` and ``num_frames`` (Tune-A-Video's ``sample_start_idx``,
  ``sample_frame_rate``, ``n_sample_frames``) and resizes (aspect kept + centre crop, or exact).
* Writes mp4 (H.264, yuv420p), gif and PNG folders atomically: a temporary name in the same
  folder, then a rename, so a crash or Ctrl-C never leaves a half-written output.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # torch loads only for the tensor conversions: reading is checked without it
    import torch

__all__ = [
    "FRAME_SUFFIXES",
    "VIDEO_SUFFIXES",
    "VideoError",
    "frames_digest",
    "probe_video",
    "read_video",
    "tensor_to_video",
    "video_fps",
    "video_to_tensor",
    "write_side_by_side",
    "write_video",
]

VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif")
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")


class VideoError(ValueError):
    """A video that cannot be read or written as asked (one line: expected vs found)."""


# ----------------------------------------------------------------------------- reading


def _frame_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES]

    def natural(path: Path):
        return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]

    return sorted(files, key=natural)


_GIF_MARK = b"inr-smooth frame ms "  # our GIFs' comment: the duration of one frame


def _ours_gif_frames(path: Path):
    """The frames of a GIF written by :func:`write_video`, each as often as it was written
    (GIF writers merge identical consecutive frames into one longer frame); None for other
    GIFs."""
    from PIL import ImageSequence

    try:
        with Image.open(path) as image:
            comment = image.info.get("comment", b"")
            if not comment.startswith(_GIF_MARK):
                return None
            unit = int(comment[len(_GIF_MARK) :])
            for frame in ImageSequence.Iterator(image):
                rgb = np.asarray(frame.convert("RGB"))
                for _ in range(max(1, round(frame.info.get("duration", unit) / unit))):
                    yield rgb
    except (OSError, ValueError) as exc:
        raise VideoError(f"cannot decode {path}: {exc}") from None


def _decoded(path: Path):
    """Every frame of a video file, in order (PyAV; our GIFs through Pillow, unmerged)."""
    import av

    if path.suffix.lower() == ".gif":
        ours = _ours_gif_frames(path)
        first = next(ours, None) if ours is not None else None
        if first is not None:
            yield first
            yield from ours
            return
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoError(f"expected a video stream in {path}, found none")
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def _decode_file(path: Path, start: int, stride: int, last: int | None) -> tuple[list, int]:
    """Decoded RGB frames ``start, start + stride, ...`` up to index ``last`` (or the end), and
    how many frames were decoded in all."""
    import av

    frames, count = [], 0
    try:
        for index, frame in enumerate(_decoded(path)):
            count = index + 1
            if last is not None and index > last:
                break
            if index >= start and (index - start) % stride == 0:
                frames.append(frame)
    except av.FFmpegError as exc:
        reason = exc.strerror or type(exc).__name__
        raise VideoError(
            f"cannot decode {path}: {reason} (expected a readable video file; corrupt or "
            "unsupported?)"
        ) from None
    return frames, count


def _pick(total: int, num_frames: int | None, start: int, stride: int) -> list[int]:
    """Indices ``start, start + stride, ...``: ``num_frames`` of them, or all below ``total``."""
    if num_frames is None:
        return list(range(start, total, stride))
    return [start + i * stride for i in range(num_frames)]


def _check_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    for side in (h, w):
        if side < 8 or side % 8:
            low, high = max(8, side // 8 * 8), (side // 8 + 1) * 8
            raise VideoError(
                f"frame size must be a multiple of 8 (the VAE downsamples by 8), got {side}; "
                f"use {low} or {high}"
            )
    return h, w


def _resize(frame: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    h, w = size
    image = Image.fromarray(frame)
    if mode == "exact":
        return np.asarray(image.resize((w, h), Image.Resampling.BICUBIC))
    scale = max(h / frame.shape[0], w / frame.shape[1])
    rh, rw = max(h, round(frame.shape[0] * scale)), max(w, round(frame.shape[1] * scale))
    image = image.resize((rw, rh), Image.Resampling.BICUBIC)
    top, left = (rh - h) // 2, (rw - w) // 2
    return np.asarray(image.crop((left, top, left + w, top + h)))


def read_video(
    path: str | Path,
    *,
    num_frames: int | None = None,
    start: int = 0,
    stride: int = 1,
    size: int | tuple[int, int] | None = None,
    resize: str = "crop",
) -> np.ndarray:
    """Frames ``start, start + stride, ...`` (``num_frames`` of them, or all) as ``uint8
    (f, h, w, 3)``; ``size`` (side or ``(h, w)``, multiples of 8) resizes with ``resize="crop"``
    (aspect kept, centre crop) or ``"exact"``."""
    path = Path(path).expanduser()
    if start < 0 or stride < 1 or (num_frames is not None and num_frames < 1):
        raise VideoError(
            f"expected start >= 0, stride >= 1, num_frames >= 1; got start={start}, "
            f"stride={stride}, num_frames={num_frames}"
        )
    if resize not in ("crop", "exact"):
        raise VideoError(f"resize must be 'crop' or 'exact', got {resize!r}")
    target = _check_size(size)
    if not path.exists():
        raise VideoError(f"video not found: {path}")
    if path.is_dir():
        frames, total = _read_folder(path, num_frames, start, stride)
    else:
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise VideoError(
                f"expected a video file ({', '.join(VIDEO_SUFFIXES)}), got {path.name}"
            )
        last = None if num_frames is None else start + (num_frames - 1) * stride
        frames, total = _decode_file(path, start, stride, last)
    if not frames:
        raise VideoError(
            f"no frames read from {path}: expected frames from index {start}, found "
            f"{total} frame{'s' * (total != 1)} in all"
        )
    if num_frames is not None and len(frames) < num_frames:
        last = start + (num_frames - 1) * stride
        fit = (total - 1 - start) // stride + 1
        raise VideoError(
            f"{path} has too few frames: {num_frames} frames from index {start} with stride "
            f"{stride} need index {last}, but it has {total} frames (indices 0-{total - 1}); "
            f"at most {fit} frames fit at this start and stride"
        )
    if target is not None:
        frames = [_resize(f, target, resize) for f in frames]
    _check_read_sizes(path, frames)
    return np.ascontiguousarray(np.stack(frames))


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as exc:
        raise VideoError(f"cannot read frame {path}: {exc}") from None


def _read_folder(folder: Path, num_frames: int | None, start: int, stride: int):
    """Frames picked from a folder of numbered images, and how many images it holds."""
    files = _frame_files(folder)
    if not files:
        raise VideoError(
            f"expected numbered {'/'.join(FRAME_SUFFIXES)} frames in {folder}, found none"
        )
    indices = _pick(len(files), num_frames, start, stride)
    return [_read_image(files[i]) for i in indices if i < len(files)], len(files)


def _check_read_sizes(path: Path, frames: list[np.ndarray]) -> None:
    """All frames of one size, and that size a multiple of 8 (the VAE downsamples by 8)."""
    sizes = sorted({f.shape[:2] for f in frames})
    if len(sizes) > 1:
        raise VideoError(
            f"expected frames of one size in {path}, found sizes "
            f"{', '.join(f'{h}x{w}' for h, w in sizes)}: pass size= (--size) to resize them"
        )
    h, w = sizes[0]
    if h % 8 or w % 8:
        raise VideoError(
            f"frame size {h}x{w} of {path} is not a multiple of 8: pass size= (--size) to resize"
        )


def video_fps(path: str | Path) -> float | None:
    """Frames per second of a video file (None for frame folders or when unknown)."""
    import av

    path = Path(path)
    if path.is_dir():
        return None
    try:
        with av.open(str(path)) as container:
            rate = container.streams.video[0].average_rate
            return float(rate) if rate else None
    except (av.FFmpegError, IndexError):
        return None


def probe_video(path: str | Path) -> tuple[int, int, int]:
    """``(frame count, height, width)`` of a video file or frame folder, at its own size.

    A file is demuxed packet by packet (no decoding) unless its stream states its frame count.
    """
    import av

    path = Path(path).expanduser()
    if not path.exists():
        raise VideoError(f"video not found: {path}")
    if path.is_dir():
        files = _frame_files(path)
        if not files:
            raise VideoError(
                f"expected numbered {'/'.join(FRAME_SUFFIXES)} frames in {path}, found none"
            )
        try:
            with Image.open(files[0]) as image:
                width, height = image.size
        except OSError as exc:
            raise VideoError(f"cannot read frame {files[0]}: {exc}") from None
        return len(files), height, width
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise VideoError(f"expected a video file ({', '.join(VIDEO_SUFFIXES)}), got {path.name}")
    ours = _ours_gif_frames(path) if path.suffix.lower() == ".gif" else None
    if ours is not None:  # our GIFs: count the frames as written, merged ones included
        frames = list(ours)
        if frames:
            return len(frames), *frames[0].shape[:2]
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoError(f"expected a video stream in {path}, found none")
            stream = container.streams.video[0]
            height, width = stream.codec_context.height, stream.codec_context.width
            count = stream.frames or sum(1 for p in container.demux(stream) if p.size)
    except av.FFmpegError as exc:
        reason = exc.strerror or type(exc).__name__
        raise VideoError(f"cannot read {path}: {reason} (corrupt or unsupported?)") from None
    return int(count), int(height), int(width)


# ----------------------------------------------------------------------------- tensors


def frames_digest(frames: np.ndarray) -> str:
    """SHA-256 of decoded ``uint8 (f, h, w, 3)`` frames and their shape."""
    digest = hashlib.sha256(str(frames.shape).encode())
    digest.update(np.ascontiguousarray(frames).tobytes())
    return digest.hexdigest()


def video_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """``uint8 (f, h, w, 3)`` -> float32 ``(3, f, h, w)`` in [-1, 1]."""
    import torch

    _check_frames(frames)
    video = torch.from_numpy(np.ascontiguousarray(frames)).float() / 127.5 - 1.0
    return video.permute(3, 0, 1, 2).contiguous()  # (3, f, h, w)


def tensor_to_video(video: torch.Tensor) -> np.ndarray:
    """float ``(3, f, h, w)`` or ``(1, 3, f, h, w)`` in [-1, 1] -> ``uint8 (f, h, w, 3)``."""
    import torch

    if video.ndim == 5 and video.shape[0] == 1:
        video = video[0]
    if video.ndim != 4 or video.shape[0] != 3:
        raise ValueError(f"expected a video of shape (3, f, h, w), got {tuple(video.shape)}")
    pixels = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).cpu().numpy()  # (f, h, w, 3)


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {getattr(frames, 'dtype', type(frames))}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"expected frames of shape (f, h, w, 3), got {frames.shape}")


# ----------------------------------------------------------------------------- writing


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it to ``path`` only on success.

    An existing frame folder at ``path`` is moved aside first and removed only once the new one
    is in place, so ``path`` never holds a half-written output.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        if old.exists() and not path.exists():
            os.replace(old, path)  # put the earlier output back
        raise
    finally:
        for leftover in (tmp, old):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    import av

    h, w = frames.shape[1:3]
    pad = ((0, 0), (0, h % 2), (0, w % 2), (0, 0))  # yuv420p needs even sizes
    frames = np.pad(frames, pad, mode="edge")
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _write_gif(path: Path, frames: np.ndarray, fps: float) -> None:
    images = [Image.fromarray(frame) for frame in frames]
    unit = round(1000 / fps)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=unit,
                   loop=0, comment=_GIF_MARK + str(unit).encode())  # fmt: skip


def write_video(path: str | Path, frames: np.ndarray, *, fps: float = 8) -> Path:
    """Write ``uint8 (f, h, w, 3)`` frames as ``.mp4`` (H.264, yuv420p, odd sides padded to
    even), ``.gif`` or, for a path without a suffix or an existing folder, numbered PNGs
    (replacing the folder's content); atomically, creating parent folders. Returns the path."""
    _check_frames(frames)
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    path = Path(path)
    suffix = "" if path.is_dir() else path.suffix.lower()  # an existing folder: PNG frames
    if suffix not in (".mp4", ".gif", ""):
        raise VideoError(
            f"expected a .mp4, .gif, suffix-less or existing folder (PNG frames) path, got {path}"
        )
    if path.is_dir():
        _check_replaceable(path)
    with _atomic(path) as tmp:
        if suffix == ".mp4":
            _write_mp4(tmp, frames, fps)
        elif suffix == ".gif":
            _write_gif(tmp, frames, fps)
        else:
            tmp.mkdir()
            for i, frame in enumerate(frames):
                Image.fromarray(frame).save(tmp / f"{i:05d}.png")
    return path


def _check_replaceable(folder: Path) -> None:
    """Refuse to replace a folder that holds anything but frame images (e.g. ``.`` by mistake)."""
    others = [p.name for p in folder.iterdir() if p.suffix.lower() not in FRAME_SUFFIXES]
    if others or folder.resolve() == Path.cwd().resolve():
        found = ", ".join(map(repr, others[:3])) + (" ..." if len(others) > 3 else "")
        found = found or "the working folder"
        raise VideoError(
            f"expected {folder} to be an empty folder or one holding only frame images (it is "
            f"replaced), found {found}"
        )


def write_side_by_side(
    path: str | Path,
    videos: Sequence[np.ndarray],
    labels: Sequence[str],
    *,
    fps: float = 8,
    columns: int | None = None,
) -> Path:
    """Several videos of one length in a grid, each under a text label; mp4 or gif."""
    if not videos or len(videos) != len(labels):
        raise ValueError(
            f"expected one label per video, got {len(videos)} videos, {len(labels)} labels"
        )
    lengths = {len(v) for v in videos}
    if len(lengths) != 1:
        raise ValueError(f"expected videos of one length, got lengths {sorted(lengths)}")
    for video in videos:
        _check_frames(video)
    h, w = videos[0].shape[1:3]
    tiles = [
        _labelled(v if v.shape[1:3] == (h, w) else _resize_all(v, (h, w)), t)
        for v, t in zip(videos, labels, strict=True)
    ]
    columns = columns or len(tiles)
    rows = -(-len(tiles) // columns)
    blank = np.zeros_like(tiles[0])
    tiles += [blank] * (rows * columns - len(tiles))
    grid = np.concatenate(
        [np.concatenate(tiles[r * columns : (r + 1) * columns], axis=2) for r in range(rows)],
        axis=1,
    )  # (f, rows * (strip + h), columns * w, 3)
    return write_video(path, grid, fps=fps)


def _resize_all(video: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.stack([_resize(frame, size, "exact") for frame in video])


def _labelled(video: np.ndarray, label: str) -> np.ndarray:
    """Put a white strip with ``label`` above every frame."""
    import cv2

    f, w = video.shape[0], video.shape[2]
    scale = max(0.3, min(1.0, w / 512))
    strip_h = max(12, int(28 * scale))
    strip = np.full((strip_h, w, 3), 255, np.uint8)
    text = label
    while text and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > w - 4:
        text = text[:-2]
    if text != label:
        text = text[:-1] + "~"
    baseline = strip_h - max(3, int(8 * scale))
    cv2.putText(
        strip, text, (2, baseline), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA
    )
    return np.concatenate([np.broadcast_to(strip, (f, strip_h, w, 3)), video], axis=1)
