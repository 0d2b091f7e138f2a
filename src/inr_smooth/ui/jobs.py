"""The web UI's logic as plain functions: form values -> a config -> the library's API -> results.

No Gradio here (the layout in :mod:`.app` only wires these to inputs and outputs), and nothing
heavy is imported before a job runs: building and checking a config is as quick as at the CLI.

A job runs in a fresh run folder under ``<workdir>/runs/``:

* ``source/`` (a rendered sample, PNG frames) or ``source.<ext>`` (a copy of the upload);
* ``t2s/`` (Video-P2P): the T2S tuning run whose ``weights/`` the edit starts from;
* ``tune/`` or ``edit/``: the run folder of :func:`~inr_smooth.pipelines.tune.tune` or
  :func:`~inr_smooth.pipelines.edit.edit`, as the CLI writes it;
* ``metrics.json``: the metric table (:mod:`.scoring`), the notes under it, and when the job
  started and finished;

and ``<workdir>/runs/<name>.zip`` holds the folder, for download.
"""

from __future__ import annotations

import functools
import secrets
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..synthetic import Scene
from .hosts import EDIT_PROMPT, SOURCE_PROMPT, Host
from .samples import render_sample, sample_by_caption, scene_from_caption
from .scoring import ClipSource, Table, score_table

__all__ = [
    "STAGES",
    "T2S_STAGE",
    "JobResult",
    "Preview",
    "Settings",
    "Source",
    "error_line",
    "form_defaults",
    "prepare",
    "prepare_t2s",
    "preview",
    "run_job",
    "stages_of",
    "zip_folder",
]

# what run_job reports through on_stage(index, total, name), before the pipelines' own bars
STAGES = ("checking the settings", "preparing the source clip", "loading the model",
          "scoring", "zipping the run folder")  # fmt: skip
T2S_STAGE = "tuning the model (T2S)"  # Video-P2P's, after the source clip
Stage = Callable[[int, int, str], None]
PREVIEW_SIDE = 192  # pixels: smaller clips are shown enlarged


@dataclass(frozen=True)
class Settings:
    """What ``inr-smooth ui`` was started with."""

    model: str = "mini"
    workdir: Path = Path("outputs/ui")
    clip: ClipSource | None = None


@dataclass(frozen=True)
class Source:
    """The clip a job starts from: a synthetic sample (its caption) or an uploaded file."""

    sample: str | None = None
    upload: str | None = None

    def __post_init__(self) -> None:
        if (self.sample is None) == (self.upload is None):
            raise ValueError("expected a sample or an uploaded clip (upload a clip or pick a "
                             "sample)")  # fmt: skip

    @property
    def scene(self) -> Scene | None:
        return sample_by_caption(self.sample).scene if self.sample is not None else None


@dataclass(frozen=True)
class Preview:
    path: Path  # a GIF of the frames the job will read
    line: str  # what they are, one line


@dataclass(frozen=True)
class JobResult:
    folder: Path  # the run folder
    video: Path  # side by side: source | output (mp4)
    output: Path  # the output clip (gif: exact frames)
    table: Table
    archive: Path  # the run folder as a zip
    seconds: float


# ---------------------------------------------------------------- configs from form values
def _api(job: str):
    """``(config class, prepare function)`` of a job: torch-free modules."""
    if job == "tune":
        from ..pipelines.tune_config import TuneConfig, prepare_tune

        return TuneConfig, prepare_tune
    if job == "edit":
        from ..pipelines.edit_config import EditConfig, prepare_edit

        return EditConfig, prepare_edit
    raise ValueError(f"unknown job {job!r} (expected tune or edit)")


def prepare(host: Host, values: dict[str, Any], *, video: str, model: str, output: str,
            weights: str | None = None):  # fmt: skip
    """The job's prepared config, resolved and checked as the CLI does (model defaults fill
    what the form leaves empty); the values' source is recorded as ``ui``. ``weights``: a T2S
    run's weights folder (Video-P2P's edit)."""
    from ..config import config_from_dict

    config_cls, prepare_fn = _api(host.job)
    data = {**host.config_values(values, model), "video": video, "model": model,
            "output": output, **({"weights": weights} if weights else {})}  # fmt: skip
    return prepare_fn(config_from_dict(config_cls, data), dict.fromkeys(data, "ui"))


def prepare_t2s(host: Host, values: dict[str, Any], edit, *, output: str):
    """The prepared T2S run before ``host``'s edit (``edit``: its config), or None (a host
    without one, or 0 steps): :func:`~inr_smooth.pipelines.video_p2p_config.prepare_t2s_for`
    with the form's T2S values."""
    if not host.t2s:
        return None
    from ..pipelines.video_p2p_config import prepare_t2s_for

    return prepare_t2s_for(edit, output=output, **host.t2s_values(values))


