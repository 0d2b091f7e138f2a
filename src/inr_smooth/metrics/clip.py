"""CLIP metrics: pure functions on embeddings, and the feature extractor that makes them.

Scores are raw cosine similarities in [-1, 1] (papers often print 100 x cosine).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import DEFAULT_CLIP_MODEL
from .inputs import check_clip_name

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "ClipFeatures",
    "clip_frame_allpairs",
    "clip_frame_consistency",
    "clip_text_score",
]


def _unit(x: Tensor) -> Tensor:
    x = torch.as_tensor(x, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _frames(frame_embs: Tensor, least: int) -> Tensor:
    frame_embs = torch.as_tensor(frame_embs)
    if frame_embs.ndim != 2 or frame_embs.shape[0] < least:
        raise ValueError(
            f"expected frame embeddings of shape (f >= {least}, d), got {tuple(frame_embs.shape)}"
        )
    return _unit(frame_embs)


def clip_text_score(text_emb: Tensor, frame_embs: Tensor) -> float:
    """CLIP(T): mean over frames of cos(text, frame). ``text_emb (d,)``, ``frame_embs (f, d)``."""
    frames = _frames(frame_embs, 1)
    text = _unit(text_emb).reshape(-1)
    if text.shape[0] != frames.shape[1]:
        raise ValueError(f"expected a text embedding of size {frames.shape[1]}, got {text.shape}")
    return float((frames @ text).mean())


def clip_frame_consistency(frame_embs: Tensor) -> float:
    """CLIP(F) as in the INR paper: mean cos(frame_i, frame_{i+1}) over consecutive pairs."""
    frames = _frames(frame_embs, 2)
    return float((frames[:-1] * frames[1:]).sum(-1).mean())


def clip_frame_allpairs(frame_embs: Tensor) -> float:
    """The LOVEU-TGVE convention: mean cos(frame_i, frame_j) over all pairs i < j."""
    frames = _frames(frame_embs, 2)
    sims = frames @ frames.T
    i, j = torch.triu_indices(len(frames), len(frames), offset=1)
    return float(sims[i, j].mean())


class ClipFeatures:
    """Text and image embeddings from any transformers CLIP model (hub id or local folder)."""

    def __init__(self, model: str = DEFAULT_CLIP_MODEL, *, device=None, batch_size: int = 16):
        self.name = str(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model, self.processor = _load(self.name)
        self.model = self.model.eval().to(self.device)
        self.batch_size = batch_size

    @torch.no_grad()
    def text(self, prompts: Sequence[str]) -> Tensor:
        """``(n, d)`` float32 text embeddings."""
        inputs = self.processor(text=list(prompts), return_tensors="pt", padding=True,
                                truncation=True)  # fmt: skip
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        return _features(self.model.get_text_features(**inputs)).float().cpu()

    @torch.no_grad()
    def images(self, frames: np.ndarray) -> Tensor:
        """``(f, d)`` float32 embeddings of ``uint8 (f, h, w, 3)`` frames."""
        out = []
        for start in range(0, len(frames), self.batch_size):
            batch = list(frames[start : start + self.batch_size])
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
            embeds = self.model.get_image_features(pixel_values=pixels.to(self.device))
            out.append(_features(embeds).float().cpu())
        return torch.cat(out)


def _load(name: str):
    """``(CLIPModel, CLIPProcessor)`` from a local folder, the hub cache, or the hub."""
    check_clip_name(name)
    path = Path(name).expanduser()
    source = str(path) if path.is_dir() else name
    attempts = [{"local_files_only": True}] if path.is_dir() else [{"local_files_only": True}, {}]
    if not path.is_dir() and not _cached(name) and not _hub_usable():  # before any download
        raise FileNotFoundError(
            f"the CLIP model {name!r} is not in the local Hugging Face cache and the hub "
            "cannot be reached (or HF_HUB_OFFLINE is set): pass --clip-model a local "
            "CLIPModel folder, or --no-clip"
        )
    from transformers import CLIPModel, CLIPProcessor

    error: Exception | None = None
    for kwargs in attempts:  # the hub cache first: no network round trip when it is filled
        try:
            with _quiet():
                return (CLIPModel.from_pretrained(source, **kwargs),
                        CLIPProcessor.from_pretrained(source, **kwargs))  # fmt: skip
        except (OSError, ValueError, TypeError, KeyError) as exc:
            error = exc
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise FileNotFoundError(
        f"could not load the CLIP model {name!r}: {first[:300]} (expected a transformers "
        "CLIPModel folder or hub id; a hub id needs network access or a filled cache: pass "
        "--clip-model a local folder, or --no-clip)"
    ) from None


def _cached(hub_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)


def _hub_usable() -> bool:
    """Whether a download can be tried: not offline, and the hub answers within seconds (one
    connection attempt, instead of minutes of retries)."""
    import os

    from huggingface_hub import constants

    from ..model_info import hub_reachable

    offline = constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "") in ("1", "true")
    return not offline and hub_reachable()


@contextmanager
def _quiet():
    """No "Loading weights" progress bars while the model loads."""
    from transformers.utils import logging

    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.enable_progress_bar()


def _features(output) -> Tensor:
    """transformers returns a tensor (<= 4.x) or an output object with ``pooler_output``."""
    if isinstance(output, Tensor):
        return output
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    raise TypeError(f"unexpected CLIP feature output {type(output).__name__}")
