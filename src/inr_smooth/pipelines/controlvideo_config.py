"""ControlVideo's settings, checked without torch: its defaults and the ControlNet fields.

ControlVideo (thu-ml/controlvideo) tunes with other defaults than Tune-A-Video
(:data:`CONTROLVIDEO_DEFAULTS`); :func:`~inr_smooth.pipelines.tune_config.prepare_tune` applies
them to a config with ControlNets wherever the user set nothing, below what the model folder
recommends (:func:`host_defaults`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = [
    "CONTROLVIDEO_DEFAULTS",
    "CONTROLVIDEO_SMOOTH_WEIGHT",
    "check_control_config",
    "controlvideo_config",
    "host_defaults",
    "read_controls",
    "scales_of",
]

# TuneConfig fields that ControlVideo sets otherwise than Tune-A-Video (its configs/default/*.yaml
# and main.py: 8 frames, 300 steps, seed 0, guidance 12, key-frame attention; its ResnetBlock3D
# GroupNorm pools over frames). learning_rate (3e-5), size (512), inference_steps (50) and the
# gradient clipping (1.0) are the same as Tune-A-Video's.
CONTROLVIDEO_DEFAULTS = {
    "frames": 8,
    "steps": 300,
    "trainable": ("attn1.to_out", "temporal.attn", "temporal.conv"),  # CONTROLVIDEO_TRAINABLE
    "attention": "keyframe",
    "group_norm": "video",
    "guidance_scale": 12.0,
    "seed": 0,
}
CONTROLVIDEO_SMOOTH_WEIGHT = {"inr": 0.2}  # the INR paper's lambda on ControlVideo


def controlvideo_config(explicit: set[str] | None = None, **fields):
    """A :class:`~inr_smooth.pipelines.tune.TuneConfig` with ControlVideo's defaults under
    ``fields``. ``stride``, unless given, spreads the frames over a video file as ControlVideo
    does (``length // frames``; 1 for a folder of frames)."""
    from ..config import config_from_dict
    from .tune_config import TuneConfig

    explicit = set(fields) if explicit is None else explicit
    values = {k: v for k, v in CONTROLVIDEO_DEFAULTS.items() if k not in explicit}
    values.update(fields)
    if "stride" not in explicit and values.get("video"):
        values["stride"] = _spread_stride(values["video"], values.get("frames", 8),
                                          values.get("start", 0))  # fmt: skip
    return config_from_dict(TuneConfig, values)  # lists (YAML) become tuples


def host_defaults(config, sources: dict[str, str], recommended: dict) -> tuple[dict, dict]:
    """For a config with ControlNets: ``(builtin, changes)``. ``builtin`` are ControlVideo's
    values of the model-dependent fields (below the model folder's recommendations, above
    Tune-A-Video's); ``changes`` the other fields the user left at Tune-A-Video's default
    (key-frame attention, the trainable set, ...), and ``stride`` spread over the clip."""
    import dataclasses

    from .tune_config import TUNE_DEFAULTS

    fields = {f.name: f.default for f in dataclasses.fields(config)}
    builtin = {k: v for k, v in CONTROLVIDEO_DEFAULTS.items() if k in TUNE_DEFAULTS}
    changes = {k: v for k, v in CONTROLVIDEO_DEFAULTS.items()
               if k not in TUNE_DEFAULTS and k not in sources
               and getattr(config, k) == fields[k]}  # fmt: skip
    if config.stride is None and "stride" not in recommended:
        frames = config.frames or recommended.get("frames") or builtin["frames"]
        builtin["stride"] = _spread_stride(config.video, frames, config.start)
    return builtin, changes


def _spread_stride(video: str, frames: int, start: int) -> int:
    from ..video_io import VideoError, probe_video

    path = Path(video).expanduser()
    if path.is_dir() or not path.exists():
        return 1
    try:
        count = probe_video(path)[0]
    except VideoError:
        return 1  # reading the video later says what is wrong with it
    return max(1, (count - start) // max(frames, 1))


def scales_of(scales: tuple[float, ...], n: int) -> list[float]:
    """Empty: 1.0 each; one value: for every net; else one per net."""
    if not scales:
        return [1.0] * n
    if len(scales) == 1:
        return [float(scales[0])] * n
    if len(scales) != n:
        raise ValueError(
            f"expected one control scale, or one per ControlNet ({n}), got {len(scales)}"
        )
    return [float(s) for s in scales]


def check_control_config(config) -> None:
    """The ControlNet fields of a TuneConfig (one line each); no ControlNets: nothing to check."""
    n = len(config.controlnets)
    if not n:
        if config.controls:
            raise ValueError("--control needs --controlnet (one ControlNet per control)")
        return
    if len(config.controls) != n:
        raise ValueError(
            f"expected one --control per --controlnet ({n}), got {len(config.controls)}"
        )
    scales = scales_of(config.control_scales, n)
    if not all(math.isfinite(s) and s >= 0 for s in scales):
        raise ValueError(f"control scales must be finite and >= 0, got {scales}")
    start, end = config.control_guidance_start, config.control_guidance_end
    if not (math.isfinite(start) and math.isfinite(end) and 0.0 <= start < end <= 1.0):
        raise ValueError(
            f"expected 0 <= control guidance start < end <= 1, got start={start}, end={end}"
        )
    if len(config.canny_thresholds) != 2 or min(config.canny_thresholds) < 0:
        raise ValueError(f"expected two Canny thresholds >= 0, got {config.canny_thresholds}")


def read_controls(config, frames: np.ndarray) -> list[np.ndarray] | None:
    """Check the ControlNet fields and compute or read each ControlNet's maps for the tuned
    ``frames`` (before any model loads); None without ControlNets."""
    from ..control import control_maps

    check_control_config(config)
    if not config.controlnets:
        return None
    return [
        control_maps(
            control, frames, source=config.video, start=config.start, stride=config.stride,
            canny_thresholds=tuple(config.canny_thresholds),
        )
        for control in config.controls
    ]  # fmt: skip
