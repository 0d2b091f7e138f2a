"""FateZero-style attention fusion for inversion-based editing, as diffusers attention processors.

While the source video is DDIM-inverted with the source prompt (phase ``"record"``), the
processors of the chosen layers store, for the chosen steps only, what editing reuses:

* self-attention: the input tokens of each chosen spatial self-attention (``attn1``), float16,
  ``(b f, n, c)``. The source's attention map ``softmax(q_s k_s^T / sqrt(d))`` is recomputed
  from them with the layer's own projections (the model is the same while inverting and
  editing), so what is stored grows linearly with the tokens where the map grows quadratically:
  for one 32x32 layer of an 8-frame 512 px video under ``"full"`` attention the tokens take
  10 MiB, the map ``(heads, f n, f n)`` 1 GiB. The map is never materialised: it is applied
  through :func:`torch.nn.functional.scaled_dot_product_attention` like any other.
* blend masks (only with blend words): the cross-attention probability of the blend words'
  tokens, averaged over heads, words and the chosen layers, upsampled to the latent size and
  scaled per frame to a maximum of 1: ``(b f, h, w)`` per step.

While editing (phase ``"edit"``) the chosen self-attentions of the conditional branch (the
last ``b`` videos of the batch, as :func:`~inr_smooth.pipelines.guidance.guided_noise_fn`
orders ``[uncond, cond]``) use the source's map for the first ``self_replace`` fraction of the
sampling steps, ``attention(q_s, k_s, v_edit)`` (self-attention replacement). With blend words,
``out = M * attention(q_e, k_e, v_e) + (1 - M) * attention(q_s, k_s, v_e)`` with
``M = mask >= threshold`` at the layer's resolution: the words' region follows the edit, the
rest keeps the source's structure (attention blending). Mixing outputs row by row equals mixing
the maps, since everything after the map is affine per token.

Steps are schedule indices (0 = least noisy): inversion step ``k`` and sampling step ``k`` both
run at timestep ``tau_k``, and the map stored at inversion step ``k`` is used at sampling step
``k``. Layers are ``attn1`` module names of the 2-D UNet; a layer's feature map is
``2 ** level`` times smaller than the latent (down block ``i``: level ``i``; the mid block:
the last level; up block ``j``: level ``levels - 1 - j``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import Tensor

from ..inversion import NoiseFn
from ..models.attention import CrossFrameAttnProcessor
from .attention_store import AttentionStore

__all__ = [
    "AttentionFusion",
    "CrossAttnRecorder",
    "FusionPlan",
    "FusionSelfAttnProcessor",
    "blend_token_positions",
    "estimate_store_bytes",
    "fusion_installed",
    "fusion_layers",
    "replace_steps",
]


@dataclass(frozen=True)
class FusionPlan:
    """Which layers and steps attention fusion touches."""

    layers: dict[str, int]  # attn1 module name in the 2-D UNet -> downsampling of its feature map
    steps: frozenset[int]  # schedule indices whose self-attention is stored, then replaced
    blend_tokens: tuple[int, ...] = ()  # positions of the blend words in the source prompt
    blend_threshold: float = 0.3  # mask = scaled cross-attention >= threshold

    @property
    def blending(self) -> bool:
        return bool(self.blend_tokens)

    def to_dict(self) -> dict:
        return {
            "layers": dict(sorted(self.layers.items())),
            "steps": sorted(self.steps),
            "blend_tokens": list(self.blend_tokens),
        }


def replace_steps(num_inference_steps: int, self_replace: float) -> frozenset[int]:
    """The schedule indices of the first ``self_replace`` fraction of sampling steps."""
    if not 0.0 <= self_replace <= 1.0:
        raise ValueError(f"self_replace must be a fraction in [0, 1], got {self_replace}")
    count = math.floor(self_replace * num_inference_steps + 0.5)
    return frozenset(range(num_inference_steps - count, num_inference_steps))


def _level(name: str, levels: int) -> int:
    block, index = name.split(".")[:2]
    if block == "down_blocks":
        return int(index)
    if block == "up_blocks":
        return levels - 1 - int(index)
    if block == "mid_block":
        return levels - 1
    raise ValueError(f"cannot tell the resolution of attention layer {name!r}")


def fusion_layers(video_unet, min_downsample: int = 2) -> dict[str, int]:
    """Spatial self-attention layers whose feature map is at least ``min_downsample`` times
    smaller than the latent: ``{attn1 name: downsampling}``. For SD 1.x at 512 px,
    ``min_downsample=2`` keeps the 32, 16 and 8 px maps (FateZero stores up to 32x32)."""
    if not isinstance(min_downsample, int) or min_downsample < 1:
        raise ValueError(f"min_downsample must be an integer >= 1, got {min_downsample!r}")
    levels = len(video_unet.unet.config.block_out_channels)
    layers = {}
    for name, module in video_unet.unet.named_modules():
        if isinstance(module, Attention) and name.endswith(".spatial.attn1"):
            downsample = 2 ** _level(name, levels)
            if downsample >= min_downsample:
                layers[name] = downsample
    return layers


def blend_token_positions(tokenizer, prompt: str, words: Sequence[str]) -> tuple[int, ...]:
    """Positions of ``words``' tokens in the padded token sequence of ``prompt`` (all matches)."""
    ids = tokenizer(prompt, max_length=tokenizer.model_max_length, truncation=True).input_ids
    positions: set[int] = set()
    for word in words:
        word_ids = tokenizer(word, add_special_tokens=False).input_ids
        starts = [
            i for i in range(len(ids) - len(word_ids) + 1) if ids[i : i + len(word_ids)] == word_ids
        ]
        if not word_ids or not starts:
            raise ValueError(f"blend word {word!r} is not in the source prompt {prompt!r}")
        for start in starts:
            positions.update(range(start, start + len(word_ids)))
    return tuple(sorted(positions))


