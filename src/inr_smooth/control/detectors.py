"""Condition maps computed from the source frames: Canny built in, the others optional.

* ``canny`` -- OpenCV's ``cv2.Canny(frame, 100, 100)`` on each RGB frame, as ControlVideo
  computes it (its ``annotator/canny``: thresholds 100/100), white edges on black, 3 channels.
* ``hed``, ``depth``, ``pose`` -- the ControlNet 1.0 annotators (HED, MiDaS, OpenPose) through
  the optional ``controlnet_aux`` package (``pip install 'inr-smooth[detectors]'``) with weights
  the user has: a local folder named by ``INR_SMOOTH_ANNOTATORS`` (holding lllyasviel's
  ``Annotators`` files), or ``lllyasviel/Annotators`` in the Hugging Face cache. Without them the
  error is one line saying to pass precomputed maps instead.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["DETECTORS", "DetectorError", "canny", "detect"]

DETECTORS = ("canny", "hed", "depth", "pose")
CANNY_THRESHOLDS = (100, 100)  # ControlVideo's configs/default/canny.yaml
_AUX = {"hed": "HEDdetector", "depth": "MidasDetector", "pose": "OpenposeDetector"}
ANNOTATORS_ENV = "INR_SMOOTH_ANNOTATORS"


class DetectorError(ValueError):
    """A condition that cannot be computed here (one line: what to do instead)."""


def canny(frames: np.ndarray, low: int = 100, high: int = 100) -> np.ndarray:
    """``uint8 (f, h, w, 3)`` RGB frames -> Canny edge maps ``uint8 (f, h, w, 3)``."""
    import cv2

    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (f, h, w, 3), got {frames.dtype} {frames.shape}")
    edges = np.stack([cv2.Canny(np.ascontiguousarray(f), low, high) for f in frames])
    return np.repeat(edges[..., None], 3, axis=-1)


def _missing(kind: str, why: str) -> DetectorError:
    return DetectorError(
        f"--control {kind} needs the {kind} detector, {why}; or pass precomputed maps: "
        f"--control PATH (a video or a folder of numbered images, one map per frame)"
    )


def _aux_detector(kind: str):
    try:
        import controlnet_aux
    except ImportError:
        raise _missing(kind, "which comes with the optional extra: pip install "
                       "'inr-smooth[detectors]'") from None  # fmt: skip
    source = os.environ.get(ANNOTATORS_ENV) or "lllyasviel/Annotators"
    try:
        return getattr(controlnet_aux, _AUX[kind]).from_pretrained(source)
    except Exception as exc:  # hub errors, missing files, version mismatches
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise _missing(kind, f"whose weights were not found in {source} ({first}; set "
                       f"{ANNOTATORS_ENV} to a folder holding them)") from None  # fmt: skip


def detect(kind: str, frames: np.ndarray, *, canny_thresholds=CANNY_THRESHOLDS) -> np.ndarray:
    """The ``kind`` maps of ``uint8 (f, h, w, 3)`` frames, at the frames' size."""
    if kind not in DETECTORS:
        raise DetectorError(f"--control must be a path or one of {DETECTORS}, got {kind!r}")
    if kind == "canny":
        return canny(frames, *canny_thresholds)
    from PIL import Image

    detector = _aux_detector(kind)
    h, w = frames.shape[1:3]
    maps = []
    for frame in frames:
        out = detector(Image.fromarray(frame))
        maps.append(np.asarray(out.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)))
    return np.stack(maps)
