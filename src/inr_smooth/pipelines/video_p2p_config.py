"""Video-P2P's settings, checked without torch: its edit defaults, its tuning (T2S), its fields.

Video-P2P (Liu et al. 2023, ShaoTengLiu/Video-P2P 92d2b52) edits in two stages:

* **T2S tuning** (``run_tuning.py``, ``configs/*-tune.yaml``): Tune-A-Video's trainer with *frame
  attention* (every frame attends to frame 0's keys and values), temporal attention after each
  block's feed-forward with its own norm and a zero-initialised output, the trainable modules
  ``attn1.to_q``, ``attn2.to_q`` and ``attn_temp`` (not its norm), 8 frames at 512 px (resized,
  no crop), frame rate 1, lr 3e-5, 500 steps, seed 33. :data:`T2S_TUNE` holds these as
  :class:`~inr_smooth.pipelines.tune_config.TuneConfig` fields; :func:`t2s_config` and
  ``configs/tune/video-p2p-rabbit.yaml`` apply them. ``inr-smooth tune`` runs it.
* **Editing** (``run_videop2p.py``, ``configs/*-p2p.yaml``): ``inr-smooth edit --editor
  video-p2p`` (:mod:`.video_p2p`), whose defaults differ from FateZero's editor where
  :data:`VIDEO_P2P_DEFAULTS` says: cross-attention control for 0.2 of the steps, frame
  attention, and the INR paper's gamma 0.5 for Video-P2P. Self-replacement 0.5, LocalBlend's
  threshold 0.3, guidance 7.5 and 50 steps are the same as FateZero's defaults here.

:func:`video_p2p_defaults` (called by :func:`~.edit_config.prepare_edit`) gives every field the
user left at FateZero's default Video-P2P's value, and with ``weights`` (a T2S run's
``weights/`` folder) takes the base model, the video, its caption, the frames and the frame
attention from the run's ``tune.json`` where nothing was set. What "set" means: named in
``sources`` (a preset or a flag, as the CLI passes them). The Python API has no sources: a
field equal to FateZero's default counts as unset there; :func:`video_p2p_config` records the
fields it is given, so that an explicit ``inversion_weight=1.0`` stays 1.0.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .p2p_words import word_in

__all__ = [
    "EDITORS",
    "T2S_TUNE",
    "VIDEO_P2P_DEFAULTS",
    "check_editor_fields",
    "prepare_t2s_for",
    "t2s_config",
    "video_p2p_config",
    "video_p2p_defaults",
]

EDITORS = ("fatezero", "video-p2p")
# EditConfig fields whose Video-P2P value differs from FateZero's default (run_videop2p.py:
# cross_replace_steps 0.2; FrameAttention: frame 0's keys and values; the INR paper: gamma 0.5)
VIDEO_P2P_DEFAULTS = {"inversion_weight": 0.5, "cross_replace": 0.2, "attention": "first_frame"}
# TuneConfig fields of T2S tuning (configs/rabbit-jump-tune.yaml and its siblings)
T2S_TUNE = {
    "frames": 8,
    "stride": 1,
    "steps": 500,
    "learning_rate": 3e-5,
    "trainable": ("attn1.to_q", "attn2.to_q", "attn_temp"),  # attn_temp = temporal.attn
    "attention": "first_frame",
    "group_norm": "video",  # its ResnetBlock3D's GroupNorm sees all frames
    "resize": "exact",
    "guidance_scale": 12.5,
    "inference_steps": 50,
    "seed": 33,
}
_VIDEO_P2P_ONLY = ("weights", "fast", "edit_blend_words")
_FROM_RECORD = ("video", "source_prompt", "model", "frames", "size", "start", "stride",
                "attention")  # fmt: skip


def check_editor_fields(config) -> None:
    """The editor and Video-P2P's own fields of an EditConfig (its ``__post_init__``)."""
    if config.editor not in EDITORS:
        raise ValueError(f"editor must be one of {', '.join(EDITORS)}; got {config.editor!r}")
    n = config.null_text_iterations
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 1000:
        raise ValueError(f"null_text_iterations must be an integer in 1..1000, got {n!r}")
    if config.editor != "video-p2p":
        given = [k for k in _VIDEO_P2P_ONLY if getattr(config, k)]
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise ValueError(f"{flags}: Video-P2P settings (add --editor video-p2p)")
        return
    if not config.prompt:
        return
    words = config.edit_blend_words or config.blend_words
    for word in words:
        if not word_in(config.prompt, word):
            hint = "" if config.edit_blend_words else (
                " (name the edit prompt's word with --edit-blend-words)")
            raise ValueError(f"blend word {word!r} is not in the edit prompt {config.prompt!r}"
                             f"{hint}")  # fmt: skip
    if config.edit_blend_words and not config.blend_words:
        raise ValueError("--edit-blend-words needs --blend-words (the source prompt's words)")