def self_attention_key(step: int, layer: str) -> str:
    return f"self/{step}/{layer}"


def mask_key(step: int) -> str:
    return f"mask/{step}"


class AttentionFusion:
    """State shared by the fusion processors: phase, current step, plan and store."""

    def __init__(self, plan: FusionPlan, store: AttentionStore):
        self.plan = plan
        self.store = store
        self.phase: str | None = None  # "record" (inversion) or "edit" (sampling)
        self.step: int | None = None
        self._latent_hw: tuple[int, int] | None = None
        self._mask_sum: Tensor | None = None
        self._mask_layers = 0

    @property
    def active(self) -> bool:
        """Whether the current UNet call stores (record) or replaces (edit) attention."""
        return self.phase is not None and self.step in self.plan.steps

    def stepped(self, noise_fn: NoiseFn, timesteps: Tensor) -> NoiseFn:
        """``noise_fn`` that tells the processors which schedule step each call evaluates."""
        index = {int(t): i for i, t in enumerate(timesteps.tolist())}

        def fn(latents: Tensor, timestep: int) -> Tensor:
            self.step, self._latent_hw = index[int(timestep)], tuple(latents.shape[-2:])
            self._mask_sum, self._mask_layers = None, 0
            noise_pred = noise_fn(latents, timestep)
            if self.phase == "record" and self.active and self.plan.blending:
                self._store_mask()
            self.step = None
            return noise_pred

        return fn

    # ------------------------------------------------------------------ blend masks
    def add_cross_attention(self, probs: Tensor, downsample: int) -> None:
        """Accumulate one layer's blend-word probabilities ``(b f, n)`` at latent size."""
        h, w = self._latent_hw
        size = (h // downsample, w // downsample)
        if probs.shape[1] != size[0] * size[1]:
            raise ValueError(
                f"expected {size[0]}x{size[1]} = {size[0] * size[1]} tokens in a layer "
                f"{downsample}x smaller than the {h}x{w} latent, got {probs.shape[1]}"
            )
        maps = rearrange(probs.float(), "b (h w) -> b 1 h w", h=size[0])
        maps = F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        self._mask_sum = maps if self._mask_sum is None else self._mask_sum + maps
        self._mask_layers += 1

    def _store_mask(self) -> None:
        if self._mask_layers == 0:
            raise RuntimeError(
                "blend words need cross-attention in the fusion layers, but none of them has "
                "any (choose a smaller fusion_min_downsample)"
            )
        mask = self._mask_sum / self._mask_layers  # (b f, h, w)
        mask = mask / mask.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        self.store.put(mask_key(self.step), mask)

    def blend_mask(self, downsample: int, like: Tensor) -> Tensor:
        """Binary mask ``(b f, n, 1)`` of the blend words at a layer's resolution."""
        mask = self.store.get(mask_key(self.step), device=like.device, dtype=torch.float32)
        h, w = mask.shape[-2:]
        small = F.interpolate(mask[:, None], size=(h // downsample, w // downsample), mode="area")
        return rearrange(small >= self.plan.blend_threshold, "b 1 h w -> b (h w) 1")


class _SourceQueryKey:
    """``attn`` whose query and key projections read the stored source tokens instead of their
    argument; everything else (the value projection included) is ``attn``'s own. A cross-frame
    processor run on it computes ``softmax(q_s k_s^T / sqrt(d)) v_edit``."""

    def __init__(self, attn: Attention, source: Tensor):
        if attn.group_norm is not None:
            source = attn.group_norm(source.transpose(1, 2)).transpose(1, 2)
        self._attn = attn
        self._source = source

    def to_q(self, _hidden_states: Tensor) -> Tensor:
        return self._attn.to_q(self._source)

    def to_k(self, _context: Tensor) -> Tensor:
        return self._attn.to_k(self._source)

    def __getattr__(self, name: str):
        return getattr(self._attn, name)


class FusionSelfAttnProcessor(CrossFrameAttnProcessor):
    """Cross-frame self-attention that stores (record) or replaces (edit) the source's map."""

    def __init__(self, context, mode, keyframe, fusion: AttentionFusion, name: str, downsample):
        super().__init__(context, mode, keyframe)
        self.fusion = fusion
        self.name = name
        self.downsample = downsample

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r}, layer={self.name!r})"

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **kwargs,
    ) -> Tensor:
        def attend(module, states: Tensor) -> Tensor:
            parent = super(FusionSelfAttnProcessor, self)
            return parent.__call__(module, states, None, attention_mask, temb, **kwargs)

        fusion = self.fusion
        if encoder_hidden_states is not None or not fusion.active:
            return super().__call__(
                attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs
            )
        key = self_attention_key(fusion.step, self.name)
        if fusion.phase == "record":
            fusion.store.put(key, hidden_states)  # (b f, n, c)
            return attend(attn, hidden_states)
        source = fusion.store.get(key, device=hidden_states.device, dtype=hidden_states.dtype)
        rows = source.shape[0]
        if source.shape[1:] != hidden_states.shape[1:] or rows > hidden_states.shape[0]:
            raise ValueError(
                f"stored source tokens {tuple(source.shape)} of {self.name} do not fit the edit's "
                f"{tuple(hidden_states.shape)} (same frames, size and model expected)"
            )
        cond = hidden_states[-rows:]
        fused = attend(_SourceQueryKey(attn, source), cond)  # the source's map, the edit's values
        if fusion.plan.blending:
            inside = fusion.blend_mask(self.downsample, cond)  # (b f, n, 1)
            fused = torch.where(inside, attend(attn, cond), fused)
        if rows == hidden_states.shape[0]:
            return fused
        return torch.cat([attend(attn, hidden_states[:-rows]), fused])


