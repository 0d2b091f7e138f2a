"""The methods a grid can name: each is a small registry entry on a host (no torch here).

A *host* is one of the library's pipelines as the batch runs it: which config dataclass holds a
job's settings, which torch-free ``prepare`` call resolves and checks them, whether a job makes
one output (``edit``: one job per edit prompt) or all of a video's (``tune``: one tuning, one
generated video per edit prompt), and the API call that runs it. A *method* is a name and the
config values it fixes (``tune:inr`` = the tune host with ``smoothing="inr"``); the grid's
parameters fill in the rest. New hosts and methods plug in with :func:`register_host` and
:func:`register_method`, e.g. a ControlVideo method on the tune host::

    register_method(Method("tune:controlvideo", "tune",
                           {"controlnets": ("mini-canny",), "controls": ("canny",)}))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BATCH_FIELDS",
    "HOSTS",
    "METHODS",
    "Host",
    "Method",
    "get_method",
    "register_host",
    "register_method",
]

# what only INR(TF) uses: with gamma 0 (plain inversion) an edit does not depend on them
INR_TF_FIELDS = ("seed", "noise_source", "alpha", "beta", "chain", "apply_at")
# config fields the batch sets itself: a grid's parameters may not name them
BATCH_FIELDS = frozenset({"video", "prompt", "source_prompt", "edit_prompts", "model", "output",
                          "device", "cache_dir"})  # fmt: skip


@dataclass(frozen=True)
class Host:
    """How the batch runs one of the library's pipelines."""

    name: str
    config_cls: type  # frozen dataclass of the pipeline's settings
    build: Callable[..., Any]  # (video, source_prompt, prompts, model, values) -> config
    prepare: Callable[[Any], Any]  # torch-free: resolve model defaults, check every value
    run: Callable[..., dict[str, Path]]  # (prepared, output, progress, memory_check) -> outputs
    per_prompt: bool  # True: one job per edit prompt; False: one job for all of a video's
    defaults: Mapping[str, Any] = field(default_factory=dict)  # the batch's own defaults
    loads_parts: bool = True  # loads Stable Diffusion parts (the worker then reuses them)

    def fields(self) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(self.config_cls)}


@dataclass(frozen=True)
class Method:
    """A named method: a host and the config values it fixes."""

    name: str
    host: str
    fixed: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    # fields its outputs do not depend on: a grid axis over them gives this method one job
    ignores: frozenset[str] = frozenset()


HOSTS: dict[str, Host] = {}
METHODS: dict[str, Method] = {}


def register_host(host: Host) -> Host:
    HOSTS[host.name] = host
    return host


def register_method(method: Method) -> Method:
    """Add (or replace) a method; its host must be registered and its fixed keys be fields."""
    if method.host not in HOSTS:
        raise ValueError(f"method {method.name!r}: unknown host {method.host!r} "
                         f"(registered: {', '.join(HOSTS)})")  # fmt: skip
    unknown = sorted(set(method.fixed) - set(HOSTS[method.host].fields()))
    if unknown:
        raise ValueError(f"method {method.name!r} fixes unknown fields {unknown}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r} (known: {', '.join(METHODS)})")
    return METHODS[name]


# ---------------------------------------------------------------------- tune host
def _build_tune(video: str, source_prompt: str, prompts: Sequence[str], model: str,
                values: dict):  # fmt: skip
    from ..config import config_from_dict
    from ..pipelines.tune_config import TuneConfig

    return config_from_dict(TuneConfig, {**values, "video": video, "prompt": source_prompt,
                                         "edit_prompts": tuple(prompts), "model": model})


def _prepare_tune(config):
    from ..pipelines.tune_config import prepare_tune

    return prepare_tune(config)


