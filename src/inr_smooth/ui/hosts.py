"""The hosts the web UI offers, as declarative entries: form fields, and which API call runs them.

A :class:`Host` is a job (``"tune"``: :func:`~inr_smooth.pipelines.tune.tune` with
:class:`~inr_smooth.pipelines.tune_config.TuneConfig`, then its generated video; ``"edit"``:
:func:`~inr_smooth.pipelines.edit.edit` with :class:`~inr_smooth.pipelines.edit_config.EditConfig`),
the form fields it shows, each naming the config field it sets, fixed config values, config
values that depend on the model (:attr:`Host.model_values`) and, for Video-P2P, the fields of a
T2S tuning run before the edit (:attr:`Host.t2s`). Adding a host that the library gained is one
more entry in :data:`HOSTS`; the layout builds one input per field key. Nothing here imports
torch. The four: Tune-A-Video and ControlVideo (tune), FateZero and Video-P2P (edit).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["CONTROLVIDEO", "FATEZERO", "HOSTS", "JOBS", "TUNE_A_VIDEO", "VIDEO_P2P", "Field",
           "Host", "host_by_key", "hosts_for_job", "ui_fields"]

Kind = Literal["text", "int", "float", "slider", "choice"]
# where a field sits on the page, in this order
GROUPS = {"prompts": "prompts", "smoothing": "smoothing", "editing": "the editor's controls",
          "frames": "frames", "sampling": "tuning and sampling"}  # fmt: skip

JOBS = {"tune": "Tune + generate", "edit": "Edit (training-free)"}


@dataclass(frozen=True)
class Field:
    """One form input. ``default`` None: the value the job's config resolves for the model
    (as the CLI does: the model's recommendation, its native size, else the built-in default)."""

    key: str  # the input's name; one input per key across all hosts
    label: str
    kind: Kind
    group: str = "sampling"  # a key of GROUPS
    target: str = ""  # the config field it sets ("" = key)
    default: Any = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    info: str = ""
    to_config: Callable[[Any], Any] | None = None  # form value -> config value
    from_config: Callable[[Any], Any] | None = None  # config value -> form value (defaults)

    @property
    def config_key(self) -> str:
        return self.target or self.key

    def widget(self) -> tuple:
        """What the input looks like: fields sharing a key must agree on it."""
        return (self.label, self.kind, self.group, self.choices, self.minimum, self.maximum,
                self.step)  # fmt: skip


@dataclass(frozen=True)
class Host:
    key: str
    label: str
    job: Literal["tune", "edit"]
    summary: str
    fields: tuple[Field, ...]
    # config values the UI always sets (not part of the hash: hosts key caches)
    fixed: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    # (config values so far, model) -> the config values that depend on the model
    model_values: Callable[[dict[str, Any], str], dict[str, Any]] | None = field(
        default=None, hash=False, compare=False)  # fmt: skip
    # keys of fields that set the TuneConfig of a T2S run before the edit (Video-P2P), not the
    # job's config; empty: no tuning first
    t2s: tuple[str, ...] = ()

    def config_values(self, values: dict[str, Any], model: str | None = None) -> dict[str, Any]:
        """The config fields set by form ``values`` (keys of :attr:`fields`; None = unset),
        with :attr:`model_values` for ``model`` (the T2S fields: :meth:`t2s_values`)."""
        out = dict(self.fixed)
        out.update(self._set(values, [f for f in self.fields if f.key not in self.t2s]))
        if self.model_values is not None and model is not None:
            out.update(self.model_values(out, model))
        return out

    def t2s_values(self, values: dict[str, Any]) -> dict[str, Any]:
        """The T2S run's TuneConfig fields set by form ``values``."""
        return self._set(values, [f for f in self.fields if f.key in self.t2s])

    @staticmethod
    def _set(values: dict[str, Any], fields: list[Field]) -> dict[str, Any]:
        out = {}
        for f in fields:
            value = values.get(f.key)
            if isinstance(value, str):
                value = value.strip()
            if value is None or value == "":
                continue
            if f.kind == "int" and isinstance(value, float) and value.is_integer():
                value = int(value)  # browsers send 8.0 for 8
            out[f.config_key] = f.to_config(value) if f.to_config else value
        return out


def _prompt_tuple(text: str) -> tuple[str, ...]:
    return (text,)


def _first(prompts: tuple[str, ...]) -> str:
    return prompts[0] if prompts else ""


SOURCE_PROMPT = "source_prompt"
EDIT_PROMPT = "edit_prompt"
_PROMPT_INFO = "what the source clip shows"
_FRAMES = Field("frames", "frames", "int", "frames", minimum=2, maximum=128, step=1,
                info="frames read from the clip")  # fmt: skip
_SIZE = Field("size", "size (px)", "int", "frames", minimum=8, maximum=1024, step=8,
              info="frame side; the model's native size by default")  # fmt: skip
_STEPS = Field("steps", "tuning steps", "int", minimum=1, maximum=10000, step=1)
_DDIM = Field("inference_steps", "DDIM steps", "int", minimum=1, maximum=1000, step=1)
_GUIDANCE = Field("guidance_scale", "guidance scale", "float", minimum=1.0, maximum=50.0,
                  step=0.5)  # fmt: skip
_SEED = Field("seed", "seed", "int", minimum=0, step=1)
_STRIDE = Field("stride", "stride", "int", "frames", minimum=1, maximum=16, step=1,
                info="take every N-th frame")  # fmt: skip

TUNE_A_VIDEO = Host(
    key="tune-a-video",
    label="Tune-A-Video",
    job="tune",
    summary="one-shot tuning of the model on the clip with a smoothing loss (INR(T), "
    "SmoothVideo or none), then a video generated from the inverted clip with the edit prompt",
    fields=(
        Field(
            SOURCE_PROMPT, "source prompt", "text", "prompts", target="prompt", info=_PROMPT_INFO
        ),
        Field(
            EDIT_PROMPT,
            "edit prompt",
            "text",
            "prompts",
            target="edit_prompts",
            to_config=_prompt_tuple,
            from_config=_first,
            info="what the output should show",
        ),
        Field(
            "smoothing",
            "smoothing",
            "choice",
            "smoothing",
            choices=("inr", "smoothvideo", "smoothvideo-simple", "none"),
            info="the smoothing loss added while tuning",
        ),
        Field(
            "smooth_weight",
            "smoothing weight λ",
            "float",
            "smoothing",
            minimum=0.0,
            maximum=100.0,
            step=0.1,
            from_config=lambda v: None,
            info="empty: the host's default (Tune-A-Video: inr 2.0, smoothvideo 0.2; "
            "ControlVideo: 0.2)",
        ),
        _FRAMES,
        _STRIDE,
        _SIZE,
        _STEPS,
        _DDIM,
        _GUIDANCE,
        _SEED,
    ),
    fixed={"checkpoint_every": 0},  # the run folder is a download: no checkpoints in it
)

FATEZERO = Host(
    key="fatezero",
    label="FateZero",
    job="edit",
    summary="training-free editing: DDIM inversion with INR(TF) inversion noise, then "
    "sampling with the edit prompt and attention fusion",
    fields=(
        Field(SOURCE_PROMPT, "source prompt", "text", "prompts", info=_PROMPT_INFO),
        Field(
            EDIT_PROMPT,
            "edit prompt",
            "text",
            "prompts",
            target="prompt",
            info="what the output should show",
        ),
        Field(
            "inversion_weight",
            "INR weight γ",
            "slider",
            "smoothing",
            minimum=0.0,
            maximum=1.0,
            step=0.05,
            info="INR(TF) inversion noise; 0 = plain DDIM inversion",
        ),
        _FRAMES,
        _STRIDE,
        _SIZE,
        _DDIM,
        _GUIDANCE,
        _SEED,
    ),
)

# ControlVideo: a ControlNet per control kind (the INR paper's ControlVideo runs use these)
SD_CONTROLNETS = {"canny": "lllyasviel/sd-controlnet-canny", "hed": "lllyasviel/sd-controlnet-hed",
                  "depth": "lllyasviel/sd-controlnet-depth",
                  "pose": "lllyasviel/sd-controlnet-openpose"}  # fmt: skip


def _is_mini(model: str) -> bool:
    from ..mini import MINI_MODEL_DIR

    return model == "mini" or Path(model).expanduser().resolve() == MINI_MODEL_DIR


def _controlnet_for(values: dict[str, Any], model: str) -> dict[str, Any]:
    """The ControlNet of the chosen control where the form names none: the shipped mini one
    on mini, lllyasviel's SD 1.5 ControlNet otherwise."""
    from ..mini import MINI_CONTROLNETS

    control = values.get("controls", ("canny",))[0]
    if values.get("controlnets"):
        return {"controls": (control,)}
    if not _is_mini(model):
        net = SD_CONTROLNETS.get(control)
        if net is None:
            raise ValueError(f"name a ControlNet for {control} maps")
        return {"controlnets": (net,), "controls": (control,)}
    shipped = {kind: name for name, kind in MINI_CONTROLNETS.items()}
    if control not in shipped:
        raise ValueError(f"mini ships ControlNets for {' and '.join(shipped)} maps only: name a "
                         f"ControlNet for {control} maps")  # fmt: skip
    return {"controlnets": (shipped[control],), "controls": (control,)}


CONTROLVIDEO = Host(
    key="controlvideo",
    label="ControlVideo",
    job="tune",
    summary="one-shot tuning conditioned on a ControlNet map of every source frame (key-frame "
    "attention, ControlVideo's temporal branch and trainable set) with a smoothing loss, then "
    "a video generated from the inverted clip with the edit prompt and the same maps",
    fields=(
        *TUNE_A_VIDEO.fields[:4],
        Field(
            "control",
            "control maps",
            "choice",
            "editing",
            target="controls",
            choices=tuple(SD_CONTROLNETS),
            default="canny",
            to_config=_prompt_tuple,
            info="computed from every source frame (hed, depth, pose: the detectors extra)",
        ),
        Field(
            "controlnet",
            "ControlNet",
            "text",
            "editing",
            target="controlnets",
            to_config=_prompt_tuple,
            info="a diffusers ControlNet (hub id or folder); empty: mini-canny / mini-depth on "
            "mini, lllyasviel/sd-controlnet-<maps> otherwise",
        ),
        *TUNE_A_VIDEO.fields[4:],
    ),
    fixed={"checkpoint_every": 0},
    model_values=_controlnet_for,
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(w for w in text.replace(",", " ").split() if w)


VIDEO_P2P = Host(
    key="video-p2p",
    label="Video-P2P",
    job="edit",
    summary="T2S tuning on the clip, then null-text inversion and prompt-to-prompt editing "
    "with decoupled guidance (LocalBlend where blend words are given), INR(TF) on the start "
    "latent",
    fields=(
        *FATEZERO.fields[:3],
        Field("cross_replace", "cross-attention replace", "slider", "editing", minimum=0.0,
              maximum=1.0, step=0.05,
              info="share of the steps that use the source's cross-attention maps"),
        Field("self_replace", "temporal-attention replace", "slider", "editing", minimum=0.0,
              maximum=1.0, step=0.05,
              info="share of the steps that use the source's temporal attention maps"),
        Field("blend_words", "blend word (source prompt)", "text", "editing",
              to_config=_words, info="LocalBlend's region, e.g. circle; empty: no LocalBlend"),
        Field("edit_blend_words", "blend word (edit prompt)", "text", "editing",
              to_config=_words, info="its word in the edit prompt, e.g. square"),
        Field("t2s_steps", "T2S tuning steps", "int", target="steps", minimum=0,
              maximum=10000, step=1,
              info="Video-P2P's first stage on the clip; 0: edit the untuned model"),
        *FATEZERO.fields[3:],
    ),
    fixed={"editor": "video-p2p"},
    t2s=("t2s_steps",),
)

HOSTS: tuple[Host, ...] = (TUNE_A_VIDEO, CONTROLVIDEO, FATEZERO, VIDEO_P2P)


def host_by_key(key: str) -> Host:
    for host in HOSTS:
        if host.key == key:
            return host
    raise ValueError(f"unknown host {key!r} (expected one of {[h.key for h in HOSTS]})")


def hosts_for_job(job: str) -> list[Host]:
    if job not in JOBS:
        raise ValueError(f"unknown job {job!r} (expected one of {list(JOBS)})")
    return [h for h in HOSTS if h.job == job]


def ui_fields(hosts: tuple[Host, ...] = HOSTS) -> list[Field]:
    """One field per key over all hosts, by group (:data:`GROUPS`), then in order of first
    appearance; a key's widget must be the same in every host."""
    seen: dict[str, Field] = {}
    for host in hosts:
        for f in host.fields:
            if f.key in seen and seen[f.key].widget() != f.widget():
                raise ValueError(
                    f"field {f.key!r} of host {host.key!r} differs from its first use: expected "
                    f"{seen[f.key].widget()}, got {f.widget()}"
                )
            if f.group not in GROUPS:
                raise ValueError(f"field {f.key!r}: group must be one of {list(GROUPS)}, "
                                 f"got {f.group!r}")  # fmt: skip
            seen.setdefault(f.key, f)
    order = list(GROUPS)
    return sorted(seen.values(), key=lambda f: order.index(f.group))  # stable: keeps the order


def config_fields(config_cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_cls)}