class CrossAttnRecorder:
    """Wraps a cross-attention (``attn2``) processor; while recording, adds the blend words'
    attention probabilities to the step's mask. The output is the wrapped processor's."""

    def __init__(self, fusion: AttentionFusion, downsample: int, inner):
        self.fusion = fusion
        self.downsample = downsample
        self.inner = inner

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor | None = None,
        attention_mask: Tensor | None = None,
        temb: Tensor | None = None,
        **kwargs,
    ) -> Tensor:
        fusion = self.fusion
        if fusion.phase == "record" and fusion.active and encoder_hidden_states is not None:
            probs = self._word_probs(attn, hidden_states, encoder_hidden_states)
            fusion.add_cross_attention(probs, self.downsample)
        return self.inner(
            attn, hidden_states, encoder_hidden_states, attention_mask=attention_mask, temb=temb,
            **kwargs,
        )  # fmt: skip

    def _word_probs(self, attn: Attention, hidden_states: Tensor, context: Tensor) -> Tensor:
        """Mean probability of the blend tokens per query token, over heads: ``(b f, n)``."""
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = rearrange(attn.to_q(hidden_states), "b n (h d) -> b h n d", h=attn.heads)
        key = rearrange(attn.to_k(context), "b m (h d) -> b h m d", h=attn.heads)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        probs = (query.float() @ key.float().transpose(-1, -2) * attn.scale).softmax(-1)
        return probs[..., list(self.fusion.plan.blend_tokens)].mean(dim=(1, 3))  # (b f, n)


def _install(video_unet, fusion: AttentionFusion) -> list[tuple[Attention, object]]:
    modules = dict(video_unet.unet.named_modules())
    mode, keyframe = video_unet.config.attention, video_unet.config.keyframe
    wrapped = []
    for name, downsample in fusion.plan.layers.items():
        attn1 = modules.get(name)
        if not isinstance(attn1, Attention):
            raise ValueError(f"expected a self-attention layer {name!r} in the UNet, found none")
        attn1.set_processor(
            FusionSelfAttnProcessor(video_unet.frames, mode, keyframe, fusion, name, downsample)
        )
        attn2 = modules.get(name.removesuffix("attn1") + "attn2")
        if fusion.plan.blending and isinstance(attn2, Attention):
            wrapped.append((attn2, attn2.processor))
            attn2.set_processor(CrossAttnRecorder(fusion, downsample, attn2.processor))
    return wrapped


@contextmanager
def fusion_installed(video_unet, fusion: AttentionFusion | None, phase: str) -> Iterator[None]:
    """Install the fusion processors on a VideoUNet for one phase, ``"record"`` or ``"edit"``;
    restore the plain cross-frame processors afterwards. ``fusion=None`` does nothing."""
    if fusion is None:
        yield
        return
    if phase not in ("record", "edit"):
        raise ValueError(f"phase must be 'record' or 'edit', got {phase!r}")
    wrapped = _install(video_unet, fusion)
    fusion.phase = phase
    try:
        yield
    finally:
        fusion.phase, fusion.step = None, None
        video_unet.set_cross_frame_attention(
            video_unet.config.attention, video_unet.config.keyframe
        )
        for attn2, processor in wrapped:
            attn2.set_processor(processor)


def estimate_store_bytes(video_unet, plan: FusionPlan, *, num_frames: int, latent_hw) -> int:
    """Bytes a recording with ``plan`` stores for one video of ``num_frames`` latent frames."""
    modules = dict(video_unet.unet.named_modules())
    h, w = latent_hw
    per_step = sum(
        num_frames * (h // d) * (w // d) * modules[name].query_dim * 2
        for name, d in plan.layers.items()
    )
    if plan.blending:
        per_step += num_frames * h * w * 2
    return len(plan.steps) * per_step