@functools.lru_cache(maxsize=32)
def _defaults(host: Host, model: str) -> tuple[tuple[str, Any], ...]:
    placeholders = {SOURCE_PROMPT: "-", EDIT_PROMPT: "-"}
    config = prepare(host, placeholders, video="-", model=model, output="-").config
    t2s = prepare_t2s(host, placeholders, config, output="-")
    out = []
    for f in host.fields:
        if f.kind == "text":
            continue
        resolved = t2s.config if f.key in host.t2s else config
        value = f.default if f.default is not None else getattr(resolved, f.config_key)
        out.append((f.key, f.from_config(value) if f.from_config else value))
    return tuple(out)


def form_defaults(host: Host, model: str) -> dict[str, Any]:
    """The value of each non-text field of ``host`` for ``model``, as the CLI resolves it (the
    model's recommendation, its native size, else the built-in default)."""
    return dict(_defaults(host, model))


# ---------------------------------------------------------------- the source clip
def read_job_frames(job: str, config) -> Any:
    """The source frames as the job reads them: ``uint8 (f, h, w, 3)``."""
    if job == "edit":
        from ..pipelines.edit_config import read_source

        return read_source(config)
    from ..video_io import read_video

    return read_video(config.video, num_frames=config.frames, start=config.start,
                      stride=config.stride, size=config.size, resize=config.resize)  # fmt: skip


def _source_path(source: Source, folder: Path) -> Path:
    """Where the job's copy of the source goes in ``folder``."""
    suffix = "" if source.sample is not None else Path(source.upload).suffix.lower()
    return folder / ("source" + suffix)  # a sample: a folder of PNG frames


def _place_source(source: Source, path: Path, config) -> Path:
    """Render the sample for ``config`` (or copy the upload) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if source.sample is not None:
        return render_sample(source.scene, path, frames=config.frames, stride=config.stride,
                             size=config.size)  # fmt: skip
    upload = Path(source.upload)
    if not upload.is_file():
        raise FileNotFoundError(f"uploaded clip not found: {upload.name} (upload it again)")
    return Path(shutil.copyfile(upload, path))


def _enlarged(frames, least: int = PREVIEW_SIDE):
    """Small frames repeated pixel by pixel up to about ``least`` px (a 64 px clip is hard to
    see at its own size)."""
    factor = max(1, least // max(frames.shape[1:3]))
    return frames.repeat(factor, axis=1).repeat(factor, axis=2) if factor > 1 else frames


def preview(host: Host, values: dict[str, Any], source: Source, settings: Settings) -> Preview:
    """Check the source as the job will read it and write those frames as a GIF (enlarged to
    about :data:`PREVIEW_SIDE` px where smaller)."""
    from ..video_io import write_video

    folder = settings.workdir / "previews" / secrets.token_hex(6)
    video = _source_path(source, folder) if source.sample is not None else Path(source.upload)
    prepared = prepare(host, values, video=str(video), model=settings.model, output="-")
    try:
        if source.sample is not None:
            _place_source(source, video, prepared.config)
        frames = read_job_frames(host.job, prepared.config)
        path = write_video(folder / "preview.gif", _enlarged(frames), fps=prepared.config.fps)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    name = source.sample or Path(source.upload).name
    f, h, w = frames.shape[:3]
    return Preview(path, f"{f} frames of {w}×{h} px from {name}")


# ---------------------------------------------------------------- running a job
def new_run_folder(workdir: Path, host: Host) -> Path:
    """A fresh (not yet created) run folder under ``<workdir>/runs/``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return workdir / "runs" / f"{stamp}-{host.key}-{secrets.token_hex(3)}"


def stages_of(host: Host, t2s: bool | None = None) -> tuple[str, ...]:
    """What :func:`run_job` reports for ``host``: :data:`STAGES`, with :data:`T2S_STAGE` after
    the source clip where the job tunes first (``t2s``; None: where the host can)."""
    if not (host.t2s if t2s is None else t2s):
        return STAGES
    return (*STAGES[:2], T2S_STAGE, *STAGES[2:])


def _call(host: Host, prepared) -> tuple[Path, Path]:
    """Run the job through the library; ``(output gif, side-by-side mp4)``."""
    if host.job == "tune":
        from ..pipelines.tune import tune

        files = tune(prepared, memory_check=True, progress=True).samples
    else:
        from ..pipelines.edit import edit

        files = edit(prepared, memory_check=True, progress=True).files
    gif = next(p for p in files if p.suffix == ".gif")
    side = next(p for p in files if p.name.endswith("-side-by-side.mp4"))
    return gif, side


