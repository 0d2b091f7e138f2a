"""The configuration of training-free editing (``inr-smooth edit``), checked without torch.

Fields left ``None`` take the model's recommended value, its native size, or the default of
:data:`EDIT_DEFAULTS` when :func:`prepare_edit` resolves them; everything is checked there,
before any model loads or any output is written.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..model_info import ModelInfo, describe_model
from ..outputs import OutputError, check_output_dir, folder_is_empty
from .p2p_words import check_control_fields
from .settings import check_all, finite, or_unset, resolve_model_fields, seed_ok
from .tune_config import DEFAULT_MODEL
from .video_p2p_config import check_editor_fields

__all__ = [
    "EDIT_DEFAULTS",
    "EditConfig",
    "PreparedEdit",
    "check_output",
    "prepare_edit",
    "read_source",
    "usable_cache_dir",
]

# model-dependent fields and their defaults (size: the model's native size)
EDIT_DEFAULTS = {"frames": 8, "size": None, "inference_steps": 50, "guidance_scale": 7.5}


@dataclass(frozen=True)
class EditConfig:
    """Everything an edit needs; YAML presets in ``configs/edit/`` use these keys."""

    video: str = ""  # source video file or folder of frames
    source_prompt: str = ""  # caption of the source video: the inversion prompt
    prompt: str = ""  # the edit prompt
    model: str = DEFAULT_MODEL  # SD 1.x hub id, local diffusers folder, or "mini"
    output: str = "outputs/edit"  # run folder; must not exist or be empty
    # INR(TF) inversion noise (spec §4)
    inversion_weight: float = 1.0  # gamma; 0 = plain DDIM inversion (paper: 1.0 with FateZero)
    apply_at: Literal["final_step", "every_step"] = "final_step"
    noise_source: Literal["gaussian", "implied"] = "gaussian"
    alpha: float = 0.5  # weight of the last -> first chain
    beta: float = 0.5  # weight of the first -> last chain
    chain: Literal["adjacent", "anchored"] = "adjacent"
    # frames
    frames: int | None = None  # None: the model's recommendation, else 8
    size: int | None = None  # frame side in pixels; None: the model's native size
    start: int = 0
    stride: int = 1
    # sampling
    inference_steps: int | None = None  # DDIM steps each way; None: the model's, else 50
    guidance_scale: float | None = None  # None: the model's recommendation, else 7.5
    attention: Literal["sparse_causal", "middle", "full", "first_frame", "keyframe", "none"] = (
        "sparse_causal"  # FateZero's default: first + previous frame; "middle": its style configs
    )
    # attention fusion (FateZero)
    self_replace: float = 0.5  # fraction of sampling steps that use the source's self-attention
    blend_words: tuple[str, ...] = ()  # source-prompt words whose region follows the edit
    blend_threshold: float = 0.3  # mask = scaled cross-attention of the words > this
    fusion_min_downsample: int = 2  # fuse layers at least this many times smaller than the latent
    attention_store: Literal["auto", "device", "disk"] = "auto"  # where stored attention lives
    cache_dir: str | None = None  # inversion cache folder; None: no cache
    # prompt-to-prompt control of cross-attention (FateZero's p2p_config; see pipelines/fatezero.py)
    cross_replace: float | dict = 0.8  # share of sampling steps using the source's cross-attention
    # maps (FateZero's cross_replace_steps), or {default: f, WORD: [start, end]}; 0: off
    controller: Literal["auto", "replace", "refine"] = "auto"  # auto: word swap iff as many words
    reweight: dict = field(default_factory=dict)  # {edit-prompt word: scale} (FateZero's eq_params)
    cross_frame_min_channels: int = 0  # narrower blocks attend per frame (its least_sc_channel)
    # the editor: FateZero's (above), or Video-P2P's (pipelines/video_p2p.py: T2S weights,
    # null-text inversion, decoupled guidance; its defaults where nothing is set, see
    # pipelines/video_p2p_config.py)
    editor: Literal["fatezero", "video-p2p"] = "fatezero"
    weights: str | None = None  # video-p2p: RUN/weights of a T2S tune run; None: training-free
    fast: bool = False  # video-p2p: no null-text optimisation (Video-P2P's --fast)
    null_text_iterations: int = 10  # video-p2p: Adam iterations per step, at most
    edit_blend_words: tuple[str, ...] = ()  # video-p2p: the edit prompt's blend words
    # (LocalBlend's second word); empty: blend_words, found in the edit prompt
    # run
    seed: int = 0  # seed of the Gaussian random noise rho of INR(TF)
    fps: float = 8.0
    dtype: Literal["auto", "fp16", "bf16", "fp32"] = "auto"  # auto: fp16 on CUDA, fp32 on CPU
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    def __post_init__(self) -> None:
        frames, size = or_unset(self.frames, 2), or_unset(self.size, 8)
        steps, guidance = or_unset(self.inference_steps, 1), or_unset(self.guidance_scale, 1.0)
        check_all((
            (frames >= 2, f"frames must be at least 2 (INR relates neighbouring frames), "
                          f"got {frames}"),
            (size > 0 and size % 8 == 0,
             f"size must be a positive multiple of 8 pixels, got {size}"),
            (self.start >= 0 and self.stride >= 1,
             f"expected start >= 0 and stride >= 1, got start={self.start}, stride={self.stride}"),
            (1 <= steps <= 1000, f"inference_steps must be in 1..1000, got {steps}"),
            (finite(self.inversion_weight) and 0.0 <= self.inversion_weight <= 1.0,
             f"inversion_weight (gamma) must be in [0, 1], got {self.inversion_weight}"),
            (finite(self.self_replace) and 0.0 <= self.self_replace <= 1.0,
             f"self_replace must be a fraction in [0, 1], got {self.self_replace}"),
            (finite(guidance) and guidance >= 1.0,
             f"guidance_scale must be a finite number >= 1 (1: no guidance), got {guidance}"),
            (finite(self.blend_threshold) and 0.0 < self.blend_threshold <= 1.0,
             f"blend_threshold must be in (0, 1], got {self.blend_threshold}"),
            (finite(self.alpha) and finite(self.beta) and self.alpha >= 0 and self.beta >= 0
             and self.alpha + self.beta > 0,
             f"expected alpha, beta >= 0 with a positive sum, got {self.alpha}, {self.beta}"),
            (self.fusion_min_downsample >= 1,
             f"fusion_min_downsample must be >= 1, got {self.fusion_min_downsample}"),
            (finite(self.fps) and self.fps > 0, f"fps must be a finite number > 0, got {self.fps}"),
            (seed_ok(self.seed), f"seed must be an integer in [0, 2**63), got {self.seed}"),
        ))  # fmt: skip
        check_control_fields(self)
        check_editor_fields(self)
        for word in self.blend_words if self.source_prompt else ():
            if not re.search(rf"(?<!\w){re.escape(word)}(?!\w)", self.source_prompt, re.I):
                raise ValueError(
                    f"blend word {word!r} is not in the source prompt {self.source_prompt!r}"
                )


@dataclass(frozen=True)
class PreparedEdit:
    """A resolved and checked config, with the model's description and each value's source."""

    config: EditConfig
    model: ModelInfo
    sources: dict[str, str] = field(default_factory=dict)


def prepare_edit(config: EditConfig, sources: dict[str, str] | None = None) -> PreparedEdit:
    """Resolve the model-dependent fields and check everything that needs no model weights."""
    if config.editor == "video-p2p":  # its defaults, and a T2S run's record, where none is set
        from .video_p2p_config import video_p2p_defaults

        config, sources = video_p2p_defaults(config, sources)
    missing = [k for k in ("video", "source_prompt", "prompt") if not getattr(config, k)]
    if missing:
        flags = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise ValueError(f"{flags} required (or set them in --config)")
    info = describe_model(config.model)
    config, sources = resolve_model_fields(config, info, "edit", EDIT_DEFAULTS, sources)
    if config.size % info.size_multiple:
        m = info.size_multiple
        raise ValueError(
            f"size must be a multiple of {m} px for this model (its VAE and UNet downsample by "
            f"{m} in all), got {config.size}: use {max(m, config.size // m * m)} or "
            f"{(config.size // m + 1) * m}"
        )
    return PreparedEdit(config, info, sources)


def check_output(output: Path, *, overwrite: bool = False) -> None:
    """The run folder must be creatable and writable, and empty unless ``overwrite``."""
    check_output_dir(output, what="output folder")
    if not overwrite and not folder_is_empty(output):
        raise OutputError(
            f"output folder {output} exists and is not empty (choose another --output, or "
            "pass --overwrite to replace it)"
        )


def usable_cache_dir(cache_dir: str | None) -> str | None:
    """The cache folder, or None with a warning when it cannot be written (the cache is an
    optimisation: an edit never fails for it)."""
    if not cache_dir:
        return None
    try:
        check_output_dir(Path(cache_dir).expanduser(), what="cache folder")
    except OutputError as exc:
        warnings.warn(f"{exc}: editing without the inversion cache", stacklevel=2)
        return None
    return cache_dir


def read_source(config: EditConfig):
    """The source frames as ``uint8 (f, h, w, 3)``."""
    from ..video_io import read_video

    return read_video(config.video, num_frames=config.frames, start=config.start,
                      stride=config.stride, size=config.size)  # fmt: skip
