"""The declared, versioned metric suite of inr-smooth (``inr-smooth eval``).

Published "CLIP(T)" / "CLIP(F)" numbers are not comparable between papers because backbone,
pairing and scale differ; every report of ours carries :data:`METRIC_SUITE` (or
:func:`describe_suite`, with the backbone and flow estimator actually used) with all three.
"""

from __future__ import annotations

import copy
import importlib
from typing import Any

# the metric functions load on first use (module __getattr__ below): the suite's definitions
# are importable without torch, for commands that check their arguments first
_LAZY = {
    "ClipFeatures": "clip",
    "clip_frame_allpairs": "clip",
    "clip_frame_consistency": "clip",
    "clip_text_score": "clip",
    "DISFlow": "flow",
    "consistent_mask": "flow",
    "flow_magnitude": "flow",
    "flow_metrics": "flow",
    "in_frame_mask": "flow",
    "kept_pixels": "flow",
    "warp": "flow",
    "warp_error": "flow",
    "RaftFlow": "raft",
}
DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"
# forward-backward check (Sundaram et al. 2010; Ruder et al. 2016): a pixel is kept when
# |f_fw + f_bw(p + f_fw)|^2 < A (|f_fw|^2 + |f_bw(p + f_fw)|^2) + B
CONSISTENCY = (0.01, 0.5)

# v2: the warp error leaves out pixels whose flow target lies outside the frame (v1 compared
# them with the clamped border: a perfect camera pan scored 0.032 instead of 0)
METRIC_SUITE_VERSION = "2"

_COSINE = "raw cosine similarity in [-1, 1], higher is better (papers often print 100 x)"
_CLIP = f"CLIP image/text projections of a transformers CLIPModel (default {DEFAULT_CLIP_MODEL})"
_FLOW = "optical flow: torchvision RAFT large (default) or OpenCV DIS medium (--flow dis)"
_CHECK = (
    f"|f_fw + f_bw(p + f_fw)|^2 < {CONSISTENCY[0]} (|f_fw|^2 + |f_bw(p + f_fw)|^2) "
    f"+ {CONSISTENCY[1]}"
)

METRIC_SUITE: dict[str, Any] = {
    "version": METRIC_SUITE_VERSION,
    "metrics": {
        "clip_text": {
            "definition": "mean over frames of cos(text embedding of the prompt, image "
            "embedding of the frame) - CLIP(T)",
            "backbone": _CLIP,
            "pairing": "prompt x each frame",
            "scale": _COSINE,
        },
        "clip_frame": {
            "definition": "mean cos of the image embeddings of frames i and i+1 - CLIP(F) as "
            "in the INR paper",
            "backbone": _CLIP,
            "pairing": "consecutive frames (i, i+1), f - 1 pairs",
            "scale": _COSINE,
        },
        "clip_frame_allpairs": {
            "definition": "mean cos of the image embeddings of frames i and j (LOVEU-TGVE "
            "convention)",
            "backbone": _CLIP,
            "pairing": "all pairs i < j, f (f - 1) / 2 pairs",
            "scale": _COSINE,
        },
        "warp_error": {
            "definition": "mean |frame_{i+1} - frame_i backward-warped (bilinear) by the flow "
            "from i+1 to i| over channels and the pixels p of frame i+1 whose flow target "
            "p + f_fw(p) lies inside frame i (pixels whose flow leaves the frame are left out, "
            "new in v2) and that pass the forward-backward check "
            f"{_CHECK} (all pixels if none is kept, e.g. at a cut)",
            "backbone": _FLOW,
            "pairing": "consecutive frames (i, i+1), averaged over the f - 1 pairs",
            "scale": "pixel values in [0, 1], lower is smoother",
        },
        "flow_magnitude": {
            "definition": "mean length of the flow vectors from frame i to i+1 over pixels",
            "backbone": _FLOW,
            "pairing": "consecutive frames (i, i+1), averaged over the f - 1 pairs",
            "scale": "pixels at the evaluated resolution; near 0 = frozen motion",
        },
    },
    "consistency_check": {"a": CONSISTENCY[0], "b": CONSISTENCY[1]},
    "clip_backbone_default": DEFAULT_CLIP_MODEL,
    "flow_default": "raft (torchvision RAFT large); dis = OpenCV DIS, medium preset",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def describe_suite(clip_backbone: str | None, flow_estimator: str) -> dict[str, Any]:
    """:data:`METRIC_SUITE` with the backbone and flow estimator of one run filled in
    (``clip_backbone=None``: CLIP metrics skipped)."""
    suite = copy.deepcopy(METRIC_SUITE)
    for name, entry in suite["metrics"].items():
        if name.startswith("clip_"):
            entry["backbone"] = clip_backbone or "skipped (--no-clip)"
        else:
            entry["backbone"] = flow_estimator
    return suite


__all__ = [
    "CONSISTENCY",
    "DEFAULT_CLIP_MODEL",
    "METRIC_SUITE",
    "METRIC_SUITE_VERSION",
    "describe_suite",
    *_LAZY,
]
