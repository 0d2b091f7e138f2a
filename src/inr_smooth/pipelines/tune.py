"""One-shot video tuning (Tune-A-Video) with a smoothing loss, then generation.

``tune(TuneConfig(...))`` reads the source video, inflates the Stable Diffusion UNet into a
video UNet, tunes its query projections and temporal attention on the video with
:func:`~inr_smooth.pipelines.training.training_step` (smoothing ``none | smoothvideo |
smoothvideo-simple | inr``), saves the tuned weights the moment tuning ends, DDIM-inverts the
source with the tuned model and generates one video per edit prompt from it. With
``controlnets`` it is ControlVideo's tuning instead (:mod:`.controlvideo`: ControlNet-conditioned,
key-frame attention, its temporal branch and trainable set). The run folder (:mod:`.tune_run`)
holds:

* ``config.yaml`` -- the resolved config; ``log.json`` -- losses per step, time and peak memory
  per stage, where each setting came from, versions;
* ``weights/`` -- the tuned tensors (:func:`~inr_smooth.models.save_video_unet_weights`),
  ``tune.json`` (base model, sizes, prompts, the resolved config) and, once the inversion is
  done, ``inverted_latents.safetensors``; ``inr-smooth generate`` reads this folder;
* ``samples/`` -- ``<prompt>.mp4``, ``.gif`` and ``<prompt>-side-by-side.mp4`` with the source;
  ``validation/step-N/`` when ``validate_every`` is set; ``checkpoint-N/`` while tuning.

Everything that can be checked without the model (settings, the video, the run folder, a resume
against the checkpoint's settings, the memory the run needs) is checked before it loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import config_to_dict
from ..outputs import write_errors, write_json_atomic, write_text_atomic
from .tune_config import DEFAULT_MODEL, PreparedTune, TuneConfig, prepare_tune
from .tune_run import INVERTED_LATENTS, TUNE_RECORD, open_run

__all__ = [
    "DEFAULT_MODEL",
    "INVERTED_LATENTS",
    "TUNE_RECORD",
    "TuneConfig",
    "TuneResult",
    "resolve_device",
    "tune",
]


@dataclass
class TuneResult:
    output: Path
    weights: Path
    samples: list[Path] = field(default_factory=list)
    log: dict = field(default_factory=dict)


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None
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


def tune(
    config: TuneConfig | PreparedTune,
    *,
    resume: bool = False,
    overwrite: bool = False,
    memory_check: bool = True,
    progress: bool = True,
) -> TuneResult:
    """Run one-shot tuning and generation; see the module docstring for the outputs.

    ``resume`` continues the run in ``config.output`` (from its newest complete checkpoint, or
    straight to generation when tuning had finished); ``overwrite`` replaces another run there;
    ``memory_check=False`` skips the up-front memory estimate.
    """
    from .tune_steps import TuneSession

    prepared = config if isinstance(config, PreparedTune) else prepare_tune(config)
    # 1. the run folder, the source frames and a resume's settings: before any model loads
    run, frames, digest = open_run(prepared, resume=resume, overwrite=overwrite)
    session = TuneSession(prepared, run, frames, digest, progress=progress)
    if memory_check:
        session.check_memory()
    # 2. from here on a failure leaves a resumable folder or nothing
    try:
        return _run(session)
    except BaseException:
        run.abandon()
        raise


def _run(session) -> TuneResult:
    config, run, log = session.config, session.run, session.log
    # 2. the model, prompts and latents
    with log.stage("load"):
        session.load()
    run.begin()
    run.written.append(write_text_atomic(run.output / "config.yaml", session.config_yaml()))
    # 3. tuning, and the tuned weights saved at once
    if run.tuning_done:
        session.load_tuned_weights()
    else:
        with log.stage("tuning"):
            session.tune()
        session.save_weights()
    # 4. inversion of the source with the tuned model (stored with the weights)
    with log.stage("inversion"):
        start = session.inverted_latents()
    # 5. one video per edit prompt
    result = TuneResult(output=run.output, weights=session.weights_dir)
    if config.edit_prompts:
        with log.stage("generation"):
            result.samples = session.generate(start)
    session.write_log()
    result.log = log.to_dict()
    return result


def write_record(folder: Path, config: TuneConfig, shape, digest: str, steps: int) -> Path:
    """``tune.json``: what ``generate`` and ``--resume`` need to know about the tuning."""
    record = {
        "model": config.model, "prompt": config.prompt, "video": config.video,
        "start": config.start, "stride": config.stride, "resize": config.resize,
        "frames": int(shape[0]), "height": int(shape[1]), "width": int(shape[2]),
        "smoothing": config.smoothing, "smooth_weight": config.weight, "steps": steps,
        "inference_steps": config.inference_steps, "guidance_scale": config.guidance_scale,
        "fps": config.fps, "config": {**config_to_dict(config), "video_digest": digest},
    }  # fmt: skip
    with write_errors(folder):
        return write_json_atomic(folder / TUNE_RECORD, record)