def _record_values(weights: str) -> dict:
    """What a T2S run's ``tune.json`` says about the model, the video and its frames."""
    from .tune_run import read_tune_record

    folder = Path(weights).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"weights folder {weights} not found (pass RUN/weights of a "
                                "T2S `inr-smooth tune` run)")  # fmt: skip
    record = read_tune_record(folder)
    tuned = record.get("config", {})
    if tuned.get("controlnets"):
        raise ValueError(f"{weights} holds a ControlVideo run (ControlNets): Video-P2P edits "
                         "a model tuned without ControlNets (T2S)")  # fmt: skip
    if record["height"] != record["width"]:
        raise ValueError(f"{weights} was tuned on {record['width']}x{record['height']} frames; "
                         "editing takes square frames")  # fmt: skip
    values = {"video": record["video"], "source_prompt": record["prompt"],
              "model": record["model"], "frames": record["frames"], "size": record["height"],
              "start": record["start"], "stride": record["stride"]}  # fmt: skip
    if "attention" in tuned:
        values["attention"] = tuned["attention"]
    return values


def video_p2p_defaults(config, sources: dict[str, str] | None = None):
    """``(config, sources)`` with Video-P2P's defaults and the T2S run's record applied to every
    field that is not in ``sources`` and still holds FateZero's default (module docstring)."""
    from ..config import config_from_dict

    sources = dict(sources or {})
    defaults = {f.name: f.default for f in dataclasses.fields(config)}
    values: dict = {}

    def unset(name: str) -> bool:
        return name not in sources and getattr(config, name) == defaults[name]

    if config.weights:
        for name, value in _record_values(config.weights).items():
            if name in _FROM_RECORD and unset(name):
                values[name], sources[name] = value, "tuned weights (tune.json)"
    for name, value in VIDEO_P2P_DEFAULTS.items():
        if name not in values and unset(name):
            values[name], sources[name] = value, "Video-P2P default"
    data = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return config_from_dict(type(config), {**data, **values}), sources


def video_p2p_config(**fields):
    """A :class:`~.edit_config.PreparedEdit` of ``editor="video-p2p"`` with ``fields`` as given
    (even where they equal FateZero's defaults) and Video-P2P's defaults elsewhere."""
    from ..config import config_from_dict
    from .edit_config import EditConfig, prepare_edit

    fields = {"editor": "video-p2p", **fields}
    config = config_from_dict(EditConfig, fields)  # lists (YAML) become tuples
    return prepare_edit(config, dict.fromkeys(fields, "given"))


def t2s_config(**fields):
    """A :class:`~.tune_config.TuneConfig` with T2S's settings (:data:`T2S_TUNE`) under
    ``fields``: Video-P2P's first stage, on the ``tune`` pipeline."""
    from ..config import config_from_dict
    from .tune_config import TuneConfig

    return config_from_dict(TuneConfig, {**T2S_TUNE, **fields})


def prepare_t2s_for(edit, *, output: str, steps: int | None = None,
                    learning_rate: float | None = None, device: str | None = None):  # fmt: skip
    """The prepared T2S run (a :class:`~.tune_config.PreparedTune`) before the Video-P2P edit of
    the :class:`~.edit_config.EditConfig` ``edit``, on its clip, frames, source prompt and
    model, into ``output``; None for ``steps`` 0. ``steps`` / ``learning_rate`` None: the
    model's recommended tuning values where it has them (mini's 60 at 1e-4, as ``bench
    quality`` tunes T2S), else T2S's (:data:`T2S_TUNE`: 500 at 3e-5)."""
    from ..model_info import describe_model
    from .tune_config import prepare_tune

    recommended = describe_model(edit.model).recommended_for("tune")
    fields = {k: recommended[k] for k in ("steps", "learning_rate") if k in recommended}
    given = {"steps": steps, "learning_rate": learning_rate, "device": device}
    fields.update({k: v for k, v in given.items() if v is not None})
    if fields.get("steps") == 0:
        return None
    # the run's own inversion (tune inverts the clip for `generate`; the edit inverts anew)
    # takes the edit's steps: 50 on SD, as T2S's, fewer where the edit takes fewer
    fields.update(video=edit.video, prompt=edit.source_prompt, model=edit.model, output=output,
                  frames=edit.frames, size=edit.size, start=edit.start, stride=edit.stride,
                  inference_steps=edit.inference_steps, smoothing="none",
                  checkpoint_every=0)  # fmt: skip
    return prepare_tune(t2s_config(**fields), dict.fromkeys(fields, "given"))
