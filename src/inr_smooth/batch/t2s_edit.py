"""The batch's Video-P2P host: T2S tuning of the clip, then Video-P2P's edit on its weights.

One job per edit prompt (as the ``edit`` host). Its config is an
:class:`~inr_smooth.pipelines.edit_config.EditConfig` of Video-P2P's editor with the T2S run's
steps and learning rate (:class:`T2SEditConfig`), resolved as the CLI resolves both stages, so
that the job id covers both. The T2S run is shared: it goes to ``<batch>/t2s/<key>/``, keyed by
its resolved settings and the clip's bytes, so that ``edit:video-p2p`` and
``edit:video-p2p+inr`` (and every prompt) of one clip edit the same tuned weights, as the paper
compares them. Two workers that tune the same run at once each write a private folder and the
first to finish keeps its own. No torch here.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..pipelines.edit_config import EditConfig

__all__ = ["PreparedT2SEdit", "T2SEditConfig", "build", "prepare", "run"]

_EDIT_FIELDS = tuple(f.name for f in dataclasses.fields(EditConfig))


@dataclass(frozen=True)
class T2SEditConfig(EditConfig):
    """Video-P2P's two stages as one config: the edit's fields, and the T2S run's."""

    editor: str = "video-p2p"
    t2s_steps: int | None = None  # None: the model's recommended tuning steps, else 500; 0: none
    t2s_learning_rate: float | None = None  # None: the model's recommendation, else 3e-5
    given: tuple[str, ...] = ()  # the fields the grid set (the rest take Video-P2P's defaults)

    def __post_init__(self) -> None:
        super().__post_init__()
        steps = self.t2s_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                                  or steps < 0):  # fmt: skip
            raise ValueError(f"t2s_steps must be an integer >= 0, got {steps!r}")

    def edit_config(self, **changes) -> EditConfig:
        return EditConfig(**{**{k: getattr(self, k) for k in _EDIT_FIELDS}, **changes})


@dataclass(frozen=True)
class PreparedT2SEdit:
    config: T2SEditConfig  # every field resolved (the job id is a digest of it)
    sources: dict


def build(video: str, source_prompt: str, prompts, model: str, values: dict) -> T2SEditConfig:
    from ..config import config_from_dict

    (prompt,) = prompts
    return config_from_dict(T2SEditConfig, {
        **values, "video": video, "model": model, "source_prompt": source_prompt,
        "prompt": prompt, "given": tuple(sorted(values)),
    })  # fmt: skip


def _prepared_edit(config: T2SEditConfig, **changes):
    from ..pipelines.edit_config import prepare_edit

    edit = config.edit_config(editor="video-p2p", **changes)
    return prepare_edit(edit, dict.fromkeys(config.given, "grid"))


def _t2s(config: T2SEditConfig, edit: EditConfig, output: str):
    from ..pipelines.video_p2p_config import prepare_t2s_for

    return prepare_t2s_for(edit, output=output, steps=config.t2s_steps,
                           learning_rate=config.t2s_learning_rate, device=config.device)


def prepare(config: T2SEditConfig) -> PreparedT2SEdit:
    """Both stages resolved and checked (the edit as if untuned: its T2S run is yet to come)."""
    edit = _prepared_edit(config)
    t2s = _t2s(config, edit.config, output="-")
    values = {k: getattr(edit.config, k) for k in _EDIT_FIELDS}
    steps = t2s.config.steps if t2s is not None else 0
    rate = t2s.config.learning_rate if t2s is not None else None
    resolved = T2SEditConfig(**values, t2s_steps=steps, t2s_learning_rate=rate,
                             given=config.given)  # fmt: skip
    return PreparedT2SEdit(resolved, dict(edit.sources))


def _t2s_key(t2s) -> str:
    from ..config import config_to_dict
    from ..metrics.inputs import file_digest
    from .jobs import NOT_IN_ID, _hash

    settings = {k: v for k, v in config_to_dict(t2s.config).items() if k not in NOT_IN_ID}
    return _hash({"t2s": settings, "video": file_digest(t2s.config.video),
                  "model": t2s.config.model})  # fmt: skip


def _shared_t2s(config: T2SEditConfig, edit: EditConfig, folder: Path, *, progress: bool,
                memory_check: bool) -> Path | None:  # fmt: skip
    """The T2S run's weights under ``folder`` (tuned now unless a job tuned them before)."""
    from ..pipelines.tune import tune

    t2s = _t2s(config, edit, output="-")
    if t2s is None:
        return None
    final = folder / _t2s_key(t2s)
    if not (final / "weights" / "tune.json").is_file():
        private = folder / f".{final.name}.{os.getpid()}-{secrets.token_hex(3)}"
        try:
            tune(_t2s(config, edit, output=str(private)), overwrite=True,
                 memory_check=memory_check, progress=progress)  # fmt: skip
            private.rename(final)  # atomic; fails where another worker's run got there first
        except OSError:
            if not (final / "weights" / "tune.json").is_file():
                raise
        finally:
            shutil.rmtree(private, ignore_errors=True)
    return final / "weights"


def run(prepared: PreparedT2SEdit, output: Path, *, progress: bool,
        memory_check: bool) -> dict[str, Path]:  # fmt: skip
    """T2S (shared, ``<batch>/t2s/``: beside ``runs/``), then the edit into ``output/edit``."""
    from ..pipelines.edit import edit
    from ..pipelines.sample_names import sample_names

    config = prepared.config
    weights = _shared_t2s(config, config.edit_config(), output.parent.parent / "t2s",
                          progress=progress, memory_check=memory_check)  # fmt: skip
    changes: dict[str, Any] = {"output": str(output / "edit")}
    if weights is not None:
        changes["weights"] = str(weights)
    edit(_prepared_edit(config, **changes), overwrite=True, memory_check=memory_check,
         progress=progress)  # fmt: skip
    return {config.prompt: output / "edit" / f"{sample_names([config.prompt])[0]}.gif"}
