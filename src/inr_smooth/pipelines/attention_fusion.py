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
* blend masks (only with blend words) are recorded by the cross-attention processors of
  :mod:`.p2p_attention`: FateZero's recipe, the source blend words' maps from the "16x16"
  cross-attention layers, max-pooled 3x3 (``blend/<step>``, :func:`blend_key`).

While editing (phase ``"edit"``) the chosen self-attentions of the conditional branch (the
last ``b`` videos of the batch, as :func:`~inr_smooth.pipelines.guidance.guided_noise_fn`
orders ``[uncond, cond]``) use the source's map for the first ``self_replace`` fraction of the
sampling steps, ``attention(q_s, k_s, v_edit)`` (self-attention replacement). With blend words,
``out = M * attention(q_e, k_e, v_e) + (1 - M) * attention(q_s, k_s, v_e)``, where ``M`` is the
stored pooled map resized (nearest) to the layer's resolution, divided by each frame's maximum
and thresholded with a strict ``>`` (FateZero's attention blending, source words only): the
words' region follows the edit, the rest keeps the source's structure. Mixing outputs row by
row equals mixing the maps, since everything after the map is affine per token.

Steps are schedule indices (0 = least noisy): inversion step ``k`` and sampling step ``k`` both
run at timestep ``tau_k``, and the map stored at inversion step ``k`` is used at sampling step
``k``. Layers are ``attn1`` module names of the 2-D UNet; a layer's feature map is
``2 ** level`` times smaller than the latent (down block ``i``: level ``i``; the mid block:
the last level; up block ``j``: level ``levels - 1 - j``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import Tensor

from ..inversion import NoiseFn
from ..models.attention import CrossFrameAttnProcessor
from .attention_store import AttentionStore
from .prompt_to_prompt import threshold_mask, token_positions

__all__ = [
    "AttentionFusion",
    "FusionPlan",
    "FusionSelfAttnProcessor",
    "blend_key",
    "blend_token_positions",
    "estimate_store_bytes",
    "fusion_installed",
    "fusion_layers",
    "layer_level",
    "replace_steps",
]


@dataclass(frozen=True)
class FusionPlan:
    """Which layers and steps attention fusion touches."""

    layers: dict[str, int]  # attn1 module name in the 2-D UNet -> downsampling of its feature map
    steps: frozenset[int]  # schedule indices whose self-attention is stored, then replaced
    blend_tokens: tuple[int, ...] = ()  # positions of the blend words in the source prompt
    blend_threshold: float = 0.3  # mask = scaled cross-attention > threshold (FateZero's)

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
    """The schedule indices of the first ``self_replace`` fraction of sampling steps: FateZero's
    ``int(num_inference_steps * self_replace)`` noisiest steps."""
    if not 0.0 <= self_replace <= 1.0:
        raise ValueError(f"self_replace must be a fraction in [0, 1], got {self_replace}")
    count = int(num_inference_steps * self_replace)
    return frozenset(range(num_inference_steps - count, num_inference_steps))


def layer_level(name: str, levels: int) -> int:
    """The resolution level of an attention layer named as in the 2-D UNet (0: the latent's)."""
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
            downsample = 2 ** layer_level(name, levels)
            if downsample >= min_downsample:
                layers[name] = downsample
    return layers


def blend_token_positions(tokenizer, prompt: str, words: Sequence[str]) -> tuple[int, ...]:
    """Positions of ``words``' tokens in the token sequence of ``prompt`` (all matches)."""
    positions: set[int] = set()
    for word in words:
        try:
            positions.update(token_positions(tokenizer, prompt, word))
        except ValueError:
            message = f"blend word {word!r} is not in the source prompt {prompt!r}"
            raise ValueError(message) from None
    return tuple(sorted(positions))


def self_attention_key(step: int, layer: str) -> str:
    return f"self/{step}/{layer}"


def blend_key(step: int) -> str:
    """The store entry of step ``step``'s pooled blend-word map (see :mod:`.p2p_attention`)."""
    return f"blend/{step}"


class AttentionFusion:
    """State shared by the fusion processors: phase, current step, plan and store."""

    def __init__(self, plan: FusionPlan, store: AttentionStore):
        self.plan = plan
        self.store = store
        self.phase: str | None = None  # "record" (inversion) or "edit" (sampling)
        self.step: int | None = None
        self._latent_hw: tuple[int, int] | None = None

    @property
    def active(self) -> bool:
        """Whether the current UNet call stores (record) or replaces (edit) attention."""
        return self.phase is not None and self.step in self.plan.steps

    def stepped(self, noise_fn: NoiseFn, timesteps: Tensor) -> NoiseFn:
        """``noise_fn`` that tells the processors which schedule step each call evaluates."""
        index = {int(t): i for i, t in enumerate(timesteps.tolist())}

        def fn(latents: Tensor, timestep: int) -> Tensor:
            self.step, self._latent_hw = index[int(timestep)], tuple(latents.shape[-2:])
            noise_pred = noise_fn(latents, timestep)
            self.step = None
            return noise_pred

        return fn

    def blend_mask(self, downsample: int, like: Tensor) -> Tensor:
        """Binary mask ``(b f, n, 1)`` of the blend words at a layer's resolution."""
        pooled = self.store.get(blend_key(self.step), device=like.device, dtype=torch.float32)
        h, w = self._latent_hw
        mask = threshold_mask(pooled, (h // downsample, w // downsample), self.plan.blend_threshold)
        return rearrange(mask, "b h w -> b (h w) 1")


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

    def __init__(
        self, context, mode, keyframe, fusion: AttentionFusion, name: str, downsample,
        min_channels: int = 0,
    ):  # fmt: skip
        super().__init__(context, mode, keyframe, min_channels)
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


def _install(video_unet, fusion: AttentionFusion) -> None:
    modules = dict(video_unet.unet.named_modules())
    config = video_unet.config
    for name, downsample in fusion.plan.layers.items():
        attn1 = modules.get(name)
        if not isinstance(attn1, Attention):
            raise ValueError(f"expected a self-attention layer {name!r} in the UNet, found none")
        attn1.set_processor(FusionSelfAttnProcessor(
            video_unet.frames, config.attention, config.keyframe, fusion, name, downsample,
            config.cross_frame_min_channels,
        ))  # fmt: skip


@contextmanager
def fusion_installed(video_unet, fusion: AttentionFusion | None, phase: str) -> Iterator[None]:
    """Install the fusion processors on a VideoUNet for one phase, ``"record"`` or ``"edit"``;
    restore the plain cross-frame processors afterwards. ``fusion=None`` does nothing."""
    if fusion is None:
        yield
        return
    if phase not in ("record", "edit"):
        raise ValueError(f"phase must be 'record' or 'edit', got {phase!r}")
    _install(video_unet, fusion)
    fusion.phase = phase
    try:
        yield
    finally:
        fusion.phase, fusion.step = None, None
        video_unet.set_cross_frame_attention(
            video_unet.config.attention, video_unet.config.keyframe
        )


def estimate_store_bytes(video_unet, plan: FusionPlan, *, num_frames: int, latent_hw) -> int:
    """Bytes a recording with ``plan`` stores for one video of ``num_frames`` latent frames
    (self-attention tokens; cross-attention and blend maps: :mod:`.p2p_attention`)."""
    modules = dict(video_unet.unet.named_modules())
    h, w = latent_hw
    per_step = sum(
        num_frames * (h // d) * (w // d) * modules[name].query_dim * 2
        for name, d in plan.layers.items()
    )
    return len(plan.steps) * per_step
