"""An up-front estimate of a run's peak memory, so that a run that cannot fit is refused at once.

The estimate runs the model's own modules on the ``meta`` device (shapes only: no memory, no
weights, milliseconds) with the run's shapes, and adds up the tensors they produce:

* inference: the skip connections a UNet keeps for its up path, plus a working set of a few
  times its largest intermediate tensor;
* training: every intermediate tensor (kept for the backward pass), or with gradient
  checkpointing the inputs of each checkpointed block plus one block's intermediates;
* the weights, and for training the gradients and AdamW's two moments of the trained ones.

The VAE is estimated the same way for one chunk of frames. :func:`check_fits` compares the
largest stage with the free memory of the device (``MemAvailable`` on a CPU, the CUDA
allocator's free memory on a GPU) and, when it does not fit, says which frame size and frame
count would.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "MemoryError_",
    "MemoryEstimate",
    "RunMemory",
    "available_bytes",
    "check_fits",
    "meta_parts",
    "run_memory",
]

_WORKING_SET = 4  # inference: this many of the largest tensors alive at once
_CHUNK = 8  # frames per VAE call (components.encode_video / decode_video)


class MemoryError_(ValueError):
    """A run that would not fit in the device's free memory (one line, with what would fit)."""


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    unet: int  # activations of one UNet call (or training step)
    vae: int  # activations of one VAE chunk
    extra: int = 0  # e.g. a stored attention on the device

    @property
    def peak(self) -> int:
        return self.weights + max(self.unet, self.vae) + self.extra


