"""Benchmark of the tuning step per smoothing mode, measured side by side in one run.

Every mode runs the same step (same latents, noise, timestep, prompt embeddings) on the same
video UNet: forward, smoothing loss, backward and an AdamW step on the trainable weights
(Tune-A-Video's set). Modes are interleaved, rotating their order every round, and each mode's
time is the median of its rounds after warm-up; its peak memory comes from one extra step with
the peak counter reset. The FLOPs of a step are counted with ``torch.utils.flop_counter``
in the first warm-up round (with no warm-up, in one extra untimed step per mode before the
timed rounds), so achieved TFLOP/s stand next to every time.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
from diffusers import DDPMScheduler
from torch.utils.flop_counter import FlopCounterMode
from tqdm.auto import tqdm

from ..models import inflate_unet, set_trainable
from ..pipelines.trainer import cast_frozen_
from ..pipelines.training import SMOOTHING_MODES, training_step
from ..pipelines.tune import resolve_device
from ..runlog import _reset_peak_rss, environment, peak_rss_mb
from .models import bench_unet

__all__ = ["TuneStepBench", "run_tune_step_bench"]


@dataclass(frozen=True)
class TuneStepBench:
    model: str = "tiny"  # tiny | sd15-arch | a model folder or hub id
    frames: int = 8
    size: int = 64  # pixels; latents are size / 8 (Stable Diffusion's VAE)
    modes: tuple[str, ...] = ("none", "smoothvideo", "inr")
    repeats: int = 5  # timed rounds per mode
    warmup: int = 1  # untimed rounds per mode (the first also counts FLOPs; 0: an extra step)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    gradient_checkpointing: bool = False
    frozen_low_precision: bool = True  # with mixed precision: frozen weights stored in it
    attention: str = "sparse_causal"
    device: str = "auto"
    seed: int = 0
    # controlvideo: ControlVideo's UNet (key-frame attention, parallel temporal branch) with one
    # ControlNet (ControlNetModel.from_unet) and ControlVideo's trainable set in both
    host: Literal["tune-a-video", "controlvideo"] = "tune-a-video"

    def __post_init__(self) -> None:
        unknown = [m for m in self.modes if m not in SMOOTHING_MODES]
        if unknown or "none" not in self.modes:
            raise ValueError(
                f"modes must include 'none' and be among {SMOOTHING_MODES}, got {self.modes}"
            )
        if self.size % 8 or self.size < 8 or self.frames < 2 or self.repeats < 1 or self.warmup < 0:
            raise ValueError(
                f"expected size a multiple of 8, frames >= 2, repeats >= 1, warmup >= 0; got "
                f"size={self.size}, frames={self.frames}, repeats={self.repeats}, "
                f"warmup={self.warmup}"
            )


class _Step:
    """One training step of a mode on fixed inputs; ``__call__`` returns seconds."""

    def __init__(self, bench: TuneStepBench, device: torch.device):
        self.device = device
        unet = bench_unet(bench.model, device, seed=bench.seed)
        if bench.host == "controlvideo":
            self.video_unet = _controlvideo_model(unet, bench, device)
        else:
            self.video_unet = inflate_unet(unet, attention=bench.attention).to(device)
            set_trainable(self.video_unet)
        if bench.gradient_checkpointing:
            self.video_unet.enable_gradient_checkpointing()
        self.video_unet.train()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(bench.mixed_precision)
        if dtype is not None and bench.frozen_low_precision:
            cast_frozen_(self.video_unet, dtype)
        params = [p for p in self.video_unet.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        self.optimizer = torch.optim.AdamW(params, lr=1e-6)
        config = unet.config
        g = torch.Generator(device).manual_seed(bench.seed)
        shape = (1, config.in_channels, bench.frames, bench.size // 8, bench.size // 8)
        self.latents = torch.randn(shape, generator=g, device=device)
        self.noise = torch.randn(shape, generator=g, device=device)
        self.embeds = torch.randn(1, 77, config.cross_attention_dim, generator=g, device=device)
        self.timesteps = torch.tensor([500], device=device)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
            beta_schedule="scaled_linear",
        )  # fmt: skip
        self.autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def __call__(self, mode: str) -> float:
        self.sync()
        start = time.perf_counter()
        with self.autocast():
            out = training_step(
                self.video_unet, self.latents, self.embeds, self.scheduler, smoothing=mode,
                noise=self.noise, timesteps=self.timesteps,
            )  # fmt: skip
        out.loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.sync()
        return time.perf_counter() - start

    def flops(self, mode: str) -> float:
        with FlopCounterMode(display=False) as counter:
            self(mode)
        return float(counter.get_total_flops())

    def peak_memory_mb(self, mode: str) -> float:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self(mode)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        _reset_peak_rss()
        self(mode)
        return peak_rss_mb()


def _controlvideo_model(unet, bench: TuneStepBench, device: torch.device):
    """ControlVideo's UNet + one ControlNet reading maps at 8x the latents, conditioned on
    seeded random maps, with its trainable set."""
    from diffusers import ControlNetModel

    from ..models.controlnet import (
        ControlledVideoUNet,
        inflate_controlnet,
        set_controlled_trainable,
    )

    controlnet = ControlNetModel.from_unet(unet).to(device)
    video_unet = inflate_unet(unet, attention="keyframe", group_norm="video",
                              architecture="controlvideo").to(device)  # fmt: skip
    model = ControlledVideoUNet(video_unet, [inflate_controlnet(controlnet)])
    set_controlled_trainable(model)
    g = torch.Generator(device).manual_seed(bench.seed + 1)
    maps = torch.rand(1, 3, bench.frames, bench.size, bench.size, generator=g, device=device)
    model.set_conditions([maps])
    return model


def run_tune_step_bench(bench: TuneStepBench, *, progress: bool = True) -> dict:
    """Run the benchmark; returns the JSON-ready report (``cases``, ``device``, ``versions``)."""
    device = resolve_device(bench.device)
    step = _Step(bench, device)
    rounds = bench.warmup + bench.repeats
    steps = (rounds + (bench.warmup == 0)) * len(bench.modes)
    bar = tqdm(total=steps, desc="tune-step bench", disable=not progress)
    flops = {}
    if bench.warmup == 0:  # FLOPs from one extra untimed step per mode
        for mode in bench.modes:
            flops[mode] = step.flops(mode)
            bar.update(1)
    times: dict[str, list[float]] = {mode: [] for mode in bench.modes}
    for r in range(rounds):
        order = bench.modes[r % len(bench.modes) :] + bench.modes[: r % len(bench.modes)]
        for mode in order:
            if r == 0 and bench.warmup > 0:  # the first warm-up round counts FLOPs
                flops[mode] = step.flops(mode)
            else:
                seconds = step(mode)
                if r >= bench.warmup:
                    times[mode].append(seconds)
            bar.update(1)
    bar.close()
    memory = {mode: step.peak_memory_mb(mode) for mode in bench.modes}
    base_time = statistics.median(times["none"])
    cases = []
    for mode in bench.modes:
        median = statistics.median(times[mode])
        cases.append({
            "smoothing": mode, "frames": bench.frames, "size": bench.size,
            "median_step_s": round(median, 5),
            "step_s_all": [round(t, 5) for t in times[mode]],
            "peak_memory_mb": round(memory[mode], 1),
            "time_ratio_to_none": round(median / base_time, 4),
            "memory_ratio_to_none": round(memory[mode] / memory["none"], 4),
            "step_tflop": round(flops[mode] / 1e12, 4),
            "achieved_tflops": round(flops[mode] / 1e12 / median, 3),
        })  # fmt: skip
    env = environment(device)
    return {
        "benchmark": "tune-step",
        "settings": {**bench.__dict__, "modes": list(bench.modes)},
        "trainable_parameters": step.trainable,
        "memory_kind": "peak CUDA allocated" if device.type == "cuda" else "peak process RSS",
        "cases": cases,
        "device": env.get("device_name", str(device)),
        "versions": env,
    }
