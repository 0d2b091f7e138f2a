"""Training-free, inversion-based video editing with INR inversion noise (``inr-smooth edit``).

FateZero's recipe, with INR(TF) (spec §4) as a switch. :class:`EditPipeline` runs:

1. read the source frames and VAE-encode them;
2. DDIM-invert the latents with the source prompt (no guidance), storing the attention that
   fusion reuses (:mod:`.attention_fusion`), or load both from the inversion cache
   (:mod:`.inversion_cache`);
3. INR inversion noise: with ``apply_at="final_step"`` the last inversion step is redone with
   ``eps_star = (1 - gamma) eps_inv + gamma eps_inr``, so only the final latent ``z_K`` moves;
   with ``"every_step"`` INR already entered every step of 2.; ``gamma = 0`` is plain inversion;
4. DDIM-sample from there with the edit prompt and classifier-free guidance, cross-frame
   attention (FateZero's first + previous frame, ``"sparse_causal"``, by default), attention
   fusion in the first ``self_replace`` steps and prompt-to-prompt control of the
   cross-attention in the ``cross_replace`` steps (:mod:`.fatezero`, :mod:`.p2p_attention`);
5. decode with the VAE;
6. write ``<prompt>.mp4``, ``.gif``, ``<prompt>-side-by-side.mp4`` (source | edit),
   ``config.yaml`` and ``log.json`` (time and peak memory per stage, attention store size,
   cache hit) into a temporary folder that is renamed to ``output`` at the end.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from ..config import config_to_dict
from ..inversion import DDIMSchedule, ddim_invert, ddim_sample
from ..model_info import describe_model
from ..models import VideoUNet, inflate_unet
from ..outputs import atomic_folder
from ..relations import inr_inversion_noise
from ..runlog import RunLog
from ..video_io import tensor_to_video, video_to_tensor
from .attention_fusion import (
    AttentionFusion,
    FusionPlan,
    blend_token_positions,
    estimate_store_bytes,
    fusion_installed,
    fusion_layers,
    replace_steps,
)
from .attention_store import AttentionStore
from .components import decode_video, encode_prompts, encode_video, load_parts
from .edit_config import (
    EDIT_DEFAULTS,
    EditConfig,
    PreparedEdit,
    check_output,
    prepare_edit,
    read_source,
    usable_cache_dir,
)
from .fatezero import new_prompt_control, plan_prompt_control
from .guidance import guided_noise_fn
from .inversion_cache import (
    InvertedVideo,
    cache_key,
    cache_path,
    frames_digest,
    load_inversion,
    model_identity,
    save_inversion,
)
from .p2p_attention import estimate_control_bytes, prompt_control_installed
from .sampling import write_samples
from .settings import resolve_model_fields
from .tune import resolve_device

__all__ = ["EditConfig", "EditPipeline", "EditResult", "edit", "inr_start_latents"]

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
CPU_STORE_BUDGET = 512 * 2**20  # "auto": keep the store in RAM up to this size on a CPU


@dataclass
class EditResult:
    output: Path  # the run folder
    files: list[Path]  # the videos written
    latents: Tensor  # the edited latents (1, c, f, h, w)
    start_latents: Tensor  # z_K*, where sampling started
    cache_hit: bool = False
    log: dict = field(default_factory=dict)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {name!r}")
    return DTYPES[name]


def inr_start_latents(
    inverted: InvertedVideo, schedule: DDIMSchedule, config: EditConfig
) -> Tensor:
    """``z_K*``, where sampling starts (spec §4). With ``"final_step"`` the last inversion step
    is redone from ``z_(K-1)`` with ``eps_star``: the same numbers as :func:`ddim_invert` with
    ``apply_at="final_step"`` gives, but without repeating the inversion."""
    if config.apply_at == "every_step" or config.inversion_weight == 0:
        return inverted.final_latents
    last = len(schedule) - 1
    z_prev, eps = inverted.penultimate_latents, inverted.final_noise_pred
    if config.noise_source == "gaussian":
        generator = torch.Generator().manual_seed(config.seed)
        rho = torch.randn(eps.shape, generator=generator).to(eps.device)
    else:  # the noise implied by the plain inverted latent
        plain = schedule.invert_step(z_prev, eps, last)
        rho = schedule.implied_noise(plain, inverted.source_latents, last)
    eps_star = inr_inversion_noise(
        eps, rho, gamma=config.inversion_weight, alpha=config.alpha, beta=config.beta,
        chain=config.chain,
    )  # fmt: skip
    return schedule.invert_step(z_prev, eps_star, last)


class EditPipeline:
    """Inversion-based editing of one video; ``__call__`` runs the numbered steps."""

    def __init__(self, parts, video_unet, config: EditConfig, *, log=None, progress=True,
                 overwrite: bool = False):  # fmt: skip
        if any(getattr(config, k) is None for k in EDIT_DEFAULTS):  # as prepare_edit does
            info = describe_model(parts.source)
            config = resolve_model_fields(config, info, "edit", EDIT_DEFAULTS)[0]
        self.parts = parts
        self.video_unet = video_unet
        self.config = config
        self.progress = progress
        self.overwrite = overwrite
        self.cache_dir = usable_cache_dir(config.cache_dir)
        self.device = next(video_unet.parameters()).device
        self.schedule = DDIMSchedule.from_scheduler(parts.scheduler, config.inference_steps)
        self.log = log or RunLog(self.device)
        self.log.info["config"] = config_to_dict(config)
        self._check_size()
        self.plan = self._plan()
        self.control_plan, self.control = self._prompt_control()

    @classmethod
    def from_config(cls, config: EditConfig | PreparedEdit, *, progress: bool = True,
                    overwrite: bool = False) -> EditPipeline:  # fmt: skip
        """Load the model and inflate its UNet (cross-frame attention, no temporal layers)."""
        prepared = config if isinstance(config, PreparedEdit) else prepare_edit(config)
        config = prepared.config
        device = resolve_device(config.device)
        log = RunLog(device)
        log.info["config_sources"] = prepared.sources
        with log.stage("load"):
            dtype = resolve_dtype(config.dtype, device)
            parts = load_parts(prepared.model.source, device=device, dtype=dtype)
            video_unet = inflate_unet(
                parts.unet, attention=config.attention, temporal_attention=False,
                cross_frame_min_channels=config.cross_frame_min_channels,
            )  # fmt: skip
        return cls(parts, video_unet, config, log=log, progress=progress, overwrite=overwrite)

    @torch.no_grad()
    def __call__(self, frames: np.ndarray | None = None) -> EditResult:
        config, log = self.config, self.log
        # 1. read the source frames and encode them
        with log.stage("encode"):
            frames = read_source(config) if frames is None else frames
            video = video_to_tensor(frames)[None].to(self.device)  # (1, 3, f, h, w)
            latents = encode_video(self.parts.vae, video).float()  # (1, c, f, h, w)
        # 2. DDIM inversion with the source prompt, storing attention (or from the cache)
        with log.stage("inversion"):
            inverted, hit = self.invert_cached(latents, frames)
        try:
            # 3. INR inversion noise: the latents sampling starts from
            start = inr_start_latents(inverted, self.schedule, config)
            # 4. DDIM sampling with the edit prompt, guidance and attention fusion
            with log.stage("sampling"):
                edited = self.sample(start, inverted.store)
        finally:
            if inverted.store is not None:
                log.info["attention_store"] = inverted.store.report()
                inverted.store.close()
        # 5. decode
        with log.stage("decode"):
            result = tensor_to_video(decode_video(self.parts.vae, edited))
        # 6. write the videos, the side-by-side with the source, the config and the log
        output, files = self.write(frames, result)
        return EditResult(output, files, edited, start, hit, log.to_dict())

    # ------------------------------------------------------------------ steps
    def invert(self, latents: Tensor) -> InvertedVideo:
        """DDIM-invert ``z_0`` with the source prompt, recording attention for fusion."""
        c = self.config
        store = self._new_store(latents) if self.plan or self.control_plan else None
        fusion = AttentionFusion(self.plan, store) if self.plan else None
        control = new_prompt_control(self.control_plan, None, store, c.inference_steps)
        noise_fn = guided_noise_fn(self.video_unet, self._embeds(c.source_prompt))
        if fusion is not None:
            noise_fn = fusion.stepped(noise_fn, self.schedule.timesteps)
        if control is not None:
            noise_fn = control.stepped(noise_fn, self.schedule.timesteps)
        inr = {}
        if c.apply_at == "every_step":
            inr = dict(
                inversion_weight=c.inversion_weight, alpha=c.alpha, beta=c.beta, chain=c.chain,
                apply_at="every_step", noise_source=c.noise_source,
                generator=torch.Generator().manual_seed(c.seed),
            )  # fmt: skip
        try:
            with (
                fusion_installed(self.video_unet, fusion, "record"),
                prompt_control_installed(self.video_unet, control, "record"),
            ):
                trajectory = ddim_invert(
                    latents, noise_fn, self.schedule, progress=self.progress, **inr
                )
        except BaseException:
            if store is not None:
                store.close()
            raise
        z = trajectory.latents
        return InvertedVideo(z[0], z[-2], trajectory.noise_preds[-1], z[-1], store)

    def invert_cached(self, latents: Tensor, frames: np.ndarray) -> tuple[InvertedVideo, bool]:
        """:meth:`invert`, through the inversion cache when ``cache_dir`` is set. A corrupt or
        foreign cache file is recomputed, and a cache that cannot be written only warned
        about: the cache never makes an edit fail."""
        if not self.cache_dir:
            return self.invert(latents), False
        material = self.cache_material(frames)
        path = cache_path(self.cache_dir, cache_key(material))
        cached = load_inversion(path, material, self.device)
        self.log.info["cache"] = {"path": str(path), "hit": cached is not None}
        if cached is not None:
            return cached, True
        inverted = self.invert(latents)
        try:
            save_inversion(path, inverted, material)
        except (OSError, ValueError) as exc:  # disk full, read-only, SafetensorError...
            warnings.warn(f"could not write the inversion cache {path} ({exc}): the edit goes "
                          "on without it", stacklevel=2)  # fmt: skip
            self.log.info["cache"]["saved"] = False
        except BaseException:
            if inverted.store is not None:
                inverted.store.close()
            raise
        return inverted, False

    def sample(self, start: Tensor, store: AttentionStore | None) -> Tensor:
        """DDIM-sample from ``start`` with the edit prompt, guidance and attention fusion."""
        c = self.config
        noise_fn = guided_noise_fn(
            self.video_unet, self._embeds(c.prompt), self._embeds(""), c.guidance_scale
        )
        fusion = AttentionFusion(self.plan, store) if self.plan and store is not None else None
        if fusion is not None:
            noise_fn = fusion.stepped(noise_fn, self.schedule.timesteps)
        control = None
        if store is not None:
            control = new_prompt_control(self.control_plan, self.control, store, c.inference_steps)
        if control is not None:
            noise_fn = control.stepped(noise_fn, self.schedule.timesteps)
        with (
            fusion_installed(self.video_unet, fusion, "edit"),
            prompt_control_installed(self.video_unet, control, "edit"),
        ):
            return ddim_sample(start, noise_fn, self.schedule, progress=self.progress)

    def write(self, frames: np.ndarray, video: np.ndarray) -> tuple[Path, list[Path]]:
        """Write the outputs into a temporary folder that becomes ``output`` when complete."""
        output = Path(self.config.output).expanduser()
        check_output(output, overwrite=self.overwrite)
        with atomic_folder(output, overwrite=self.overwrite) as tmp:
            with self.log.stage("write"):
                files = write_samples(
                    tmp, [self.config.prompt], [video], source=frames, fps=self.config.fps
                )
                (tmp / "config.yaml").write_text(
                    yaml.safe_dump(config_to_dict(self.config), sort_keys=False)
                )
            self.log.write(tmp / "log.json")
        return output, [output / path.name for path in files]

    # ------------------------------------------------------------------ helpers
    def cache_material(self, frames: np.ndarray) -> dict:
        """Everything the inversion (latents and stored attention) depends on."""
        c = self.config
        material = {
            "frames": frames_digest(frames),
            "source_prompt": c.source_prompt,
            **model_identity(self.parts.source),
            "dtype": str(next(self.video_unet.parameters()).dtype),
            "inference_steps": c.inference_steps,
            "attention": c.attention,
            "fusion": self.plan.to_dict() if self.plan else None,
        }
        if self.control_plan is not None:
            material["prompt_control"] = self.control_plan.to_dict()
        if c.cross_frame_min_channels:
            material["cross_frame_min_channels"] = c.cross_frame_min_channels
        if c.apply_at == "every_step" and c.inversion_weight > 0:
            material["inr"] = {
                "inversion_weight": c.inversion_weight, "alpha": c.alpha, "beta": c.beta,
                "chain": c.chain, "noise_source": c.noise_source, "seed": c.seed,
            }  # fmt: skip
        return material

    def _embeds(self, prompt: str) -> Tensor:
        return encode_prompts(self.parts, [prompt])

    def _check_size(self) -> None:
        scale = self.parts.vae_scale_factor
        halvings = len(self.parts.unet.config.block_out_channels) - 1
        multiple = scale * 2**halvings
        if self.config.size % multiple:
            raise ValueError(
                f"size must be a multiple of {multiple} px for this model (VAE scale "
                f"{scale}, {halvings} UNet downsamplings), got {self.config.size}"
            )

    def _plan(self) -> FusionPlan | None:
        c = self.config
        steps = replace_steps(c.inference_steps, c.self_replace)
        if not steps:
            self.log.info["fusion"] = {"layers": 0, "steps": 0}
            return None
        if not isinstance(self.video_unet, VideoUNet):
            raise ValueError(
                "attention fusion (self_replace > 0) needs a VideoUNet, got "
                f"{type(self.video_unet).__name__}"
            )
        layers = fusion_layers(self.video_unet, c.fusion_min_downsample)
        tokens = ()
        if c.blend_words:
            tokens = blend_token_positions(self.parts.tokenizer, c.source_prompt, c.blend_words)
            if not layers:
                raise ValueError(
                    f"blend words need fusion layers, but no attention layer is "
                    f"{c.fusion_min_downsample}x smaller than the latent in this UNet"
                )
        self.log.info["fusion"] = {"layers": len(layers), "steps": len(steps), "tokens": tokens}
        if not layers:
            return None
        return FusionPlan(layers, steps, tokens, c.blend_threshold)

    def _prompt_control(self):
        """Prompt-to-prompt plan and controller (:func:`~.fatezero.plan_prompt_control`)."""
        steps = self.plan.steps if self.plan else frozenset()
        tokens = self.plan.blend_tokens if self.plan else ()
        plan, control, info = plan_prompt_control(
            self.video_unet, self.parts.tokenizer, self.config, steps, tokens
        )
        self.log.info["prompt_control"] = info
        return plan, control

    def _new_store(self, latents: Tensor) -> AttentionStore:
        location = self.config.attention_store
        shape = dict(num_frames=latents.shape[0] * latents.shape[2],
                     latent_hw=tuple(latents.shape[-2:]))  # fmt: skip
        need = estimate_store_bytes(self.video_unet, self.plan, **shape) if self.plan else 0
        if self.control_plan is not None:
            need += estimate_control_bytes(self.video_unet, self.control_plan, **shape)
        if location == "auto":
            if self.device.type == "cuda":
                budget = torch.cuda.mem_get_info(self.device)[0] // 4
            else:
                budget = CPU_STORE_BUDGET
            location = "device" if need <= budget else "disk"
        self.log.info["attention_store_estimate_mb"] = round(need / 2**20, 3)
        spill_dir = Path(self.cache_dir or tempfile.gettempdir()).expanduser()
        if location == "disk":
            spill_dir.mkdir(parents=True, exist_ok=True)
        return AttentionStore(location, spill_dir=spill_dir)


def edit(config: EditConfig | PreparedEdit, *, overwrite: bool = False, memory_check: bool = True,
         progress: bool = True) -> EditResult:  # fmt: skip
    """Edit ``config.video`` as ``config.prompt`` says; see the module docstring
    (``editor="video-p2p"``: :mod:`.video_p2p`).

    Settings, the output folder (empty, or replaced with ``overwrite``), the video and the
    memory the run needs are checked before the model loads."""
    prepared = config if isinstance(config, PreparedEdit) else prepare_edit(config)
    config = prepared.config
    if config.editor == "video-p2p":  # Video-P2P's editor: pipelines/video_p2p.py
        from .video_p2p import edit_video_p2p

        return edit_video_p2p(prepared, overwrite=overwrite, memory_check=memory_check,
                              progress=progress)  # fmt: skip
    check_output(Path(config.output).expanduser(), overwrite=overwrite)
    frames = read_source(config)  # bad video input fails before the model loads
    if memory_check:
        check_edit_memory(prepared)
    return EditPipeline.from_config(prepared, progress=progress, overwrite=overwrite)(frames)


def check_edit_memory(prepared: PreparedEdit) -> None:
    """Refuse (one line) an edit whose estimated peak exceeds the free memory."""
    from .memory import check_fits, run_memory

    c, info = prepared.config, prepared.model
    inflation = (("attention", c.attention), ("temporal_attention", False),
                 ("cross_frame_min_channels", c.cross_frame_min_channels))  # fmt: skip
    memory = run_memory(info.source, inflation, None, batch=2, training=False)  # 2: guidance
    check_fits(memory.estimate, c.frames, c.size, info.size_multiple, resolve_device(c.device))
