"""The declared, versioned metric suite of inr-smooth (``inr-smooth eval``).

Published "CLIP(T)" / "CLIP(F)" numbers are not comparable between papers because backbone,
pairing and scale differ; every report of ours carries :data:`METRIC_SUITE` with all three.
"""

from __future__ import annotations

from .clip import (
    DEFAULT_CLIP_MODEL,
    ClipFeatures,
    clip_frame_allpairs,
    clip_frame_consistency,
    clip_text_score,
)
from .flow import CONSISTENCY, DISFlow, RaftFlow, consistent_mask, flow_magnitude, warp, warp_error

METRIC_SUITE_VERSION = "1"
METRIC_SUITE = {
    "version": METRIC_SUITE_VERSION,
    "clip_text": "mean over frames of cos(CLIP text embedding of the prompt, CLIP image "
    "embedding of the frame); raw cosine in [-1, 1]",
    "clip_frame": "mean cos(CLIP image embeddings) of consecutive frames (i, i+1), as in the "
    "INR paper; raw cosine",
    "clip_frame_allpairs": "mean cos(CLIP image embeddings) over all frame pairs i < j "
    "(LOVEU-TGVE convention); raw cosine",
    "warp_error": "mean |frame_{i+1} - frame_i warped by the flow from i+1 to i|, pixel values "
    "in [0, 1], over pixels passing the forward-backward check "
    f"|f_fw + f_bw|^2 < {CONSISTENCY[0]} (|f_fw|^2 + |f_bw|^2) + {CONSISTENCY[1]}, "
    "averaged over consecutive pairs",
    "flow_magnitude": "mean length in pixels of the optical flow between consecutive frames",
    "clip_backbone_default": DEFAULT_CLIP_MODEL,
    "flow_default": "dis (OpenCV DIS, medium preset); raft = torchvision RAFT large",
}

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
    "flow_magnitude",
    "warp",
    "warp_error",
]
