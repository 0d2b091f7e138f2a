"""Video-P2P's editor (``inr-smooth edit --editor video-p2p``), with INR(TF) inversion noise.

Video-P2P (Liu et al. 2023; ShaoTengLiu/Video-P2P 92d2b52, ``run_videop2p.py``) edits a video
with a model tuned on it by T2S (``inr-smooth tune`` with :func:`~.video_p2p_config.t2s_config`
or ``configs/tune/video-p2p-rabbit.yaml``; ``weights``), or, without weights, with the base
image model inflated as T2S inflates it (frame attention, zero-initialised temporal attention,
GroupNorm over the frames): a training-free edit. :class:`VideoP2PPipeline` runs:

1. read the source frames and VAE-encode them (the posterior's mean);
2. the pivot: DDIM inversion with the source prompt, no guidance (with INR at every step for
   ``apply_at="every_step"``) -- or from the inversion cache;
3. INR inversion noise on the start latent, as ``edit`` does (:func:`~.edit.inr_start_latents`;
   gamma 0.5 by default here, the paper's value for Video-P2P);
4. null-text optimisation (:mod:`inr_smooth.null_text`) from that start along the pivot: one
   unconditional embedding per step, shared by the frames, cached with the inversion; skipped
   by ``fast`` (Video-P2P's ``--fast``);
5. DDIM sampling of the batch ``[source, edit]`` from the start with decoupled guidance
   (:func:`~.guidance.decoupled_noise_fn`: the source row with the step's optimised embedding,
   the edit row with the plain empty prompt's; fast: the source row unguided) and Video-P2P's
   control (:mod:`.video_p2p_control`: prompt-to-prompt on the cross-attention, the source's
   temporal-attention maps for the first ``self_replace`` steps, LocalBlend);
6. decode both rows;
7. write ``<prompt>.mp4`` / ``.gif`` (the edit), ``<prompt>-reconstruction.mp4`` (the source
   row: how well the inversion holds), ``<prompt>-side-by-side.mp4`` (source | reconstruction |
   edit), ``config.yaml`` and ``log.json`` (time and peak memory per stage, the null-text
   optimisation's iterations and losses, the control plan, the cache).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import Tensor

from ..config import config_to_dict
from ..inversion import DDIMSchedule, ddim_invert, ddim_sample
from ..model_info import describe_model
from ..null_text import LEARNING_RATE, NullTextResult, null_text_optimization
from ..outputs import atomic_folder
from ..runlog import RunLog
from ..video_io import tensor_to_video, video_to_tensor, write_side_by_side, write_video
from .components import decode_video, encode_prompts, encode_video, load_parts
from .edit import EditResult, inr_start_latents, resolve_dtype
from .edit_config import (
    EDIT_DEFAULTS,
    EditConfig,
    PreparedEdit,
    check_output,
    prepare_edit,
    read_source,
    usable_cache_dir,
)
from .guidance import decoupled_noise_fn, embedding_noise_fn, guided_noise_fn
from .inversion_cache import (
    InvertedVideo,
    cache_key,
    cache_path,
    frames_digest,
    load_inversion,
    model_identity,
    save_inversion,
)
from .p2p_attention import prompt_control_installed
from .sample_names import sample_names
from .settings import resolve_model_fields
from .tune import resolve_device
from .video_p2p_control import plan_video_p2p_control

__all__ = [
    "NULL_TEXT_EPSILON",
    "VideoP2PPipeline",
    "VideoP2PResult",
    "edit_video_p2p",
    "video_p2p_schedule",
]

NULL_TEXT_EPSILON = 1e-5  # Video-P2P's early_stop_epsilon
EMBEDDINGS = "null_text_embeddings"  # the cache entry's tensor: (K, 1, 77, d)


@dataclass
class VideoP2PResult(EditResult):
    reconstruction: Tensor | None = None  # the source row's latents (1, c, f, h, w)
    null_text: Tensor | None = None  # (K, 1, 77, d); None in fast mode


def load_video_p2p_unet(parts, config: EditConfig):
    """The video UNet: a T2S run's (``weights``), or the base model inflated as T2S does."""
    from ..models import inflate_unet, load_video_unet_weights

    if config.weights:
        try:
            video_unet = load_video_unet_weights(parts.unet, Path(config.weights).expanduser())
        except Exception as exc:  # SafetensorError, shape mismatches: a cut or foreign file
            raise ValueError(f"cannot load the tuned weights in {config.weights}: {exc}") from None
        if video_unet.config.architecture != "tune_a_video":
            raise ValueError(f"{config.weights} is not a T2S / Tune-A-Video model")
        if video_unet.config.attention != config.attention:
            video_unet.set_cross_frame_attention(config.attention)
        return video_unet
    return inflate_unet(parts.unet, attention=config.attention, temporal_attention=True,
                        group_norm="video",
                        cross_frame_min_channels=config.cross_frame_min_channels)  # fmt: skip


