"""Inverted source videos cached on disk, so that several edits of one video share one inversion.

A cache entry is one safetensors file, ``<cache_dir>/inversion-<key>.safetensors``, holding the
latents editing needs, the attention store (:mod:`.attention_store`) and an editor's extra
float32 tensors (Video-P2P's null-text embeddings, :mod:`.video_p2p`). ``key`` is a SHA-256 of
everything the inversion depends on (:func:`cache_key`): the decoded frames, the source prompt,
the model (a hub id, or a folder's path with every file of every component: configs and
tokenizer by content, weights by size and time), the package versions, the dtype, the number of
steps, the attention mode, the fusion plan (layers, steps, blend tokens) and, only where INR
enters the inversion itself (``apply_at="every_step"``), the INR settings.
With ``"final_step"`` INR changes the last step alone, which is redone from the cached
penultimate latent and last noise prediction: edit prompt, guidance, gamma, noise source and
seed can all change without a new inversion. Files are written under a temporary name and
renamed, with their SHA-256 beside them (``.sha256``); a file whose recorded settings differ
from the asked ones is a miss, and one whose checksum does not match (or that cannot be read,
or holds non-finite latents) is recomputed with a warning that names it.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from torch import Tensor

from ..outputs import write_text_atomic
from ..video_io import frames_digest
from .attention_store import AttentionStore

__all__ = [
    "CACHE_VERSION",
    "InvertedVideo",
    "cache_key",
    "cache_path",
    "frames_digest",
    "load_inversion",
    "model_identity",
    "save_inversion",
]

CACHE_VERSION = 2
_MATERIAL = "inr_smooth_inversion"  # metadata entry holding the key material as JSON


@dataclass(eq=False)
class InvertedVideo:
    """What editing needs from the DDIM inversion of a source video."""

    source_latents: Tensor  # z_0, (b, c, f, h, w) float32
    penultimate_latents: Tensor  # z_(K-1), the input of the last inversion step
    final_noise_pred: Tensor  # eps_inv_K, the noise predicted at the last step
    final_latents: Tensor  # z_K; includes INR when apply_at == "every_step"
    store: AttentionStore | None = None  # stored attention for fusion, if any
    # further float32 tensors an editor keeps with the inversion (Video-P2P: the null-text
    # embeddings), saved and loaded bit for bit
    extras: dict[str, Tensor] = field(default_factory=dict)

    def tensors(self) -> dict[str, Tensor]:
        latents = {name: getattr(self, name).float() for name in _LATENTS}
        clash = sorted(set(self.extras) & set(latents))
        if clash:
            raise ValueError(f"extra tensors must not be named like the latents, got {clash}")
        return {**latents, **{name: t.float() for name, t in self.extras.items()}}


_LATENTS = ("source_latents", "penultimate_latents", "final_noise_pred", "final_latents")


_SMALL_FILE = 4 * 2**20  # configs, tokenizer files: hashed; weights: size and mtime


def _file_identity(path: Path, folder: Path) -> list:
    stat = path.stat()
    entry = [str(path.relative_to(folder)), stat.st_size]
    if stat.st_size <= _SMALL_FILE:
        entry.append(hashlib.sha256(path.read_bytes()).hexdigest())
    else:
        entry.append(stat.st_mtime_ns)
    return entry


def model_identity(model: str) -> dict:
    """A hub id as given; a local folder (a cached hub snapshot included) as its path and
    every file of every component: small files (configs, tokenizer, scheduler) by content,
    weights by size and modification time, so that any change to the model misses the cache.
    Package versions are part of it too: another torch or diffusers may compute otherwise."""
    import diffusers
    import torch
    import transformers

    from .. import __version__

    versions = {"inr_smooth": __version__, "torch": torch.__version__,
                "diffusers": diffusers.__version__, "transformers": transformers.__version__}
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return {"model": model, "versions": versions}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {"model": str(folder.resolve()), "versions": versions,
            "files": [_file_identity(p, folder) for p in files]}  # fmt: skip


def cache_key(material: dict) -> str:
    """SHA-256 of the key material (JSON with sorted keys)."""
    text = json.dumps({"version": CACHE_VERSION, **material}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir).expanduser() / f"inversion-{key[:32]}.safetensors"


def _digest_path(path: Path) -> Path:
    return path.with_suffix(".sha256")


def save_inversion(path: Path, inverted: InvertedVideo, material: dict) -> Path:
    """Write latents, attention store and key material as one safetensors file, atomically,
    and its SHA-256 beside it (``.sha256``), checked when it is read back."""
    store = inverted.store or AttentionStore("device")
    text = json.dumps({"version": CACHE_VERSION, **material}, sort_keys=True, default=str)
    digest = store.save(path, inverted.tensors(), {_MATERIAL: text})
    write_text_atomic(_digest_path(path), digest + "\n")
    return path


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _corrupt(path: Path, why: str) -> None:
    warnings.warn(f"the inversion cache file {path} is {why}: inverting again", stacklevel=3)


def load_inversion(path: Path, material: dict, device=None) -> InvertedVideo | None:
    """The cached inversion at ``path``, or None if it is missing or was made with other
    settings. A file whose checksum does not match, that cannot be read or holds non-finite
    latents is None too, with a warning that names it (it is then recomputed and replaced).
    Latents go to ``device``; attention entries stay on disk until used."""
    if not path.is_file():
        return None
    digest_file = _digest_path(path)
    if not digest_file.is_file():
        _corrupt(path, "incomplete (no checksum file)")
        return None
    if _file_digest(path) != digest_file.read_text().strip():
        _corrupt(path, "damaged (checksum mismatch)")
        return None
    try:
        store, tensors, metadata = AttentionStore.open(path)
    except (OSError, SafetensorError) as exc:
        _corrupt(path, f"unreadable ({type(exc).__name__})")
        return None
    text = json.dumps({"version": CACHE_VERSION, **material}, sort_keys=True, default=str)
    if metadata.get(_MATERIAL) != text or not set(_LATENTS) <= set(tensors):
        store.close()
        return None
    if not all(bool(torch.isfinite(tensor).all()) for tensor in tensors.values()):
        store.close()
        _corrupt(path, "holding NaN or infinite latents")
        return None
    latents = {name: tensors[name].to(device).clone() for name in _LATENTS}
    extras = {name: t.to(device).clone() for name, t in tensors.items() if name not in _LATENTS}
    if not len(store):
        store.close()
        store = None
    return InvertedVideo(**latents, store=store, extras=extras)
