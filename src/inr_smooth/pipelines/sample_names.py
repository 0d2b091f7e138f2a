"""File names of generated videos: short, file-system safe, distinct within a folder (no torch)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

__all__ = ["sample_files", "sample_names", "slug"]


def slug(prompt: str, max_len: int = 60) -> str:
    """File-name-safe short form: ``"a jeep car, Van Gogh"`` -> ``a-jeep-car-van-gogh``; a
    prompt with no Latin letters or digits becomes ``prompt-<hash>``."""
    text = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")
    if not text:
        return "prompt-" + hashlib.sha256(prompt.encode()).hexdigest()[:10]
    return text[:max_len].rstrip("-")


def sample_names(prompts: Sequence[str]) -> list[str]:
    """One distinct file name per prompt: :func:`slug`, and where two prompts share a slug
    ("a green square" and "A green square!") the later ones get a hash of their text."""
    names: list[str] = []
    for prompt in prompts:
        name = slug(prompt)
        if name in names:
            name = f"{name}-{hashlib.sha256(prompt.encode()).hexdigest()[:8]}"
        if name in names:
            raise ValueError(f"the prompt {prompt!r} is given twice")
        names.append(name)
    return names


def sample_files(folder: Path, name: str, *, source: bool) -> list[Path]:
    """The files :func:`write_samples` writes for one prompt named ``name``."""
    files = [folder / f"{name}.mp4", folder / f"{name}.gif"]
    return files + ([folder / f"{name}-side-by-side.mp4"] if source else [])
