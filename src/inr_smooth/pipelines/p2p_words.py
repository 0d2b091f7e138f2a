"""The words of prompt-to-prompt control, checked without torch or a tokenizer.

Which controller a pair of prompts takes (word swap or refinement), whether a word is in a
prompt, and the parsing of the edit config's ``cross_replace`` windows and ``reweight`` scales:
what :class:`~inr_smooth.pipelines.edit_config.EditConfig` checks when it is built.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Literal

__all__ = ["ControllerKind", "check_control_fields", "choose_controller", "word_in"]

ControllerKind = Literal["replace", "refine"]


def word_in(prompt: str, word: str) -> bool:
    """Whether ``word`` occurs in ``prompt`` as whole words (case-insensitive; no tokenizer)."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", prompt, re.I) is not None


def choose_controller(source: str, prompt: str, controller: str = "auto") -> ControllerKind:
    """``"replace"`` (word swap) or ``"refine"``; ``"auto"`` chooses as FateZero does: word swap
    exactly when both prompts have the same number of words."""
    same = len(source.split()) == len(prompt.split())
    if controller == "auto":
        return "replace" if same else "refine"
    if controller == "replace" and not same:
        raise ValueError(
            f"controller 'replace' (word swap) needs prompts with the same number of words, got "
            f"{len(source.split())} in {source!r} and {len(prompt.split())} in {prompt!r} "
            "(use 'refine' or 'auto')"
        )
    if controller not in ("replace", "refine"):
        raise ValueError(f"controller must be auto, replace or refine; got {controller!r}")
    return controller  # type: ignore[return-value]


def _parse_reweight(value) -> dict[str, float]:
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"reweight must map words to scales (WORD=SCALE ...), got {value!r}")
    else:
        items = []
        for entry in value:
            word, sep, scale = str(entry).rpartition("=")
            if not sep or not word:
                raise ValueError(f"expected reweight entries as WORD=SCALE, got {entry!r}")
            items.append((word, scale))
    out = {}
    for word, scale in items:
        try:
            number = float(scale)
        except (TypeError, ValueError):
            message = f"reweight scale of {word!r} must be a number, got {scale!r}"
            raise ValueError(message) from None
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"reweight scale of {word!r} must be >= 0, got {scale!r}")
        out[str(word)] = number
    return out


def _window(name: str, value):
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a fraction or [start, end], got {value!r}")
    if isinstance(value, int | float):
        window = float(value)
        ok = 0.0 <= window <= 1.0
    else:
        window = [float(v) for v in value]  # a list: config.yaml and log.json write it as is
        ok = len(window) == 2 and 0.0 <= window[0] <= window[1] <= 1.0
    if not ok:
        raise ValueError(f"{name} must be a fraction in [0, 1] or [start, end], got {value!r}")
    return window


def _parse_cross_replace(value):
    if not isinstance(value, Mapping):
        return _window("cross_replace", value)
    out = {}
    for key, window in value.items():
        name = "default" if key in ("default", "default_") else str(key)
        out[name] = _window(f"cross_replace[{key!r}]", window)
    return out


def check_control_fields(config) -> None:
    """Normalise and check an EditConfig's prompt-to-prompt fields (in ``__post_init__``)."""
    object.__setattr__(config, "cross_replace", _parse_cross_replace(config.cross_replace))
    object.__setattr__(config, "reweight", _parse_reweight(config.reweight))
    minimum = config.cross_frame_min_channels
    if not isinstance(minimum, int) or isinstance(minimum, bool) or minimum < 0:
        raise ValueError(f"cross_frame_min_channels must be an integer >= 0, got {minimum!r}")
    if not (config.source_prompt and config.prompt):
        return
    choose_controller(config.source_prompt, config.prompt, config.controller)
    windows = config.cross_replace if isinstance(config.cross_replace, dict) else {}
    words = [("reweight", w) for w in config.reweight]
    words += [("cross-replace", w) for w in windows if w != "default"]
    for what, word in words:
        if not word_in(config.prompt, word):
            raise ValueError(f"{what} word {word!r} is not in the edit prompt {config.prompt!r}")