def run_job(host: Host, values: dict[str, Any], source: Source, settings: Settings,
            on_stage: Stage = lambda index, total, name: None) -> JobResult:  # fmt: skip
    """Run ``host``'s job on ``source`` with the form ``values``; see the module docstring.
    ``on_stage(index, total, name)`` is called as each of :func:`stages_of` begins (the
    pipelines show tqdm bars of their own). A failed job leaves no run folder behind."""
    from ..outputs import write_json_atomic

    started, wall = time.perf_counter(), time.time()
    stages = stages_of(host, t2s=False)

    def stage(name: str) -> None:
        on_stage(stages.index(name), len(stages), name)

    stage("checking the settings")
    folder = new_run_folder(settings.workdir, host)
    video = _source_path(source, folder)
    output = str(folder / host.job)
    # an upload is checked where it is (error lines name it), then copied into the run folder
    checked = prepare(host, values, video=str(source.upload or video), model=settings.model,
                      output=output)  # fmt: skip
    t2s = prepare_t2s(host, values, checked.config, output=str(folder / "t2s"))
    stages = stages_of(host, t2s=t2s is not None)
    folder.mkdir(parents=True)
    try:
        stage("preparing the source clip")
        if source.sample is not None:
            _place_source(source, video, checked.config)
        source_frames = read_job_frames(host.job, checked.config)
        prepared = checked
        if source.upload is not None:
            _place_source(source, video, checked.config)
            prepared = prepare(host, values, video=str(video), model=settings.model,
                               output=output)  # fmt: skip
        if t2s is not None:
            stage(T2S_STAGE)
            prepared = _tune_t2s(host, values, prepared, str(video), settings.model, output)
        stage("loading the model")
        gif, side = _call(host, prepared)
        stage("scoring")
        output_frames = _read_output(gif, prepared.config.frames)
        table = _score(values, source, source_frames, output_frames, settings)
        when = {"started": wall, "finished": time.time()}  # seconds since the epoch
        write_json_atomic(folder / "metrics.json", {"host": host.key, **when, **table.to_dict()})
        stage("zipping the run folder")
        archive = zip_folder(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return JobResult(folder, side, gif, table, archive, time.perf_counter() - started)


def _tune_t2s(host: Host, values: dict[str, Any], prepared, video: str, model: str,
              output: str):  # fmt: skip
    """Run the T2S tuning into ``<run>/t2s``; the edit's prepared config on its weights."""
    from ..pipelines.tune import tune

    t2s = prepare_t2s(host, values, prepared.config, output=str(Path(output).parent / "t2s"))
    tune(t2s, memory_check=True, progress=True)
    weights = str(Path(t2s.config.output) / "weights")
    return prepare(host, values, video=video, model=model, output=output, weights=weights)


def _read_output(gif: Path, frames: int) -> Any:
    """The output's ``frames`` frames: the GIF's (exact), unless it merged repeated frames (the
    GIF writer does): then the mp4 beside it (H.264 at crf 18)."""
    from ..video_io import read_video

    video = read_video(gif)
    return video if len(video) == frames else read_video(gif.with_suffix(".mp4"))


def _score(values, source: Source, source_frames, output_frames, settings) -> Table:
    source_prompt = str(values.get(SOURCE_PROMPT) or "").strip()
    edit_prompt = str(values.get(EDIT_PROMPT) or "").strip()
    scene = source.scene
    target = scene_from_caption(edit_prompt, like=scene) if scene is not None else None
    clip = settings.clip.get() if settings.clip is not None else None
    return score_table(source_frames, output_frames, source_prompt=source_prompt,
                       edit_prompt=edit_prompt, source_scene=scene, target_scene=target,
                       clip=clip)  # fmt: skip


def zip_folder(folder: Path) -> Path:
    """``<folder>.zip`` holding ``folder`` (its files under ``<folder name>/``)."""
    archive = folder.with_name(folder.name + ".zip")
    partial = archive.with_name(archive.name + ".part")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder.parent).as_posix())
    return partial.replace(archive)


# ---------------------------------------------------------------- errors as the CLI's one line
def error_line(exc: BaseException, command: str, names: dict[str, str] | None = None) -> str:
    """The one line the CLI prints for ``exc`` (``inr-smooth COMMAND: error: ...``), with long
    paths in ``names`` (e.g. an upload's temporary path) replaced by short ones. Anything the
    CLI would show as a traceback becomes ``internal error: Type: message`` (the server logs
    the traceback)."""
    from ..commands import CLIError, user_errors
    from ..outputs import WRITE_ERRNOS, describe_write_error

    if isinstance(exc, (CLIError, *user_errors())):
        message, kind = str(exc), "error"
    elif isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        message, kind = describe_write_error(exc), "error"
    else:
        message = f"{type(exc).__name__}: {exc} (the traceback is in the server's log)"
        kind = "internal error"
    for long, short in sorted((names or {}).items(), key=lambda item: -len(item[0])):
        message = message.replace(long, short)
    first = " ".join(message.split()) or type(exc).__name__
    return f"inr-smooth {command}: {kind}: {first}"
