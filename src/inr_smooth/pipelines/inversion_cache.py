"""Inverted source videos cached on disk, so that several edits of one video share one inversion.

A cache entry is one safetensors file, ``<cache_dir>/inversion-<key>.safetensors``, holding the
latents editing needs and the attention store (:mod:`.attention_store`). ``key`` is a SHA-256 of
everything the inversion depends on (:func:`cache_key`): the decoded frames, the source prompt,
the model (a hub id, or a folder's path with the sizes and times of its UNet and VAE files), the
dtype, the number of steps, the attention mode, the fusion plan (layers, steps, blend tokens)
and, only where INR enters the inversion itself (``apply_at="every_step"``), the INR settings.
With ``"final_step"`` INR changes the last step alone, which is redone from the cached
penultimate latent and last noise prediction: edit prompt, guidance, gamma, noise source and
seed can all change without a new inversion. Files are written under a temporary name and
renamed; a file whose recorded settings differ from the asked ones is a miss.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from torch import Tensor

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

CACHE_VERSION = 1
_MATERIAL = "inr_smooth_inversion"  # metadata entry holding the key material as JSON


@dataclass(eq=False)
class InvertedVideo:
    """What editing needs from the DDIM inversion of a source video."""

    source_latents: Tensor  # z_0, (b, c, f, h, w) float32
    penultimate_latents: Tensor  # z_(K-1), the input of the last inversion step
    final_noise_pred: Tensor  # eps_inv_K, the noise predicted at the last step
    final_latents: Tensor  # z_K; includes INR when apply_at == "every_step"
    store: AttentionStore | None = None  # stored attention for fusion, if any

    def tensors(self) -> dict[str, Tensor]:
        return {name: getattr(self, name).float() for name in _LATENTS}


_LATENTS = ("source_latents", "penultimate_latents", "final_noise_pred", "final_latents")


def frames_digest(frames: np.ndarray) -> str:
    """SHA-256 of decoded ``uint8 (f, h, w, 3)`` frames and their shape."""
    digest = hashlib.sha256(str(frames.shape).encode())
    digest.update(np.ascontiguousarray(frames).tobytes())
    return digest.hexdigest()


def model_identity(model: str) -> dict:
    """A hub id as given; a local folder as its path with the size and mtime of its UNet and
    VAE files, so that a retrained model in the same folder misses the cache."""
    folder = Path(model).expanduser()
    if not folder.is_dir():
        return {"model": model}
    files = sorted(p for sub in ("unet", "vae") for p in (folder / sub).glob("*") if p.is_file())
    stats = [[str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return {"model": str(folder.resolve()), "files": stats}


def cache_key(material: dict) -> str:
    """SHA-256 of the key material (JSON with sorted keys)."""
    text = json.dumps({"version": CACHE_VERSION, **material}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir).expanduser() / f"inversion-{key[:32]}.safetensors"


def save_inversion(path: Path, inverted: InvertedVideo, material: dict) -> Path:
    """Write latents, attention store and key material as one safetensors file, atomically."""
    store = inverted.store or AttentionStore("device")
    text = json.dumps({"version": CACHE_VERSION, **material}, sort_keys=True, default=str)
    return store.save(path, inverted.tensors(), {_MATERIAL: text})


def load_inversion(path: Path, material: dict, device=None) -> InvertedVideo | None:
    """The cached inversion at ``path``, or None if it is missing, unreadable or was made with
    other settings. Latents go to ``device``; attention entries stay on disk until used."""
    if not path.is_file():
        return None
    try:
        store, tensors, metadata = AttentionStore.open(path)
    except (OSError, SafetensorError):
        return None
    text = json.dumps({"version": CACHE_VERSION, **material}, sort_keys=True, default=str)
    if metadata.get(_MATERIAL) != text or set(tensors) != set(_LATENTS):
        store.close()
        return None
    latents = {name: tensors[name].to(device).clone() for name in _LATENTS}
    return InvertedVideo(**latents, store=store if len(store) else None)