def video_p2p_schedule(scheduler, num_steps: int) -> DDIMSchedule:
    """The DDIM levels Video-P2P uses: ``run_videop2p.py`` builds its own ``DDIMScheduler``
    (SD's betas, no clipping, ``set_alpha_to_one=False``) with diffusers' default
    ``steps_offset=0``, so its 50 timesteps are 980 ... 0, not SD's 981 ... 1."""
    config = getattr(scheduler, "config", scheduler)
    return DDIMSchedule.from_scheduler({**config, "steps_offset": 0}, num_steps)


class VideoP2PPipeline:
    """Video-P2P editing of one video; ``__call__`` runs the numbered steps."""

    def __init__(self, parts, video_unet, config: EditConfig, *, log=None, progress=True,
                 overwrite: bool = False):  # fmt: skip
        if config.editor != "video-p2p":
            raise ValueError(
                f"expected an EditConfig with editor='video-p2p', got {config.editor!r}"
            )
        if any(getattr(config, k) is None for k in EDIT_DEFAULTS):  # as prepare_edit does
            config = resolve_model_fields(config, describe_model(parts.source), "edit",
                                          EDIT_DEFAULTS)[0]  # fmt: skip
        self.parts, self.video_unet, self.config = parts, video_unet, config
        self.progress, self.overwrite = progress, overwrite
        self.cache_dir = usable_cache_dir(config.cache_dir)
        self.device = next(video_unet.parameters()).device
        self.schedule = video_p2p_schedule(parts.scheduler, config.inference_steps)
        self.log = log or RunLog(self.device)
        self.log.info["config"] = config_to_dict(config)
        self._check_size()
        self.control, self.log.info["prompt_control"] = plan_video_p2p_control(
            video_unet, parts.tokenizer, config
        )
        self.embeds = {k: encode_prompts(parts, [p]) for k, p in
                       (("source", config.source_prompt), ("edit", config.prompt), ("empty", ""))}

    @classmethod
    def from_config(cls, config: EditConfig | PreparedEdit, *, progress: bool = True,
                    overwrite: bool = False) -> VideoP2PPipeline:  # fmt: skip
        """Load the model and its video UNet (:func:`load_video_p2p_unet`)."""
        prepared = config if isinstance(config, PreparedEdit) else prepare_edit(config)
        config = prepared.config
        device = resolve_device(config.device)
        log = RunLog(device)
        log.info["config_sources"] = prepared.sources
        with log.stage("load"):
            parts = load_parts(prepared.model.source, device=device,
                               dtype=resolve_dtype(config.dtype, device))  # fmt: skip
            video_unet = load_video_p2p_unet(parts, config).to(device)
        return cls(parts, video_unet, config, log=log, progress=progress, overwrite=overwrite)

    @torch.no_grad()
    def __call__(self, frames: np.ndarray | None = None) -> VideoP2PResult:
        config, log = self.config, self.log
        # 1. read the source frames and encode them
        with log.stage("encode"):
            frames = read_source(config) if frames is None else frames
            video = video_to_tensor(frames)[None].to(self.device)  # (1, 3, f, h, w)
            latents = encode_video(self.parts.vae, video).float()  # (1, c, f, h, w)
        # 2. the pivot: DDIM inversion with the source prompt, no guidance (or from the cache)
        with log.stage("inversion"):
            inverted, pivot, hit = self.invert_cached(latents, frames)
        # 3. INR inversion noise: the latent both rows start from
        start = inr_start_latents(inverted, self.schedule, config)
        # 4. null-text optimisation along the pivot, from that start (not in fast mode)
        embeddings = inverted.extras.get(EMBEDDINGS)
        if not hit:
            if not config.fast:
                with log.stage("null_text"):
                    optimised = self.optimize_null_text(pivot, start)
                embeddings = optimised.embeddings
                log.info["null_text"] = {**log.info["null_text"], **optimised.to_dict()}
            self._save_cache(frames, inverted, embeddings)
        # 5. DDIM sampling of [source, edit]: decoupled guidance, Video-P2P's control
        with log.stage("sampling"):
            both = self.sample(start, embeddings)  # (2, c, f, h, w)
        # 6. decode both rows
        with log.stage("decode"):
            reconstruction, edited = (tensor_to_video(v) for v in
                                      decode_video(self.parts.vae, both))  # fmt: skip
        # 7. write the edit, the reconstruction, the side-by-side, the config and the log
        output, files = self.write(frames, edited, reconstruction)
        return VideoP2PResult(output, files, both[1:], start, hit, log.to_dict(),
                              reconstruction=both[:1], null_text=embeddings)  # fmt: skip

    # ------------------------------------------------------------------ steps
    def invert(self, latents: Tensor):
        """The pivot: DDIM inversion of ``z_0`` with the source prompt at guidance 1."""
        c = self.config
        inr = {}
        if c.apply_at == "every_step":
            inr = dict(
                inversion_weight=c.inversion_weight, alpha=c.alpha, beta=c.beta, chain=c.chain,
                apply_at="every_step", noise_source=c.noise_source,
                generator=torch.Generator().manual_seed(c.seed),
            )  # fmt: skip
        noise_fn = guided_noise_fn(self.video_unet, self.embeds["source"])
        return ddim_invert(latents, noise_fn, self.schedule, progress=self.progress, **inr)

    def invert_cached(self, latents: Tensor, frames: np.ndarray):
        """``(inverted, pivot latents, hit)``: from the cache (the null-text embeddings in
        ``inverted.extras``; no pivot) or inverted now."""
        self.log.info["null_text"] = {"fast": self.config.fast}
        if self.cache_dir:
            path = cache_path(self.cache_dir, cache_key(self.cache_material(frames)))
            cached = load_inversion(path, self.cache_material(frames), self.device)
            self.log.info["cache"] = {"path": str(path), "hit": cached is not None}
            if cached is not None:
                if EMBEDDINGS in cached.extras:
                    shape = list(cached.extras[EMBEDDINGS].shape)
                    self.log.info["null_text"].update(from_cache=True, embedding_shape=shape)
                return cached, None, True
        trajectory = self.invert(latents)
        z = trajectory.latents
        return InvertedVideo(z[0], z[-2], trajectory.noise_preds[-1], z[-1]), z, False

    def optimize_null_text(self, pivot: list[Tensor], start: Tensor) -> NullTextResult:
        """One unconditional embedding per step (:func:`~inr_smooth.null_text.
        null_text_optimization`); gradient checkpointing and autocast on a GPU."""
        c, unet = self.config, self.video_unet
        cuda = self.device.type == "cuda"
        dtype = next(unet.parameters()).dtype
        half = cuda and dtype in (torch.float16, torch.bfloat16)
        autocast = (lambda: torch.autocast("cuda", dtype=dtype)) if half else None
        scaler = torch.amp.GradScaler("cuda") if cuda and dtype == torch.float16 else None
        self.log.info["null_text"].update(
            gradient_checkpointing=cuda, autocast=str(dtype) if half else None,
            guidance_scale=c.guidance_scale, max_iterations=c.null_text_iterations,
        )  # fmt: skip
        if cuda:
            unet.enable_gradient_checkpointing()
        trainable = [p for p in unet.parameters() if p.requires_grad]
        unet.requires_grad_(False)  # gradients for the embedding only, none into the weights
        try:
            with torch.enable_grad():
                return null_text_optimization(
                    pivot, embedding_noise_fn(unet), self.schedule, self.embeds["source"],
                    self.embeds["empty"], guidance_scale=c.guidance_scale,
                    num_inner_steps=c.null_text_iterations, epsilon=NULL_TEXT_EPSILON,
                    start_latents=start, autocast=autocast, grad_scaler=scaler,
                    progress=self.progress,
                )  # fmt: skip
        finally:
            for param in trainable:
                param.requires_grad_(True)
            if cuda:
                unet.disable_gradient_checkpointing()

    def sample(self, start: Tensor, embeddings: Tensor | None) -> Tensor:
        """DDIM-sample ``[source, edit]`` from ``start`` (both rows) with decoupled guidance and
        Video-P2P's control; LocalBlend after each step from 20 % of the steps."""
        c, n = self.config, len(self.schedule)
        noise_fn = decoupled_noise_fn(
            self.video_unet, self.embeds["source"], self.embeds["edit"], self.embeds["empty"],
            embeddings, c.guidance_scale, self.schedule.timesteps, fast=c.fast,
        )  # fmt: skip
        state = self.control.new(fast=c.fast) if self.control is not None else None
        callback = None
        if state is not None:
            noise_fn = state.stepped(noise_fn, self.schedule.timesteps)
            if state.local_blend is not None:
                blend = state.local_blend

                def callback(index: int, latents: Tensor) -> Tensor:
                    return blend(latents, n - 1 - index)  # 0 = the noisiest sampling step

        both = start.expand(2, *start.shape[1:]).clone()
        with prompt_control_installed(self.video_unet, state, "edit"):
            return ddim_sample(both, noise_fn, self.schedule, progress=self.progress,
                               step_callback=callback)  # fmt: skip

    def write(self, frames: np.ndarray, edited: np.ndarray, reconstruction: np.ndarray):
        """Write the outputs into a temporary folder that becomes ``output`` when complete."""
        c = self.config
        output = Path(c.output).expanduser()
        check_output(output, overwrite=self.overwrite)
        name = sample_names([c.prompt])[0]
        with atomic_folder(output, overwrite=self.overwrite) as tmp:
            with self.log.stage("write"):
                files = [write_video(tmp / f"{name}.mp4", edited, fps=c.fps),
                         write_video(tmp / f"{name}.gif", edited, fps=c.fps),
                         write_side_by_side(tmp / f"{name}-side-by-side.mp4",
                                            [frames, reconstruction, edited],
                                            ["source", "reconstruction", c.prompt], fps=c.fps),
                         write_video(tmp / f"{name}-reconstruction.mp4", reconstruction,
                                     fps=c.fps)]  # fmt: skip
                (tmp / "config.yaml").write_text(yaml.safe_dump(config_to_dict(c), sort_keys=False))
            self.log.write(tmp / "log.json")
        return output, [output / path.name for path in files]

    # ------------------------------------------------------------------ helpers
    def cache_material(self, frames: np.ndarray) -> dict:
        """Everything the pivot and the null-text embeddings depend on."""
        c = self.config
        material = {
            "editor": "video-p2p", "frames": frames_digest(frames),
            "source_prompt": c.source_prompt, **model_identity(self.parts.source),
            "dtype": str(next(self.video_unet.parameters()).dtype),
            "timesteps": self.schedule.timesteps.tolist(),
            "video_unet": self.video_unet.config.to_dict(),
            "null_text": None if c.fast else {
                "guidance_scale": c.guidance_scale, "iterations": c.null_text_iterations,
                "epsilon": NULL_TEXT_EPSILON, "learning_rate": LEARNING_RATE},
        }  # fmt: skip
        if c.weights:
            material["weights"] = model_identity(str(Path(c.weights).expanduser()))
        # INR enters the pivot (every_step) or the start the null-text path is optimised from
        if c.inversion_weight > 0 and (c.apply_at == "every_step" or not c.fast):
            material["inr"] = {
                "inversion_weight": c.inversion_weight, "alpha": c.alpha, "beta": c.beta,
                "chain": c.chain, "noise_source": c.noise_source, "seed": c.seed,
                "apply_at": c.apply_at,
            }  # fmt: skip
        return material

    def _save_cache(self, frames, inverted: InvertedVideo, embeddings: Tensor | None) -> None:
        if not self.cache_dir:
            return
        if embeddings is not None:
            inverted.extras[EMBEDDINGS] = embeddings
        material = self.cache_material(frames)
        path = cache_path(self.cache_dir, cache_key(material))
        try:
            save_inversion(path, inverted, material)
            self.log.info["cache"]["file_mb"] = round(path.stat().st_size / 2**20, 3)
        except (OSError, ValueError) as exc:  # disk full, read-only, SafetensorError...
            warnings.warn(f"could not write the inversion cache {path} ({exc}): the edit goes "
                          "on without it", stacklevel=2)  # fmt: skip
            self.log.info["cache"]["saved"] = False

    def _check_size(self) -> None:
        scale = self.parts.vae_scale_factor
        multiple = scale * 2 ** (len(self.parts.unet.config.block_out_channels) - 1)
        if self.config.size % multiple:
            raise ValueError(f"size must be a multiple of {multiple} px for this model, got "
                             f"{self.config.size}")  # fmt: skip


