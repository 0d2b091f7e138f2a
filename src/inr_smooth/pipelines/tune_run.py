"""The run folder of a tuning run: what it holds, whether it can be resumed, cleaning up.

A run folder is, at any moment, one of: missing or empty (a new run); complete (weights,
samples, log); or resumable (a ``checkpoint-N`` folder, or tuned ``weights/`` whose generation
did not finish). A run that fails before either exists removes what it wrote, so the same
command can simply be run again. ``--resume`` refuses settings that would change the tuned
weights (naming them); ``--overwrite`` replaces a folder that holds another run.

Torch-free, so that all of this is checked before any model loads.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..config import config_to_dict
from ..outputs import check_output_dir, folder_is_empty, write_errors
from .tune_config import RESUME_MAY_CHANGE, PreparedTune, TuneConfig

__all__ = ["INVERTED_LATENTS", "TUNE_RECORD", "RunFolder", "read_tune_record"]

TUNE_RECORD = "tune.json"
INVERTED_LATENTS = "inverted_latents.safetensors"
_RECORD_KEYS = ("model", "prompt", "video", "start", "stride", "frames", "height", "width",
                "steps", "inference_steps", "guidance_scale", "fps", "resize")  # fmt: skip


def read_tune_record(weights: Path) -> dict:
    """``weights/tune.json``, checked; one line naming the file when it is missing or broken."""
    path = Path(weights) / TUNE_RECORD
    if not path.is_file():
        raise FileNotFoundError(
            f"expected {TUNE_RECORD} in {weights}: pass the weights/ folder of an `inr-smooth "
            "tune` run"
        )
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is unreadable ({type(exc).__name__}): rerun the tuning") from None
    missing = [key for key in _RECORD_KEYS if not isinstance(record, dict) or key not in record]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: was it written by this version?")
    return record


def _differences(old: dict, new: dict) -> list[str]:
    keys = sorted((set(old) | set(new)) - RESUME_MAY_CHANGE - {"video", "video_digest"})
    differ = [k for k in keys if old.get(k) != new.get(k)]
    if old.get("video_digest") != new.get("video_digest"):
        differ.insert(0, "video (other frames)")
    return differ


@dataclass
class RunFolder:
    """The state of ``output`` before a run, and what this run wrote into it."""

    output: Path
    resume: bool = False
    overwrite: bool = False
    checkpoint: object = None  # checkpoints.Checkpoint to resume from, if any
    tuned: dict | None = None  # weights/tune.json of finished tuning, if any
    maps: list | None = None  # ControlVideo: each ControlNet's control maps of the frames
    tuning_done: bool = False  # tuned for the asked steps already: generation alone is left
    created: bool = False
    written: list[Path] = field(default_factory=list)

    @classmethod
    def open(cls, output: str | Path, *, resume: bool, overwrite: bool) -> RunFolder:
        """Check ``output`` for a run; raise (one line) when it does not fit the flags."""
        output = check_output_dir(Path(output).expanduser(), what="run folder")
        run = cls(output, resume, overwrite)
        if resume and overwrite:
            raise ValueError("--resume continues a run, --overwrite replaces it: choose one")
        if resume:
            from .checkpoints import find_checkpoint  # safetensors only, no model

            run.checkpoint = find_checkpoint(output) if output.is_dir() else None
            weights = output / "weights"
            run.tuned = read_tune_record(weights) if (weights / TUNE_RECORD).is_file() else None
            if run.checkpoint is None and run.tuned is None:
                raise FileNotFoundError(
                    f"--resume: no checkpoint-N folder or tuned weights/ in {output}"
                )
        elif not folder_is_empty(output) and not overwrite:
            hint = ("it holds a checkpoint or tuned weights: add --resume to continue it"
                    if _resumable(output) else "choose another --output")  # fmt: skip
            raise FileExistsError(
                f"run folder {output} exists and is not empty ({hint}, or --overwrite to "
                "replace it)"
            )
        return run

    def check_resume(self, config: TuneConfig, video_digest: str) -> None:
        """Refuse to resume with settings that change what the tuned weights depend on."""
        if not self.resume:
            return
        new = {**config_to_dict(config), "video_digest": video_digest}
        old = (self.tuned or {}).get("config") or self.checkpoint.extra.get("config", {})
        differ = _differences(old, new)
        if differ:
            raise ValueError(
                f"--resume with other settings than the run in {self.output}: "
                f"{', '.join(differ)} differ (rerun with the same ones, or start a new run)"
            )
        done = max(self.tuned["steps"] if self.tuned else 0,
                   self.checkpoint.step if self.checkpoint else 0)  # fmt: skip
        if config.steps < done:
            raise ValueError(f"--resume: {self.output} is tuned for {done} steps already, "
                             f"more than --steps {config.steps}")  # fmt: skip
        self.tuning_done = self.tuned is not None and self.tuned["steps"] == config.steps
        if not self.tuning_done and self.checkpoint is None:
            raise ValueError(
                f"--resume: {self.output} holds weights tuned for {self.tuned['steps']} steps "
                f"but no checkpoint to continue from to {config.steps}"
            )

    def begin(self) -> None:
        """Create the folder (emptying it first with ``overwrite``)."""
        with write_errors(self.output):
            if self.overwrite and self.output.exists():
                shutil.rmtree(self.output)
            self.created = not self.output.exists()
            self.output.mkdir(parents=True, exist_ok=True)

    def abandon(self) -> None:
        """After a failure: keep a resumable folder, otherwise remove what this run wrote."""
        if _resumable(self.output):
            return
        if self.created:
            shutil.rmtree(self.output, ignore_errors=True)
            return
        for path in self.written:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def _resumable(output: Path) -> bool:
    from .checkpoints import checkpoint_folders

    return (output / "weights" / TUNE_RECORD).is_file() or bool(checkpoint_folders(output))


def read_source(config: TuneConfig):
    """The source frames ``uint8 (f, h, w, 3)`` as the config picks and resizes them."""
    from ..video_io import read_video

    return read_video(config.video, num_frames=config.frames, start=config.start,
                      stride=config.stride, size=config.size, resize=config.resize)  # fmt: skip


def open_run(prepared: PreparedTune, *, resume: bool, overwrite: bool):
    """Everything a tuning run checks before its model loads: the run folder, the source
    video and, for ``resume``, the settings against the checkpoint's. ``(run, frames,
    digest)``; raises one-line errors."""
    from ..video_io import frames_digest
    from .controlvideo_config import read_controls

    run = RunFolder.open(prepared.config.output, resume=resume, overwrite=overwrite)
    frames = read_source(prepared.config)
    run.maps = read_controls(prepared.config, frames)  # ControlVideo's maps, checked; or None
    digest = frames_digest(frames)
    run.check_resume(prepared.config, digest)
    return run, frames, digest