def _leaf_outputs(module: nn.Module, run: Callable[[], object]) -> list[tuple[str, int]]:
    """``(module name, bytes)`` of every leaf module's tensor output, in call order."""
    names = {m: n for n, m in module.named_modules()}
    seen: list[tuple[str, int]] = []

    def hook(mod, _inputs, output):
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        size = sum(o.numel() * o.element_size() for o in outputs if isinstance(o, torch.Tensor))
        seen.append((names.get(mod, ""), size))

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _unit(name: str) -> str:
    """The checkpointed block a leaf belongs to: ``down_blocks.0.resnets.1`` and the like."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part in ("resnets", "attentions") and i + 1 < len(parts):
            return ".".join(parts[: i + 2])
    return name


def _activation_bytes(outputs: list[tuple[str, int]], training: bool, checkpointing: bool,
                      skips: int) -> int:  # fmt: skip
    """Peak activation bytes from the leaf outputs of one call. The factors were fitted to peak
    resident memory measured on inr-smooth-mini (CPU, 64-256 px, 8 frames; README)."""
    sizes = [size for _, size in outputs]
    if not sizes:
        return 0
    if not training:
        return skips + _WORKING_SET * max(sizes)
    total = int(1.5 * sum(sizes))  # what autograd keeps, plus the gradients in flight
    if not checkpointing:
        return total
    units: dict[str, int] = {}
    last: dict[str, int] = {}
    kept = 0  # everything outside the checkpointed blocks, and each block's output
    for name, size in outputs:
        unit = _unit(name)
        if unit == name:
            kept += size
        else:
            units[unit] = units.get(unit, 0) + size
            last[unit] = size
    kept += sum(last.values())
    return min(total, kept + 5 * max(units.values(), default=0))  # one block recomputed


class RunMemory:
    """The peak memory of one kind of call (batch, training or not) of a model on the meta
    device. A UNet's intermediate tensors grow with frames x latent pixels, except the few on
    the prompt's 77 tokens (with frames alone): two forwards at probe sizes give both rates,
    and :meth:`estimate` scales them to any frame count and size at no cost. The VAE sees no
    prompt: its tensors grow with pixels."""

    def __init__(self, parts, video_unet, *, batch: int, training: bool,
                 checkpointing: bool = False) -> None:  # fmt: skip
        self.scale = parts.vae_scale_factor
        self.weights = _param_bytes(parts.text_encoder, parts.vae, video_unet)
        if training:  # gradients and AdamW's two moments, float32
            self.weights += 3 * sum(p.numel() * 4 for p in video_unet.parameters()
                                    if p.requires_grad)  # fmt: skip
        side = 2 ** len(video_unet.unet.config.block_out_channels)  # latent side of a probe
        frames = 2
        small, large = (unet_activation_bytes(video_unet, batch, frames, (s, s),
                                              training=training, checkpointing=checkpointing)
                        for s in (2 * side, 4 * side))  # fmt: skip
        self.per_pixel = (large - small) / (frames * (16 - 4) * side * side)  # per frame
        self.per_frame = small / frames - self.per_pixel * 4 * side * side
        pixels = 2 * side * self.scale
        self.vae_per_pixel = vae_activation_bytes(parts.vae, 1, (pixels, pixels)) / pixels**2

    def estimate(self, frames: int, size: int, extra: int = 0) -> MemoryEstimate:
        latent = (size // self.scale) ** 2
        unet = int(frames * (self.per_pixel * latent + max(self.per_frame, 0)))
        vae = int(self.vae_per_pixel * min(frames, _CHUNK) * size * size)
        return MemoryEstimate(self.weights, unet, vae, extra)


def unet_activation_bytes(video_unet, batch: int, frames: int, latent_hw, *, training: bool,
                          checkpointing: bool) -> int:  # fmt: skip
    """Activations of one call of a VideoUNet built on the meta device."""
    config = video_unet.unet.config
    dtype = video_unet.dtype
    sample = torch.zeros(batch, config.in_channels, frames, *latent_hw, device="meta", dtype=dtype)
    context = torch.zeros(batch, 77, config.cross_attention_dim, device="meta", dtype=dtype)
    outputs = _leaf_outputs(video_unet, lambda: video_unet(sample, 10, context))
    skip_ends = (".conv2", ".proj_out", "downsamplers.0.conv")  # what a down block hands up
    skips = sum(size for name, size in outputs
                if name.startswith("unet.down_blocks") and name.endswith(skip_ends))  # fmt: skip
    return _activation_bytes(outputs, training, checkpointing, skips)


def vae_activation_bytes(vae, frames: int, pixel_hw) -> int:
    """Activations of the larger of one encode and one decode call (VAE on the meta device)."""
    dtype = vae.dtype
    chunk = min(frames, _CHUNK)
    pixels = torch.zeros(chunk, 3, *pixel_hw, device="meta", dtype=dtype)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    latents = torch.zeros(chunk, vae.config.latent_channels, pixel_hw[0] // scale,
                          pixel_hw[1] // scale, device="meta", dtype=dtype)  # fmt: skip
    encode = _leaf_outputs(vae, lambda: vae.encode(pixels))
    decode = _leaf_outputs(vae, lambda: vae.decode(latents))
    return max(_activation_bytes(run, False, False, 0) for run in (encode, decode))


def meta_parts(source: str):
    """The text encoder, VAE and 2-D UNet of the model at ``source`` (a folder or hub id) built
    on the meta device from its configs (no weights read, no memory), with the attributes
    :class:`RunMemory` uses."""
    from types import SimpleNamespace

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(source, subfolder="unet")
        )
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(source, subfolder="vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(source, subfolder="text_encoder"))
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    return SimpleNamespace(unet=unet, vae=vae, text_encoder=text, vae_scale_factor=scale)


@functools.lru_cache(maxsize=16)
def run_memory(source: str, inflation: tuple[tuple[str, object], ...],
               trainable: tuple[str, ...] | None, *, batch: int, training: bool,
               checkpointing: bool = False) -> RunMemory:  # fmt: skip
    """:class:`RunMemory` of the model at ``source`` inflated with ``inflation`` (keyword
    arguments of :func:`~inr_smooth.models.inflate_unet`, as pairs), with ``trainable``
    patterns when training; computed once per process for the same arguments."""
    from ..models import inflate_unet, set_trainable

    parts = meta_parts(source)
    video_unet = inflate_unet(parts.unet, **dict(inflation))
    if trainable is not None:
        set_trainable(video_unet, trainable)
    return RunMemory(parts, video_unet, batch=batch, training=training,
                     checkpointing=checkpointing)  # fmt: skip


def _param_bytes(*modules: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def available_bytes(device: torch.device) -> int:
    """Free memory of ``device``: the CUDA allocator's, or ``MemAvailable`` of the machine."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_fits(estimate_at: Callable[[int, int], MemoryEstimate], frames: int, size: int,
               size_multiple: int, device: torch.device, *,
               available: int | None = None) -> MemoryEstimate:  # fmt: skip
    """Raise MemoryError_ unless ``estimate_at(frames, size)`` fits in the free memory,
    naming the largest size (at ``frames``) and frame count (at ``size``) that would."""
    free = available_bytes(device) if available is None else available
    estimate = estimate_at(frames, size)
    if estimate.peak <= free:
        return estimate

    def largest(lo: int, hi: int, fits: Callable[[int], bool]) -> int | None:
        best = None
        while lo <= hi:
            mid = (lo + hi) // 2
            if fits(mid):
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        return best

    k = largest(1, size // size_multiple,
                lambda k: estimate_at(frames, k * size_multiple).peak <= free)  # fmt: skip
    f = largest(2, frames, lambda f: estimate_at(f, size).peak <= free)
    options = []
    if k is not None:
        options.append(f"--size {k * size_multiple} at {frames} frames")
    if f is not None:
        options.append(f"--frames {f} at {size} px")
    hint = " or ".join(options) if options else "nothing at these settings"
    raise MemoryError_(
        f"this run needs about {_gib(estimate.peak)} but {device.type} has {_gib(free)} free "
        f"(estimated: weights {_gib(estimate.weights)}, UNet {_gib(estimate.unet)}, VAE "
        f"{_gib(estimate.vae)}); would fit: {hint}; --skip-memory-check runs it anyway"
    )
