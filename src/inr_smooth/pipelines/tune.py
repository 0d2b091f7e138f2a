"""One-shot video tuning (Tune-A-Video) with a smoothing loss, then generation.

``tune(TuneConfig(...))`` reads the source video, inflates the Stable Diffusion UNet into a
video UNet, tunes its query projections and temporal attention on the video with
:func:`~inr_smooth.pipelines.training.training_step` (smoothing ``none | smoothvideo |
smoothvideo-simple | inr``), saves the tuned weights, and generates one video per edit prompt
from the DDIM-inverted source latent. With ``controlnets`` it is ControlVideo's tuning instead
(:mod:`.controlvideo`: ControlNet-conditioned, key-frame attention, its temporal branch and
trainable set). The run folder holds:

* ``config.yaml`` -- the resolved config; ``log.json`` -- losses per step, time and peak memory
  per stage, versions;
* ``weights/`` -- the tuned tensors (:func:`~inr_smooth.models.save_video_unet_weights`),
  ``tune.json`` (base model, sizes, prompts) and ``inverted_latents.safetensors``, which
  ``inr-smooth generate`` reads;
* ``samples/`` -- ``<prompt>.mp4``, ``.gif`` and ``<prompt>-side-by-side.mp4`` with the source;
  ``validation/step-N/`` when ``validate_every`` is set; ``checkpoint-N/`` while tuning.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import yaml
from safetensors.torch import save_file

from ..config import config_to_dict
from ..models import DEFAULT_TRAINABLE, inflate_unet, save_video_unet_weights, set_trainable
from ..models.controlnet import set_controlled_trainable
from ..runlog import RunLog, write_json_atomic
from .components import encode_prompts, encode_video, load_parts
from .controlvideo import (
    CONTROLVIDEO_SMOOTH_WEIGHT,
    check_control_config,
    controlled_model,
    prepare_control,
    read_controls,
    save_control,
)
from .sampling import invert_source, sample_videos, write_samples
from .trainer import LoopSettings, cast_frozen_, latest_checkpoint, run_tuning_loop
from .training import DEFAULT_SMOOTH_WEIGHT, SMOOTHING_MODES, Smoothing, training_step

__all__ = ["DEFAULT_MODEL", "TuneConfig", "TuneResult", "resolve_device", "tune"]

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TUNE_RECORD = "tune.json"
INVERTED_LATENTS = "inverted_latents.safetensors"


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
    frames: int = 24
    size: int = 512
    start: int = 0
    stride: int = 2
    # tuning
    steps: int = 500
    learning_rate: float = 3e-5
    trainable: tuple[str, ...] = DEFAULT_TRAINABLE
    attention: Literal["sparse_causal", "first_frame", "keyframe", "full", "none"] = "sparse_causal"
    group_norm: Literal["per_frame", "video"] = "video"  # Tune-A-Video pools over frames
    gradient_checkpointing: bool = True
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"  # auto: bf16/fp16 on GPU
    use_8bit_adam: bool = False
    checkpoint_every: int = 100  # steps; 0: only on Ctrl-C
    validate_every: int = 0  # steps; 0: no validation samples
    # generation
    guidance_scale: float = 12.5
    inference_steps: int = 50
    fps: float = 8.0
    seed: int = 33
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # ControlVideo (pipelines/controlvideo.py; controlvideo_config() sets its defaults): tuning
    # conditioned on ControlNets, one control video each. No ControlNets: Tune-A-Video.
    controlnets: tuple[str, ...] = ()  # hub ids / diffusers folders, or mini-canny, mini-depth
    controls: tuple[str, ...] = ()  # per ControlNet: canny | hed | depth | pose | maps path
    control_scales: tuple[float, ...] = ()  # per ControlNet, or one for all (empty: 1.0)
    control_guidance_start: float = 0.0  # ControlNets act from this fraction of the steps ...
    control_guidance_end: float = 1.0  # ... to this one
    canny_thresholds: tuple[int, ...] = (100, 100)  # ControlVideo's

    def __post_init__(self) -> None:
        if self.smoothing not in SMOOTHING_MODES:
            raise ValueError(f"smoothing must be one of {SMOOTHING_MODES}, got {self.smoothing!r}")
        checks = (
            (self.frames >= 2, f"frames must be at least 2, got {self.frames}"),
            (self.steps >= 1, f"steps must be at least 1, got {self.steps}"),
            (self.stride >= 1 and self.start >= 0, "stride must be >= 1 and start >= 0"),
            (self.inference_steps >= 1, "inference_steps must be at least 1"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (self.smooth_weight is None or self.smooth_weight >= 0, "smooth_weight must be >= 0"),
            (self.checkpoint_every >= 0 and self.validate_every >= 0, "intervals must be >= 0"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        check_control_config(self)

    @property
    def weight(self) -> float:
        """The smoothing weight actually used."""
        if self.smooth_weight is None and self.controlnets:  # ControlVideo: the paper's 0.2
            default = DEFAULT_SMOOTH_WEIGHT[self.smoothing]
            return CONTROLVIDEO_SMOOTH_WEIGHT.get(self.smoothing, default)
        return (
            DEFAULT_SMOOTH_WEIGHT[self.smoothing]
            if self.smooth_weight is None
            else self.smooth_weight
        )


@dataclass
class TuneResult:
    output: Path
    weights: Path
    samples: list[Path] = field(default_factory=list)
    log: dict = field(default_factory=dict)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but torch sees no CUDA GPU")
    return device


def _mixed_precision(config: TuneConfig, device: torch.device) -> str:
    if config.mixed_precision != "auto":
        if device.type != "cuda" and config.mixed_precision != "no":
            raise ValueError(f"mixed_precision={config.mixed_precision!r} needs a CUDA device")
        return config.mixed_precision
    if device.type != "cuda":
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def _check_output(output: Path, resume: bool) -> None:
    if resume:
        if latest_checkpoint(output) is None:
            raise FileNotFoundError(f"--resume: no checkpoint-N folder in {output}")
        return
    if output.exists() and any(output.iterdir()):
        hint = " (it holds a checkpoint: add --resume)" if latest_checkpoint(output) else ""
        raise FileExistsError(f"output folder {output} exists and is not empty{hint}")


def tune(config: TuneConfig, *, resume: bool = False, progress: bool = True) -> TuneResult:
    """Run one-shot tuning and generation; see the module docstring for the outputs."""
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    from ..video_io import read_video, video_to_tensor

    output = Path(config.output)
    _check_output(output, resume)
    device = resolve_device(config.device)
    accelerator = Accelerator(
        mixed_precision=_mixed_precision(config, device), cpu=device.type == "cpu"
    )
    device = accelerator.device
    log = RunLog(device)
    log.info["config"] = config_to_dict(config)

    # 1. the source frames, the model, prompts and latents
    with log.stage("load"):
        frames = read_video(
            config.video,
            num_frames=config.frames,
            start=config.start,
            stride=config.stride,
            size=config.size,
        )
        maps = read_controls(config, frames)  # ControlVideo's control videos, else None
        parts = load_parts(config.model, device=device)
        prompt_embeds = encode_prompts(parts, [config.prompt])
        latents = encode_video(parts.vae, video_to_tensor(frames)[None].to(device))
        control = prepare_control(config, maps, parts, device)  # its ControlNets, else None
    output.mkdir(parents=True, exist_ok=True)
    _write_config(output / "config.yaml", config)

    # 2. the video UNet and what it tunes
    video_unet = inflate_unet(
        parts.unet, attention=config.attention, group_norm=config.group_norm,
        architecture="controlvideo" if control else "tune_a_video",
    )  # fmt: skip
    model = video_unet
    if control:  # ControlVideo: the UNet conditioned by its ControlNets, tuned together
        model = controlled_model(video_unet, control, config, parts)
        set_controlled_trainable(model, config.trainable)
    else:
        set_trainable(video_unet, config.trainable)
    if accelerator.mixed_precision in ("bf16", "fp16"):  # frozen weights: half the memory
        cast_frozen_(
            model, torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float16
        )
    if config.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    inversion_prompt = config.prompt if control else ""  # ControlVideo inverts with the caption
    noise_scheduler = DDPMScheduler.from_config(parts.scheduler.config)

    # 3. tuning
    def step_fn(model, generator):
        return training_step(
            model,
            latents,
            prompt_embeds,
            noise_scheduler,
            smoothing=config.smoothing,
            smooth_weight=config.weight,
            alpha=config.alpha,
            beta=config.beta,
            chain=config.chain,
            detach_anchor=config.detach_anchor,
            lambda_factor=config.lambda_factor,
            generator=generator,
        )

    def on_step(step, out):
        log.append(
            "loss",
            [step, float(out.loss.detach()), float(out.diffusion_loss), float(out.smoothing_loss)],
        )

    def validate(step, model):
        prompts = (config.edit_prompts or (config.prompt,))[:1]
        start = invert_source(
            model, parts, latents, num_inference_steps=config.inference_steps, progress=False,
            prompt=inversion_prompt,
        )  # fmt: skip
        videos = sample_videos(
            model, parts, start, prompts, guidance_scale=config.guidance_scale,
            num_inference_steps=config.inference_steps, progress=False,
        )  # fmt: skip
        folder = output / "validation" / f"step-{step}"
        write_samples(folder, prompts, videos, source=None, fps=config.fps)

    settings = LoopSettings(
        steps=config.steps,
        learning_rate=config.learning_rate,
        use_8bit_adam=config.use_8bit_adam,
        checkpoint_every=config.checkpoint_every,
        seed=config.seed,
    )
    with log.stage("tuning"):
        model = run_tuning_loop(
            model, step_fn, settings, output, accelerator=accelerator, resume=resume,
            on_step=on_step, validate_every=config.validate_every, validate=validate,
            progress=progress,
        )  # fmt: skip
    video_unet = model.unet if control else model
    log.info["trainable_parameters"] = sum(
        p.numel() for p in model.parameters() if p.requires_grad
    )

    # 4. inversion of the source, the tuned weights, generation
    with log.stage("inversion"), accelerator.autocast():
        start_latents = invert_source(
            model,
            parts,
            latents,
            num_inference_steps=config.inference_steps,
            progress=progress,
            prompt=inversion_prompt,
        )
    extra = (lambda tmp: save_control(tmp, model, control, config)) if control else None
    weights = _save_weights(
        output / "weights", video_unet, start_latents, config, frames.shape, extra=extra
    )
    result = TuneResult(output=output, weights=weights)
    if config.edit_prompts:
        with log.stage("generation"), accelerator.autocast():
            videos = sample_videos(
                model, parts, start_latents, config.edit_prompts,
                guidance_scale=config.guidance_scale, num_inference_steps=config.inference_steps,
                progress=progress,
            )  # fmt: skip
        result.samples = write_samples(
            output / "samples", config.edit_prompts, videos, source=frames, fps=config.fps
        )
    log.write(output / "log.json")
    result.log = log.to_dict()
    return result


def _write_config(path: Path, config: TuneConfig) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    os.replace(tmp, path)


def _save_weights(
    folder: Path, video_unet, start_latents, config: TuneConfig, shape, extra=None
) -> Path:
    """Write the tuned weights, the inverted source latent and ``tune.json``, atomically
    (``extra(tmp)`` writes more into the folder: the ControlNets of ControlVideo)."""
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_video_unet_weights(video_unet, tmp)
        save_file(
            {"latents": start_latents.detach().float().cpu().contiguous()}, tmp / INVERTED_LATENTS
        )
        record = {
            "model": config.model,
            "prompt": config.prompt,
            "video": config.video,
            "start": config.start,
            "stride": config.stride,
            "frames": int(shape[0]),
            "height": int(shape[1]),
            "width": int(shape[2]),
            "smoothing": config.smoothing,
            "smooth_weight": config.weight,
            "inference_steps": config.inference_steps,
            "guidance_scale": config.guidance_scale,
            "fps": config.fps,
        }
        write_json_atomic(tmp / TUNE_RECORD, record)
        if extra is not None:
            extra(tmp)
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
