"""The declared, versioned metric suite of inr-smooth (``inr-smooth eval``).

Published "CLIP(T)" / "CLIP(F)" numbers are not comparable between papers because backbone,
pairing and scale differ; every report of ours carries :data:`METRIC_SUITE` (or
:func:`describe_suite`, with the backbone and flow estimator actually used) with all three.
"""

from __future__ import annotations

import copy
from typing import Any

from .clip import (
    DEFAULT_CLIP_MODEL,
    ClipFeatures,
    clip_frame_allpairs,
    clip_frame_consistency,
    clip_text_score,
)
from .flow import (
    CONSISTENCY,
    DISFlow,
    RaftFlow,
    consistent_mask,
    flow_magnitude,
    flow_metrics,
    warp,
    warp_error,
)

METRIC_SUITE_VERSION = "1"

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
            "definition": "mean |frame_{i+1} - frame_i backward-warped (bilinear, border) by "
            "the flow from i+1 to i| over channels and the pixels passing the "
            f"forward-backward check {_CHECK} (all pixels if none passes)",
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
    "ClipFeatures",
    "DISFlow",
    "RaftFlow",
    "clip_frame_allpairs",
    "clip_frame_consistency",
    "clip_text_score",
    "consistent_mask",
    "describe_suite",
    "flow_magnitude",
    "flow_metrics",
    "warp",
    "warp_error",
]
