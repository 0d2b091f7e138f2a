"""Frozen dataclass configs, read from YAML presets and command-line overrides.

A preset's keys are exactly the dataclass's field names; an unknown key raises, so a typo in a
preset never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")

__all__ = [
    "ConfigError",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "load_config_with_sources",
]


class ConfigError(ValueError):
    """A preset or override that does not fit the config dataclass."""


def _coerce(name: str, annotation: Any, value: Any) -> Any:
    """Coerce YAML scalars/lists to a field's annotated type (tuples, floats from ints)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _coerce(name, non_none[0], value) if len(non_none) == 1 else value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{name} must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        items = [value] if isinstance(value, str) else list(value)
        inner = args[0] if args else Any
        return tuple(_coerce(name, inner, v) for v in items)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise ConfigError(f"{name} must be {annotation.__name__}, got {value!r}")
    return value


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build ``cls`` from a mapping; unknown keys and ill-typed values raise ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s): {', '.join(unknown)} "
            f"(known: {', '.join(sorted(fields))})"
        )
    hints = typing.get_type_hints(cls)
    values = {key: _coerce(key, hints[key], value) for key, value in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{cls.__name__}: {exc}") from None


def _read_preset(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return loaded or {}


def load_config_with_sources(
    cls: type[C], path: str | Path | None = None, **overrides: Any
) -> tuple[C, dict[str, str]]:
    """:func:`load_config`, and where each set value came from: ``"preset"`` or ``"flag"``."""
    data = _read_preset(path) if path is not None else {}
    sources = dict.fromkeys(data, "preset")
    flags = {k: v for k, v in overrides.items() if v is not None}
    data.update(flags)
    sources.update(dict.fromkeys(flags, "flag"))
    return config_from_dict(cls, data), sources


def load_config(cls: type[C], path: str | Path | None = None, **overrides: Any) -> C:
    """Read a YAML preset (optional) and apply overrides whose value is not None."""
    return load_config_with_sources(cls, path, **overrides)[0]


def config_to_dict(config: Any) -> dict[str, Any]:
    """A YAML/JSON-ready dict of a config (tuples become lists)."""
    out = {}
    for key, value in dataclasses.asdict(config).items():
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
