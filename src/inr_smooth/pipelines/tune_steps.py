"""The steps of a tuning run (:func:`~inr_smooth.pipelines.tune.tune`), on shared state."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
import yaml

from ..config import config_to_dict
from ..outputs import write_errors
from ..runlog import RunLog
from .tune_config import PreparedTune
from .tune_run import INVERTED_LATENTS, RunFolder

__all__ = ["TuneSession"]


class TuneSession:
    """Model, latents and run log of one tuning run; each method is one step of ``tune``."""

    def __init__(self, prepared: PreparedTune, run: RunFolder, frames: np.ndarray, digest: str,
                 *, progress: bool) -> None:  # fmt: skip
        from accelerate import Accelerator

        from .tune import _mixed_precision, resolve_device

        self.prepared, self.config, self.run = prepared, prepared.config, run
        self.frames, self.digest, self.progress = frames, digest, progress
        device = resolve_device(self.config.device)
        self.accelerator = Accelerator(
            mixed_precision=_mixed_precision(self.config, device), cpu=device.type == "cpu"
        )
        self.device = self.accelerator.device
        self.log = RunLog(self.device)
        self.log.info["config"] = config_to_dict(self.config)
        self.log.info["config_sources"] = prepared.sources
        self.weights_dir = run.output / "weights"
        self.losses: list = list(run.checkpoint.extra.get("loss", [])) if run.checkpoint else []
        self.log.series["loss"] = self.losses

    # ------------------------------------------------------------------ checks
    def check_memory(self) -> None:
        """Refuse (one line) a run whose estimated peak exceeds the free memory."""
        from .memory import check_fits, run_memory

        c, info = self.config, self.prepared.model
        architecture = "controlvideo" if c.controlnets else "tune_a_video"
        inflation = (("attention", c.attention), ("architecture", architecture))
        train = run_memory(info.source, inflation, tuple(c.trainable), batch=1, training=True,
                           checkpointing=c.gradient_checkpointing)  # fmt: skip
        sample = run_memory(info.source, inflation, None, batch=2, training=False)  # guidance

        def estimate(frames: int, size: int):
            return max(train.estimate(frames, size), sample.estimate(frames, size),
                       key=lambda e: e.peak)  # fmt: skip

        found = check_fits(estimate, c.frames, c.size, info.size_multiple, self.device)
        self.log.info["memory_estimate_mb"] = round(found.peak / 2**20, 1)

    # ------------------------------------------------------------------ steps
    def load(self) -> None:
        """The base model, the prompt embeddings and the source's latents (distribution)."""
        from ..video_io import video_to_tensor
        from .components import encode_prompts, encode_video_distribution, load_parts
        from .controlvideo import prepare_control

        self.parts = load_parts(self.prepared.model.source, device=self.device)
        self.control = prepare_control(self.config, self.run.maps, self.parts, self.device)
        self.prompt_embeds = encode_prompts(self.parts, [self.config.prompt])
        video = video_to_tensor(self.frames)[None].to(self.device)
        self.latent_mean, self.latent_std = encode_video_distribution(self.parts.vae, video)

    @property
    def inversion_prompt(self) -> str:
        """Tune-A-Video inverts with the empty prompt, ControlVideo with the source caption."""
        return self.config.prompt if self.config.controlnets else ""

    def config_yaml(self) -> str:
        return yaml.safe_dump(config_to_dict(self.config), sort_keys=False)

    def tune(self) -> None:
        """The tuning loop; checkpoints carry the resolved config and the loss history. With
        ControlNets, ControlVideo's model: the UNet and its ControlNets, tuned together."""
        from ..models import inflate_unet, set_trainable
        from ..models.controlnet import set_controlled_trainable
        from .controlvideo import controlled_model
        from .trainer import LoopSettings, cast_frozen_, run_tuning_loop

        c = self.config
        video_unet = inflate_unet(
            self.parts.unet, attention=c.attention, group_norm=c.group_norm,
            architecture="controlvideo" if self.control else "tune_a_video",
        )  # fmt: skip
        model = video_unet
        if self.control:
            model = controlled_model(video_unet, self.control, c, self.parts)
            set_controlled_trainable(model, c.trainable)
        else:
            set_trainable(video_unet, c.trainable)
        if self.accelerator.mixed_precision in ("bf16", "fp16"):  # frozen weights: half memory
            low = torch.bfloat16 if self.accelerator.mixed_precision == "bf16" else torch.float16
            cast_frozen_(model, low)
        if c.gradient_checkpointing:
            model.enable_gradient_checkpointing()
        settings = LoopSettings(steps=c.steps, learning_rate=c.learning_rate,
                                use_8bit_adam=c.use_8bit_adam,
                                checkpoint_every=c.checkpoint_every, seed=c.seed)  # fmt: skip
        self.model = run_tuning_loop(
            model, self._step_fn(), settings, self.run.output, accelerator=self.accelerator,
            resume=self.run.checkpoint or False, on_step=self._on_step,
            validate_every=c.validate_every, validate=self._validate,
            checkpoint_extra=self._checkpoint_extra, progress=self.progress,
        )  # fmt: skip
        self.video_unet = self.model.unet if self.control else self.model
        self.log.info["trainable_parameters"] = sum(
            p.numel() for p in self.model.parameters() if p.requires_grad
        )

    def save_weights(self) -> None:
        """The tuned tensors and ``tune.json``, atomically, as soon as tuning ends."""
        from ..models import save_video_unet_weights
        from .tune import write_record

        folder = self.weights_dir
        tmp = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            with write_errors(folder):
                save_video_unet_weights(self.video_unet, tmp)
                write_record(tmp, self.config, self.frames.shape, self.digest, self.config.steps)
                if self.control:  # ControlVideo: the tuned ControlNets and their maps
                    from .controlvideo import save_control

                    save_control(tmp, self.model, self.control, self.config)
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.write_log()  # the loss history is safe from here on, whatever happens next

    def load_tuned_weights(self) -> None:
        """``--resume`` after tuning had finished: the saved weights, no tuning."""
        from ..models import load_video_unet_weights
        from .controlvideo import load_control

        self.video_unet = load_video_unet_weights(self.parts.unet, self.weights_dir)
        self.video_unet.to(self.device).eval()
        self.model = load_control(self.weights_dir, self.video_unet, self.parts,
                                  inference_steps=self.config.inference_steps,
                                  device=self.device)  # fmt: skip
        previous = self.run.output / "log.json"
        if previous.is_file():
            import json

            self.losses[:] = json.loads(previous.read_text()).get("loss", [])

    def inverted_latents(self) -> torch.Tensor:
        """The DDIM-inverted source (saved with the weights, reused by ``--resume``)."""
        from safetensors.torch import load_file, save_file

        from .sampling import invert_source

        path = self.weights_dir / INVERTED_LATENTS
        steps = self.config.inference_steps
        if path.is_file():
            saved = load_file(path)
            if int(saved.get("inference_steps", torch.tensor(-1))) == steps:
                return saved["latents"].to(self.device)
        with self.accelerator.autocast():
            start = invert_source(self.model, self.parts, self.latent_mean,
                                  num_inference_steps=steps, progress=self.progress,
                                  prompt=self.inversion_prompt)  # fmt: skip
        tensors = {"latents": start.detach().float().cpu().contiguous(),
                   "inference_steps": torch.tensor(steps)}  # fmt: skip
        tmp = path.with_name(f".{path.name}.tmp")
        with write_errors(path):
            save_file(tensors, tmp)
            tmp.replace(path)
        return start

    def generate(self, start: torch.Tensor) -> list[Path]:
        """One video per edit prompt (those a resumed run has not written yet)."""
        from .sampling import sample_names, sample_videos, write_samples

        c = self.config
        prompts = list(dict.fromkeys(c.edit_prompts))
        folder = self.run.output / "samples"
        names = sample_names(prompts)
        todo = [p for p, n in zip(prompts, names, strict=True)
                if not (folder / f"{n}.gif").is_file()]  # fmt: skip
        with self.accelerator.autocast():
            videos = sample_videos(self.model, self.parts, start, todo,
                                   guidance_scale=c.guidance_scale,
                                   num_inference_steps=c.inference_steps, progress=self.progress)
        written = write_samples(folder, todo, videos, source=self.frames, fps=c.fps,
                                names=[names[prompts.index(p)] for p in todo])  # fmt: skip
        self.log.info["samples"] = dict(zip(prompts, names, strict=True))
        return written

    def write_log(self) -> None:
        self.log.write(self.run.output / "log.json")

    # ------------------------------------------------------------------ callbacks
    def _step_fn(self):
        from .training import training_step

        c = self.config
        noise_scheduler = _ddpm(self.parts.scheduler)
        mean, std = self.latent_mean, self.latent_std

        def step_fn(model, generator):
            latents = mean
            if c.latent_sampling == "posterior":  # Tune-A-Video: a VAE sample every step
                eps = torch.randn(mean.shape, generator=generator, device=generator.device)
                latents = mean + std * eps.to(mean.device)
            return training_step(
                model, latents, self.prompt_embeds, noise_scheduler, smoothing=c.smoothing,
                smooth_weight=c.weight, alpha=c.alpha, beta=c.beta, chain=c.chain,
                detach_anchor=c.detach_anchor, lambda_factor=c.lambda_factor,
                generator=generator,
            )  # fmt: skip

        return step_fn

    def _on_step(self, step, out) -> None:
        self.losses.append(
            [step, float(out.loss.detach()), float(out.diffusion_loss), float(out.smoothing_loss)]
        )

    def _checkpoint_extra(self) -> dict:
        return {"config": {**config_to_dict(self.config), "video_digest": self.digest},
                "loss": self.losses}  # fmt: skip

    def _validate(self, step, model) -> None:
        from .sampling import invert_source, sample_videos, write_samples

        c = self.config
        prompts = (c.edit_prompts or (c.prompt,))[:1]
        start = invert_source(model, self.parts, self.latent_mean,
                              num_inference_steps=c.inference_steps, progress=False,
                              prompt=self.inversion_prompt)
        videos = sample_videos(model, self.parts, start, prompts, guidance_scale=c.guidance_scale,
                               num_inference_steps=c.inference_steps, progress=False)
        folder = self.run.output / "validation" / f"step-{step}"
        write_samples(folder, prompts, videos, source=None, fps=c.fps)  # fmt: skip


def _ddpm(scheduler):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(scheduler.config)
