"""Sample videos later from weights written by :func:`~inr_smooth.pipelines.tune.tune`.

The ``weights/`` folder of a tuning run holds the tuned tensors, ``tune.json`` (base model,
sizes, sampling settings) and the DDIM-inverted source latent, so generation needs neither the
source video nor the run's config: by default it starts from that latent, as Tune-A-Video does;
``from_noise=True`` starts from seeded Gaussian noise instead. When another number of DDIM
steps is asked for than the latent was inverted with (or the inversion never finished), the
source is inverted again with the tuned model, from the recorded video or ``source``.

Videos go into the run's ``samples/`` folder unless ``output`` says otherwise; a file that
exists is never replaced without ``overwrite``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..outputs import OutputError, check_output_dir
from .settings import check_all, finite, seed_ok
from .tune_run import INVERTED_LATENTS, read_tune_record

if TYPE_CHECKING:  # torch loads in generate(), after everything has been checked
    import torch

__all__ = ["GenerateConfig", "generate", "prepare_generate"]


@dataclass(frozen=True)
class GenerateConfig:
    weights: str  # the weights/ folder of a tuning run
    prompts: tuple[str, ...]
    output: str | None = None  # None: the run folder's samples/
    model: str | None = None  # base model; None: the one the weights were tuned from
    guidance_scale: float | None = None  # None: as in the tuning run
    inference_steps: int | None = None  # None: as in the tuning run
    from_noise: bool = False  # start from Gaussian noise instead of the inverted source
    source: str | None = None  # source video: side-by-sides, and re-inversion if needed
    seed: int = 33
    fps: float | None = None
    device: str = "auto"
    overwrite: bool = False  # replace videos of the same prompt in the output folder

    def __post_init__(self) -> None:
        check_all((
            (bool(self.prompts), "expected at least one prompt"),
            (self.guidance_scale is None or (finite(self.guidance_scale)
                                             and self.guidance_scale >= 1),
             f"guidance_scale must be a finite number >= 1, got {self.guidance_scale}"),
            (self.inference_steps is None or 1 <= self.inference_steps <= 1000,
             f"inference_steps must be in 1..1000, got {self.inference_steps}"),
            (self.fps is None or (finite(self.fps) and self.fps > 0),
             f"fps must be a finite number > 0, got {self.fps}"),
            (seed_ok(self.seed), f"seed must be an integer in [0, 2**63), got {self.seed}"),
        ))  # fmt: skip


@dataclass(frozen=True)
class PreparedGenerate:
    config: GenerateConfig
    record: dict
    output: Path
    names: list[str]


def default_output(weights: Path) -> Path:
    """``RUN/samples`` for the weights of a run folder, else ``outputs/generate``."""
    run = weights.resolve().parent
    return run / "samples" if (run / "config.yaml").is_file() else Path("outputs/generate")


def prepare_generate(config: GenerateConfig) -> PreparedGenerate:
    """Check the weights folder, the output and its file names before any model loads."""
    from .sample_names import sample_files, sample_names

    weights = Path(config.weights).expanduser()
    record = read_tune_record(weights)
    output = Path(config.output).expanduser() if config.output else default_output(weights)
    check_output_dir(output)
    names = sample_names(config.prompts)
    if not config.overwrite:
        for name in names:
            for path in sample_files(output, name, source=bool(config.source)):
                if path.exists():
                    raise OutputError(f"{path} exists (pass --overwrite to replace it, or "
                                      "--output another folder)")  # fmt: skip
    return PreparedGenerate(config, record, output, names)


def _start_latents(config: GenerateConfig, record: dict, video_unet, parts, steps: int,
                   progress: bool) -> torch.Tensor:  # fmt: skip
    """The inverted source for ``steps`` DDIM steps: the saved one, or inverted anew."""
    import torch
    from safetensors.torch import load_file

    path = Path(config.weights) / INVERTED_LATENTS
    saved = {}
    if path.is_file():
        try:
            saved = load_file(path)
        except Exception as exc:  # SafetensorError: a cut file
            raise ValueError(f"{path} is unreadable ({type(exc).__name__}): delete it and "
                             "generate again to re-invert the source") from None  # fmt: skip
    recorded = saved.get("inference_steps", torch.tensor(record["inference_steps"]))
    if "latents" in saved and int(recorded) == steps:
        return saved["latents"]
    return _reinvert(config, record, video_unet, parts, steps, progress)


def _reinvert(config, record, video_unet, parts, steps, progress) -> torch.Tensor:
    from ..video_io import VideoError, frames_digest, read_video, video_to_tensor
    from .components import encode_video
    from .sampling import invert_source

    video = config.source or record["video"]
    try:
        frames = read_video(video, num_frames=record["frames"], start=record["start"],
                            stride=record["stride"], size=(record["height"], record["width"]),
                            resize=record.get("resize", "crop"))  # fmt: skip
    except VideoError as exc:
        raise ValueError(
            f"{steps} DDIM steps need the source inverted again (the saved latent is for "
            f"{record['inference_steps']}), and the source video could not be read ({exc}): "
            "pass --source PATH, or --inference-steps as tuned"
        ) from None
    expected = record.get("config", {}).get("video_digest")
    if expected and frames_digest(frames) != expected:
        raise ValueError(f"{video} is not the video these weights were tuned on")
    latents = encode_video(parts.vae, video_to_tensor(frames)[None].to(parts.vae.device))
    prompt = record["prompt"] if record.get("config", {}).get("controlnets") else ""
    return invert_source(video_unet, parts, latents.float(), num_inference_steps=steps,
                         progress=progress, prompt=prompt)  # fmt: skip


def generate(config: GenerateConfig, *, progress: bool = True) -> list[Path]:
    """Write ``<prompt>.mp4`` / ``.gif`` (and side-by-sides) into the output folder."""
    import torch

    with torch.no_grad():
        return _generate(config, progress)


def _generate(config: GenerateConfig, progress: bool) -> list[Path]:
    import torch

    from ..models import load_video_unet_weights
    from .components import load_parts
    from .controlvideo import load_control
    from .sampling import sample_videos, write_samples
    from .tune import resolve_device

    prepared = prepare_generate(config)
    record, weights = prepared.record, Path(config.weights).expanduser()
    source = None
    if config.source:  # a bad video fails before the model loads
        from ..video_io import read_video

        source = read_video(config.source, num_frames=record["frames"], start=record["start"],
                            stride=record["stride"], size=(record["height"], record["width"]),
                            resize=record.get("resize", "crop"))  # fmt: skip
    device = resolve_device(config.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    parts = load_parts(config.model or record["model"], device=device, dtype=dtype)
    steps = config.inference_steps or record["inference_steps"]
    try:
        video_unet = load_video_unet_weights(parts.unet, weights).to(device)
        video_unet = load_control(  # ControlVideo runs: their tuned ControlNets and maps
            weights, video_unet, parts, device=device, dtype=dtype, inference_steps=steps
        )
    except Exception as exc:  # SafetensorError, shape mismatches: a cut or foreign file
        raise ValueError(f"cannot load the tuned weights in {weights}: {exc}") from None
    if config.from_noise:
        shape = (1, parts.unet.config.in_channels, record["frames"],
                 record["height"] // parts.vae_scale_factor,
                 record["width"] // parts.vae_scale_factor)  # fmt: skip
        start = torch.randn(shape, generator=torch.Generator().manual_seed(config.seed))
    else:
        start = _start_latents(config, record, video_unet, parts, steps, progress)
    videos = sample_videos(video_unet, parts, start.to(device), config.prompts,
                           guidance_scale=config.guidance_scale or record["guidance_scale"],
                           num_inference_steps=steps, progress=progress)  # fmt: skip
    return write_samples(prepared.output, config.prompts, videos, source=source,
                         fps=config.fps or record["fps"], names=prepared.names)  # fmt: skip