def _run_tune(prepared, output: Path, *, progress: bool, memory_check: bool) -> dict[str, Path]:
    """tune() into ``output`` (resuming a run a killed job left there); the gif per prompt."""
    from ..pipelines.sample_names import sample_names
    from ..pipelines.tune import tune

    resumable = (output / "weights" / "tune.json").is_file() or any(output.glob("checkpoint-*"))
    tune(prepared, resume=resumable, overwrite=not resumable, memory_check=memory_check,
         progress=progress)  # fmt: skip
    prompts = list(dict.fromkeys(prepared.config.edit_prompts))
    names = sample_names(prompts)
    return {p: output / "samples" / f"{n}.gif" for p, n in zip(prompts, names, strict=True)}


def _tune_config_cls():
    from ..pipelines.tune_config import TuneConfig

    return TuneConfig


# ---------------------------------------------------------------------- edit host
def _build_edit(video: str, source_prompt: str, prompts: Sequence[str], model: str,
                values: dict):  # fmt: skip
    from ..config import config_from_dict
    from ..pipelines.edit_config import EditConfig

    (prompt,) = prompts
    return config_from_dict(EditConfig, {**values, "video": video, "model": model,
                                         "source_prompt": source_prompt, "prompt": prompt})


def _prepare_edit(config):
    from ..pipelines.edit_config import prepare_edit

    return prepare_edit(config)


def _run_edit(prepared, output: Path, *, progress: bool, memory_check: bool) -> dict[str, Path]:
    from ..pipelines.edit import edit
    from ..pipelines.sample_names import sample_names

    edit(prepared, overwrite=True, memory_check=memory_check, progress=progress)
    prompt = prepared.config.prompt
    return {prompt: output / f"{sample_names([prompt])[0]}.gif"}


def _edit_config_cls():
    from ..pipelines.edit_config import EditConfig

    return EditConfig


def _register_builtin() -> None:
    # tune: no checkpoints by default (a killed job restarts; set checkpoint_every to resume)
    register_host(Host("tune", _tune_config_cls(), _build_tune, _prepare_tune, _run_tune,
                       per_prompt=False, defaults={"checkpoint_every": 0}))  # fmt: skip
    register_host(Host("edit", _edit_config_cls(), _build_edit, _prepare_edit, _run_edit,
                       per_prompt=True))  # fmt: skip
    for smoothing in ("none", "smoothvideo", "smoothvideo-simple", "inr"):
        register_method(Method(f"tune:{smoothing}", "tune", {"smoothing": smoothing},
                               f"one-shot tuning with smoothing={smoothing}"))  # fmt: skip
    # ControlVideo: the tune host with ControlNets (mini's Canny net unless the grid's
    # parameters for "controlvideo" name others, with their controls)
    controlvideo = dataclasses.replace(
        HOSTS["tune"], name="controlvideo",
        defaults={**HOSTS["tune"].defaults, "controlnets": ("mini-canny",), "controls": ("canny",)},
    )  # fmt: skip
    register_host(controlvideo)
    for name, smoothing in (("tune:controlvideo", "none"), ("tune:controlvideo+inr", "inr")):
        register_method(Method(name, "controlvideo", {"smoothing": smoothing},
                               f"ControlVideo tuning with smoothing={smoothing}"))  # fmt: skip
    register_method(Method("edit:plain", "edit", {"inversion_weight": 0.0},
                           "training-free editing, plain DDIM inversion (gamma 0)",
                           ignores=frozenset(INR_TF_FIELDS)))
    register_method(Method("edit:inr", "edit", {},
                           "training-free editing with INR(TF) inversion noise (gamma 1.0)"))
    # Video-P2P: T2S tuning (shared by the jobs of a clip), then its editor (batch/t2s_edit.py)
    from . import t2s_edit

    register_host(Host("video-p2p", t2s_edit.T2SEditConfig, t2s_edit.build, t2s_edit.prepare,
                       t2s_edit.run, per_prompt=True))  # fmt: skip
    register_method(Method("edit:video-p2p", "video-p2p", {"inversion_weight": 0.0},
                           "Video-P2P: T2S tuning, null-text inversion, its control (gamma 0)",
                           ignores=frozenset(INR_TF_FIELDS)))
    register_method(Method("edit:video-p2p+inr", "video-p2p", {},
                           "Video-P2P with INR(TF) inversion noise (gamma 0.5)"))


_register_builtin()
