"""The configuration of one-shot tuning (``inr-smooth tune``), checked without torch.

:class:`TuneConfig` holds what a run asks for; fields left ``None`` take the model's
recommended value, its native size, or Tune-A-Video's default (:data:`TUNE_DEFAULTS`), when
:func:`prepare_tune` resolves it. Every value is checked there, before any model loads or any
output is written.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from ..model_info import ModelInfo, describe_model
from .controlvideo_config import CONTROLVIDEO_SMOOTH_WEIGHT, check_control_config, host_defaults
from .settings import check_all, finite, or_unset, resolve_model_fields, seed_ok

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_SMOOTH_WEIGHT",
    "RESUME_MAY_CHANGE",
    "SMOOTHING_MODES",
    "TUNE_DEFAULTS",
    "PreparedTune",
    "Smoothing",
    "TuneConfig",
    "prepare_tune",
]

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
Smoothing = Literal["none", "smoothvideo", "smoothvideo-simple", "inr"]
SMOOTHING_MODES = ("none", "smoothvideo", "smoothvideo-simple", "inr")
# the papers' weights: INR 2.0 on Tune-A-Video; SmoothVideo 0.2 (with lambda_factor 1000)
DEFAULT_SMOOTH_WEIGHT = {"none": 0.0, "smoothvideo": 0.2, "smoothvideo-simple": 0.2, "inr": 2.0}
# Tune-A-Video's `trainable_modules` (attn1.to_q, attn2.to_q, attn_temp) plus the temporal
# attention's LayerNorm; models.DEFAULT_TRAINABLE is this tuple
DEFAULT_TRAINABLE = ("attn1.to_q", "attn2.to_q", "temporal.attn", "temporal.norm")
# model-dependent fields and Tune-A-Video's values for them (size: the model's native size)
TUNE_DEFAULTS = {
    "frames": 24,
    "size": None,
    "stride": 2,
    "steps": 500,
    "learning_rate": 3e-5,
    "inference_steps": 50,
    "guidance_scale": 12.5,
}
# what --resume may change: generation and bookkeeping, not what the tuned weights depend on
RESUME_MAY_CHANGE = frozenset(
    {"output", "edit_prompts", "steps", "checkpoint_every", "validate_every", "inference_steps",
     "guidance_scale", "fps"}
)  # fmt: skip


@dataclass(frozen=True)
class TuneConfig:
    """Everything a tuning run needs; YAML presets in ``configs/tune/`` use these keys."""

    video: str = ""  # source video file or folder of frames
    prompt: str = ""  # caption of the source video
    edit_prompts: tuple[str, ...] = ()  # one generated video each after tuning
    model: str = DEFAULT_MODEL  # SD 1.x hub id, local diffusers folder, or "mini"
    output: str = "outputs/tune"  # run folder
    # smoothing (spec §2, §3)
    smoothing: Smoothing = "inr"
    smooth_weight: float | None = None  # lambda; None: 2.0 for inr, 0.2 for smoothvideo
    alpha: float = 0.5  # INR weight of the last-to-first relation
    beta: float = 0.5  # INR weight of the first-to-last relation
    chain: Literal["adjacent", "anchored"] = "adjacent"
    detach_anchor: bool = False
    lambda_factor: float = 1000.0  # SmoothVideo's factor
    # frames (Tune-A-Video: n_sample_frames 24, sample_start_idx 0, sample_frame_rate 2)
    frames: int | None = None  # None: the model's recommendation, else 24
    size: int | None = None  # None: the model's native size (SD 1.x: 512, mini: 64)
    start: int = 0
    stride: int | None = None  # take every N-th frame; None: the model's, else 2
    resize: Literal["exact", "crop"] = "exact"  # exact: Tune-A-Video's (no crop)
    latent_sampling: Literal["posterior", "mean"] = "posterior"  # posterior: a VAE sample a step
    # tuning
    steps: int | None = None  # None: the model's recommendation, else 500
    learning_rate: float | None = None  # None: the model's recommendation, else 3e-5
    trainable: tuple[str, ...] = DEFAULT_TRAINABLE
    attention: Literal["sparse_causal", "first_frame", "keyframe", "full", "none"] = "sparse_causal"
    group_norm: Literal["per_frame", "video"] = "video"  # Tune-A-Video pools over frames
    gradient_checkpointing: bool = True
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"  # auto: bf16/fp16 on GPU
    use_8bit_adam: bool = False
    checkpoint_every: int = 100  # steps; 0: only on Ctrl-C
    validate_every: int = 0  # steps; 0: no validation samples
    # generation
    guidance_scale: float | None = None  # None: the model's recommendation, else 12.5
    inference_steps: int | None = None  # None: the model's recommendation, else 50
    fps: float = 8.0
    seed: int = 33
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # ControlVideo (pipelines/controlvideo.py): tuning conditioned on ControlNets, one control
    # video each, with ControlVideo's defaults where nothing is set. No ControlNets: Tune-A-Video.
    controlnets: tuple[str, ...] = ()  # hub ids / diffusers folders, or mini-canny, mini-depth
    controls: tuple[str, ...] = ()  # per ControlNet: canny | hed | depth | pose | maps path
    control_scales: tuple[float, ...] = ()  # per ControlNet, or one for all (empty: 1.0)
    control_guidance_start: float = 0.0  # ControlNets act from this fraction of the steps ...
    control_guidance_end: float = 1.0  # ... to this one
    canny_thresholds: tuple[int, ...] = (100, 100)  # ControlVideo's

    def __post_init__(self) -> None:
        if self.smoothing not in SMOOTHING_MODES:
            raise ValueError(f"smoothing must be one of {SMOOTHING_MODES}, got {self.smoothing!r}")
        frames, size, steps, inference, lr, guidance = (
            or_unset(self.frames, 2), or_unset(self.size, 8), or_unset(self.steps, 1),
            or_unset(self.inference_steps, 1), or_unset(self.learning_rate, 1.0),
            or_unset(self.guidance_scale, 1.0),
        )  # unset fields pass here; they are checked once resolved  # fmt: skip
        check_all((
            (frames >= 2, f"frames must be at least 2, got {frames}"),
            (size >= 8 and size % 8 == 0, f"size must be a positive multiple of 8, got {size}"),
            (steps >= 1, f"steps must be at least 1, got {steps}"),
            (or_unset(self.stride, 1) >= 1 and self.start >= 0,
             f"expected start >= 0 and stride >= 1, got start={self.start}, stride={self.stride}"),
            (1 <= inference <= 1000, f"inference_steps must be in 1..1000, got {inference}"),
            (finite(lr) and lr > 0, f"learning_rate must be a finite number > 0, got {lr}"),
            (finite(self.smooth_weight) and (self.smooth_weight or 0) >= 0,
             f"smooth_weight must be a finite number >= 0, got {self.smooth_weight}"),
            (finite(self.alpha) and finite(self.beta) and self.alpha >= 0 and self.beta >= 0
             and self.alpha + self.beta > 0,
             f"expected alpha, beta >= 0 with a positive sum, got {self.alpha}, {self.beta}"),
            (finite(self.lambda_factor) and self.lambda_factor > 0,
             f"lambda_factor must be a finite number > 0, got {self.lambda_factor}"),
            (finite(guidance) and guidance >= 1,
             f"guidance_scale must be a finite number >= 1 (1: no guidance), got {guidance}"),
            (finite(self.fps) and self.fps > 0, f"fps must be a finite number > 0, got {self.fps}"),
            (self.checkpoint_every >= 0 and self.validate_every >= 0,
             "checkpoint_every and validate_every must be >= 0"),
            (seed_ok(self.seed), f"seed must be an integer in [0, 2**63), got {self.seed}"),
        ))  # fmt: skip
        check_control_config(self)

    @property
    def weight(self) -> float:
        """The smoothing weight actually used (ControlVideo's INR default: the paper's 0.2)."""
        if self.smooth_weight is not None:
            return self.smooth_weight
        default = DEFAULT_SMOOTH_WEIGHT[self.smoothing]
        if self.controlnets:
            return CONTROLVIDEO_SMOOTH_WEIGHT.get(self.smoothing, default)
        return default


@dataclass(frozen=True)
class PreparedTune:
    """A resolved and checked config, with the model's description and each value's source."""

    config: TuneConfig
    model: ModelInfo
    sources: dict[str, str] = field(default_factory=dict)


def prepare_tune(config: TuneConfig, sources: dict[str, str] | None = None) -> PreparedTune:
    """Resolve the model-dependent fields and check everything that needs no model weights."""
    missing = [f"--{k}" for k in ("video", "prompt") if not getattr(config, k)]
    if missing:
        raise ValueError(f"{' and '.join(missing)} required (or set them in --config)")
    if config.use_8bit_adam and importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("use_8bit_adam needs bitsandbytes: pip install bitsandbytes")
    info = describe_model(config.model)
    sources = dict(sources or {})
    builtin = dict(TUNE_DEFAULTS)
    if config.controlnets:  # ControlVideo's defaults where the user and the model say nothing
        host, changes = host_defaults(config, sources, info.recommended_for("tune"))
        builtin.update(host)
        config = replace(config, **changes)
        sources.update(dict.fromkeys(changes, "ControlVideo default"))
    config, sources = resolve_model_fields(config, info, "tune", builtin, sources or None)
    if config.controlnets:
        sources.update({k: "ControlVideo default" for k, v in sources.items()
                        if v == "default" and k in host})  # fmt: skip
    if config.smooth_weight is None:
        host_name = "ControlVideo" if config.controlnets else config.smoothing
        config = replace(config, smooth_weight=config.weight)
        sources["smooth_weight"] = f"default for {host_name}"
    if config.size % info.size_multiple:
        multiple = info.size_multiple
        raise ValueError(
            f"size must be a multiple of {multiple} px for {config.model} (its VAE and UNet "
            f"downsample by {multiple} in all), got {config.size}: use "
            f"{max(multiple, config.size // multiple * multiple)} or "
            f"{(config.size // multiple + 1) * multiple}"
        )
    if Path(config.output).expanduser().resolve() == Path.cwd().resolve():
        raise ValueError("output must be a run folder of its own, not the working folder")
    return PreparedTune(config, info, sources)