def check_video_p2p_memory(prepared: PreparedEdit) -> None:
    """Refuse (one line) an edit whose estimated peak exceeds the free memory: the sampling
    batch of four videos, or the null-text optimisation's backward pass (no weight trained)."""
    from .memory import check_fits, run_memory

    c, info = prepared.config, prepared.model
    device = resolve_device(c.device)
    inflation = (("attention", c.attention), ("temporal_attention", True),
                 ("group_norm", "video"))  # fmt: skip
    runs = [run_memory(info.source, inflation, None, batch=4, training=False)]
    if not c.fast:
        runs.append(run_memory(info.source, inflation, (), batch=1, training=True,
                               checkpointing=device.type == "cuda"))  # fmt: skip

    def estimate(frames: int, size: int):
        return max((run.estimate(frames, size) for run in runs), key=lambda e: e.peak)

    check_fits(estimate, c.frames, c.size, info.size_multiple, device)


def edit_video_p2p(prepared: PreparedEdit, *, overwrite: bool = False, memory_check: bool = True,
                   progress: bool = True) -> VideoP2PResult:  # fmt: skip
    """:func:`~.edit.edit` for ``editor="video-p2p"``: everything checked before the model
    loads, then :class:`VideoP2PPipeline`."""
    config = prepared.config
    check_output(Path(config.output).expanduser(), overwrite=overwrite)
    frames = read_source(config)
    if memory_check:
        check_video_p2p_memory(prepared)
    return VideoP2PPipeline.from_config(prepared, progress=progress, overwrite=overwrite)(frames)
