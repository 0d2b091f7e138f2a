"""Benchmark of training-free editing: plain inversion vs INR(TF), side by side in one run.

Each mode edits the same frames with the same model and settings; only the inversion noise
differs: ``plain`` (gamma 0), ``inr-final`` (gamma 1, ``apply_at="final_step"``) and
``inr-every`` (gamma 1, ``"every_step"``). Modes are interleaved and rotated over rounds; each
mode reports the median of its rounds for inversion, sampling and total time, and the peak
device memory and peak CPU RSS over its stages. ``editor`` picks FateZero's editor (default)
or Video-P2P's (training-free: the base model inflated as T2S does; its null-text optimisation
is a stage of its own, skipped with ``fast``); the UNet is inflated as the editor's config says.
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..models import inflate_unet
from ..pipelines.components import StableDiffusionParts, load_parts
from ..pipelines.edit import EditConfig, EditPipeline
from ..pipelines.tune import resolve_device
from ..pipelines.video_p2p_config import video_p2p_defaults
from ..runlog import RunLog, environment
from ..synthetic import Scene, render
from .models import SD15_UNET_CONFIG

__all__ = ["EDIT_MODES", "EditBench", "run_edit_bench"]

_EDITORS = {"fatezero": "FateZero's editor", "video-p2p": "Video-P2P's editor"}

EDIT_MODES = {
    "plain": {"inversion_weight": 0.0},
    "inr-final": {"inversion_weight": 1.0, "apply_at": "final_step"},
    "inr-every": {"inversion_weight": 1.0, "apply_at": "every_step"},
}
SD15_VAE_CONFIG = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "sample_size": 512,
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
}  # fmt: skip
SD15_TEXT_CONFIG = {  # CLIP ViT-L/14's text tower
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
}  # fmt: skip


@dataclass(frozen=True)
class EditBench:
    model: str = "tiny"  # tiny | sd15-arch | a model folder or hub id
    frames: int = 8
    size: int = 64
    inference_steps: int = 50
    modes: tuple[str, ...] = tuple(EDIT_MODES)
    repeats: int = 3
    warmup: int = 1
    dtype: str = "auto"
    device: str = "auto"
    editor: str = "fatezero"  # fatezero | video-p2p
    fast: bool = False  # video-p2p: no null-text optimisation

    def __post_init__(self) -> None:
        if self.editor not in _EDITORS or (self.fast and self.editor != "video-p2p"):
            raise ValueError(f"editor must be fatezero or video-p2p (fast: video-p2p only), got "
                             f"{self.editor!r}, fast={self.fast}")  # fmt: skip
        unknown = [m for m in self.modes if m not in EDIT_MODES]
        if unknown or "plain" not in self.modes:
            raise ValueError(f"modes must include 'plain' and be among {list(EDIT_MODES)}")
        if (self.size % 8 or self.frames < 2 or self.repeats < 1 or self.warmup < 0
                or self.inference_steps < 1):  # fmt: skip
            raise ValueError(
                f"expected size a multiple of 8, frames >= 2, repeats >= 1, warmup >= 0, "
                f"steps >= 1; got size={self.size}, frames={self.frames}, "
                f"repeats={self.repeats}, warmup={self.warmup}, steps={self.inference_steps}"
            )


def _parts(model: str, device: torch.device, dtype: torch.dtype) -> StableDiffusionParts:
    if model == "tiny":
        from ..tiny import save_tiny_stable_diffusion

        folder = save_tiny_stable_diffusion(Path(tempfile.mkdtemp(prefix="inr-bench-")))
        return load_parts(str(folder), device=device, dtype=dtype)
    if model != "sd15-arch":
        return load_parts(model, device=device, dtype=dtype)
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from ..mini import MINI_MODEL_DIR
    from ..tiny import SD_SCHEDULER_CONFIG

    with torch.device(device):  # random weights: speed and memory do not depend on them
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        vae = AutoencoderKL(**SD15_VAE_CONFIG, scaling_factor=0.18215)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT_CONFIG))
    tokenizer = CLIPTokenizer.from_pretrained(MINI_MODEL_DIR / "tokenizer")  # CLIP's vocabulary
    modules = [m.to(dtype).eval().requires_grad_(False) for m in (text_encoder, vae, unet)]
    return StableDiffusionParts(tokenizer, *modules, DDIMScheduler(**SD_SCHEDULER_CONFIG), model)


def run_edit_bench(bench: EditBench, *, progress: bool = True) -> dict:
    """Run the benchmark; returns the JSON-ready report."""
    from tqdm.auto import tqdm

    from ..pipelines.edit import resolve_dtype

    device = resolve_device(bench.device)
    parts = _parts(bench.model, device, resolve_dtype(bench.dtype, device))
    scene = Scene(color="red", shape="circle", motion="right")
    frames = render(scene, bench.frames, bench.size)
    base = EditConfig(
        video="(in memory)", source_prompt=scene.caption,
        prompt=scene.edited(color="green").caption,
        model=bench.model, frames=bench.frames, size=bench.size,
        inference_steps=bench.inference_steps, dtype=bench.dtype, device=bench.device,
        editor=bench.editor, fast=bench.fast,
    )  # fmt: skip
    pipeline, video_unet = _editor(bench, parts, base)
    if bench.editor == "video-p2p":
        base = video_p2p_defaults(base)[0]
    stages: dict[str, list[dict]] = {mode: [] for mode in bench.modes}
    rounds = bench.warmup + bench.repeats
    bar = tqdm(total=rounds * len(bench.modes), desc="edit bench", disable=not progress)
    with tempfile.TemporaryDirectory(prefix="inr-bench-edit-") as tmp:
        for r in range(rounds):
            k = r % len(bench.modes)
            for mode in bench.modes[k:] + bench.modes[:k]:
                config = replace(base, output=f"{tmp}/{mode}-{r}", **EDIT_MODES[mode])
                log = RunLog(device)
                pipeline(parts, video_unet, config, log=log, progress=False)(frames)
                if r >= bench.warmup:
                    stages[mode].append(log.stages)
                bar.update(1)
    bar.close()
    return _report(bench, stages, device)


def _editor(bench: EditBench, parts, base: EditConfig):
    """The pipeline class and the video UNet, inflated as the editor's config says."""
    if bench.editor == "video-p2p":
        from ..pipelines.video_p2p import VideoP2PPipeline, load_video_p2p_unet

        return VideoP2PPipeline, load_video_p2p_unet(parts, video_p2p_defaults(base)[0])
    video_unet = inflate_unet(parts.unet, attention=base.attention, temporal_attention=False,
                              cross_frame_min_channels=base.cross_frame_min_channels)  # fmt: skip
    return EditPipeline, video_unet


