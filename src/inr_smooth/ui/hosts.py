"""The hosts the web UI offers, as declarative entries: form fields, and which API call runs them.

A :class:`Host` is a job (``"tune"``: :func:`~inr_smooth.pipelines.tune.tune` with
:class:`~inr_smooth.pipelines.tune_config.TuneConfig`, then its generated video; ``"edit"``:
:func:`~inr_smooth.pipelines.edit.edit` with :class:`~inr_smooth.pipelines.edit_config.EditConfig`),
the form fields it shows, each naming the config field it sets, and fixed config values. Adding a
host that the library gained (an editor of EditConfig, tuning with a ControlNet) is one more
entry in :data:`HOSTS`; the layout builds one input per field key. Nothing here imports torch.
For example, an editor selected by an EditConfig field would be::

    Host(key="video-p2p", label="Video-P2P", job="edit", summary="...",
         fields=(*FATEZERO.fields, Field("cross_replace", "cross-attention replace", "slider",
                                         "editing", minimum=0.0, maximum=1.0, step=0.05)),
         fixed={"editor": "video-p2p"})
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["HOSTS", "JOBS", "Field", "Host", "host_by_key", "hosts_for_job", "ui_fields"]

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

    def config_values(self, values: dict[str, Any]) -> dict[str, Any]:
        """The config fields set by form ``values`` (keys of :attr:`fields`; None = unset)."""
        out = dict(self.fixed)
        for f in self.fields:
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
            info="empty: the mode's default (inr 2.0, smoothvideo 0.2)",
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

HOSTS: tuple[Host, ...] = (TUNE_A_VIDEO, FATEZERO)


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
