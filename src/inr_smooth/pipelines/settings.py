"""What the run configs share: value checks, model-native defaults and where each value came from.

Torch-free: configs are built, resolved and checked before any model or heavy library loads,
so that a bad flag is reported at once.

Fields that depend on the model (frame size, frame count, steps, ...) are ``None`` until
:func:`resolve_model_fields` fills them, in this order: what the user gave (a preset or a
flag); the model folder's recommended settings (``inr_smooth_defaults.json``); the model's
native size (``unet.sample_size x VAE scale``) for ``size``; the built-in default (the original
host's). The run log records the source of every value.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ..model_info import ModelInfo, ModelLoadError

__all__ = [
    "check_all",
    "finite",
    "given_sources",
    "or_unset",
    "resolve_model_fields",
    "seed_ok",
]


def finite(value: float | None) -> bool:
    """A real number (not NaN, not infinite); None passes (not set yet)."""
    return value is None or (isinstance(value, (int, float)) and math.isfinite(value))


def or_unset(value, placeholder):
    """``value``, or a valid ``placeholder`` while it is unset (checked once resolved)."""
    return placeholder if value is None else value


def seed_ok(seed: int) -> bool:
    return isinstance(seed, int) and 0 <= seed < 2**63


def check_all(checks: Iterable[tuple[bool, str]]) -> None:
    """Raise ValueError with the message of the first failed ``(ok, message)``."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def given_sources(config: Any, fields: Iterable[str]) -> dict[str, str]:
    """``{field: "given"}`` for the model-dependent fields the caller set."""
    return {name: "given" for name in fields if getattr(config, name) is not None}


def resolve_model_fields(
    config: Any,
    info: ModelInfo,
    command: str,
    builtin: Mapping[str, Any],
    sources: Mapping[str, str] | None = None,
) -> tuple[Any, dict[str, str]]:
    """Fill the ``None`` fields among ``builtin``'s keys; return the config and every field's
    source (``sources`` names those the user set: "preset", "flag" or "given")."""
    sources = dict(sources or given_sources(config, builtin))
    recommended = info.recommended_for(command)
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(recommended) - fields)
    if unknown:
        raise ModelLoadError(
            f"{info.defaults_file}: unknown {command} setting(s) {', '.join(unknown)} (known: "
            f"{', '.join(sorted(fields))})"
        )
    values = {}
    for name, default in builtin.items():
        if getattr(config, name) is not None:
            sources.setdefault(name, "given")
            continue
        if name in recommended:
            values[name], sources[name] = recommended[name], f"model ({info.defaults_file})"
        elif name == "size":
            values[name] = info.native_size
            sources[name] = f"model (native size {info.native_size} px)"
        else:
            values[name], sources[name] = default, "default"
    # values from a model's defaults file go through the same type checks as a preset's
    from ..config import config_from_dict

    data = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return config_from_dict(type(config), {**data, **values}), sources