def _report(bench: EditBench, stages: dict[str, list[dict]], device: torch.device) -> dict:
    def median(mode: str, names: tuple[str, ...]) -> float:
        return statistics.median(
            sum(s.get(n, {}).get("seconds", 0.0) for n in names) for s in stages[mode]
        )

    def peak(mode: str, key: str) -> float | None:
        values = [v.get(key) for s in stages[mode] for v in s.values() if v.get(key) is not None]
        return max(values) if values else None

    everything = ("encode", "inversion", "null_text", "sampling", "decode")
    base = median("plain", everything)
    cases = []
    for mode in bench.modes:
        total = median(mode, everything)
        cases.append({
            "mode": mode, **EDIT_MODES[mode], "frames": bench.frames, "size": bench.size,
            "inference_steps": bench.inference_steps,
            "inversion_s": round(median(mode, ("inversion",)), 4),
            "null_text_s": round(median(mode, ("null_text",)), 4),
            "sampling_s": round(median(mode, ("sampling",)), 4),
            "total_s": round(total, 4), "time_ratio_to_plain": round(total / base, 4),
            "peak_device_memory_mb": peak(mode, "peak_device_memory_mb"),
            "peak_cpu_rss_mb": peak(mode, "peak_cpu_rss_mb")
            or peak(mode, "peak_cpu_rss_mb_process"),
        })  # fmt: skip
    env = environment(device)
    return {
        "benchmark": "edit",
        "settings": {**bench.__dict__, "modes": list(bench.modes)},
        "cases": cases,
        "device": env.get("device_name", str(device)),
        "versions": env,
    }


def edit_table(report: dict) -> str:
    s = report["settings"]
    null_text = s.get("editor") == "video-p2p" and not s.get("fast")
    lines = [
        f"Edit benchmark ({_EDITORS[s.get('editor', 'fatezero')]}"
        f"{', fast' if s.get('fast') else ''}): model `{s['model']}`, {s['frames']} frames at "
        f"{s['size']} px, {s['inference_steps']} + {s['inference_steps']} DDIM steps, device "
        f"{report['device']}; median of {s['repeats']} interleaved rounds.",
        "",
        "| mode | gamma | inversion (s) | " + ("null-text (s) | " if null_text else "")
        + "sampling (s) | total (s) | total / plain | peak device MB | peak CPU RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if null_text else ""),
    ]
    for c in report["cases"]:
        device_mb = (
            "–" if c["peak_device_memory_mb"] is None else f"{c['peak_device_memory_mb']:.0f}"
        )
        extra = f"| {c['null_text_s']:.3f} " if null_text else ""
        lines.append(
            f"| {c['mode']} | {c['inversion_weight']:g} | {c['inversion_s']:.3f} {extra}"
            f"| {c['sampling_s']:.3f} | {c['total_s']:.3f} | {c['time_ratio_to_plain']:.3f} "
            f"| {device_mb} | {c['peak_cpu_rss_mb']:.0f} |"
        )
    return "\n".join(lines) + "\n"
