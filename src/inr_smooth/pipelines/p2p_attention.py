"""Prompt-to-prompt attention control on the inflated UNet, as diffusers attention processors.

The math is in :mod:`.prompt_to_prompt`; this module hooks it into the layers a host chooses
(:class:`ControlPlan`) and leaves every other layer on PyTorch's SDPA. Attention probabilities
are materialised only on a hooked layer at a step where it records or controls.

Where the source's maps come from (``source``):

* ``"store"`` (FateZero): while the source video is DDIM-inverted (phase ``"record"``) the
  hooked cross-attention layers store their maps, float16 ``(f, heads, n, 77)``, in the
  :class:`~.attention_store.AttentionStore` under ``cross/<step>/<layer>`` (beside the
  self-attention token store of :mod:`.attention_fusion`), and the blend words' pooled map
  ``blend/<step>`` ``(f, h/4, w/4)`` from the blend layers. While editing (phase ``"edit"``) the
  conditional rows (the last ``f`` of ``[uncond, cond]``) attend with the controlled maps; the
  unconditional rows keep their own attention. Recording leaves every output as it was.
* ``"batch"`` (prompt-to-prompt, Video-P2P): the conditional half of the batch holds the
  source video first, then the edited ones; the source's maps are live. ``self_layers`` (any
  attention modules, e.g. Video-P2P's temporal attention) then have the source's map replace
  the edited rows' maps during ``self_steps``, and a :class:`~.prompt_to_prompt.LocalBlend`
  can collect the blend layers' maps (the controlled ones, as prompt-to-prompt's store holds).

Steps are schedule indices (0 = least noisy), as in :mod:`.attention_fusion`: the map recorded
at inversion step ``k`` controls sampling at index ``k``, which is sampling step
``N - 1 - k`` of the controller's windows.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from diffusers.models.attention_processor import Attention
from einops import rearrange
from torch import Tensor

from ..inversion import NoiseFn
from .attention_fusion import blend_key, layer_level
from .attention_store import AttentionStore
from .prompt_to_prompt import CrossAttentionControl, LocalBlend, pooled_word_map, word_maps

__all__ = [
    "BLEND_DOWNSAMPLE",
    "ControlPlan",
    "MapReplaceProcessor",
    "PromptControl",
    "PromptCrossAttnProcessor",
    "blend_key",
    "blend_layers",
    "cross_attention_layers",
    "cross_key",
    "estimate_control_bytes",
    "prompt_control_installed",
]

BLEND_DOWNSAMPLE = 4  # FateZero's "16x16" layers: 4x smaller than SD's 64x64 latent at 512 px


def cross_key(step: int, layer: str) -> str:
    return f"cross/{step}/{layer}"


@dataclass(frozen=True)
class ControlPlan:
    """Which layers and steps prompt-to-prompt control records and controls."""

    cross_layers: dict[str, int]  # attn2 module name -> downsampling of its feature map
    cross_steps: frozenset[int]  # schedule indices whose cross-attention is controlled
    blend_layers: dict[str, int] = field(default_factory=dict)  # attn2 name -> downsampling
    blend_tokens: tuple[int, ...] = ()  # blend-word positions in the source prompt ("store")
    blend_steps: frozenset[int] = frozenset()  # schedule indices whose blend map is stored
    self_layers: tuple[str, ...] = ()  # "batch": attention modules (names in the 2-D UNet)
    self_steps: frozenset[int] = frozenset()

    def to_dict(self) -> dict:
        return {
            "cross_layers": dict(sorted(self.cross_layers.items())),
            "cross_steps": sorted(self.cross_steps),
            "blend_layers": dict(sorted(self.blend_layers.items())),
            "blend_tokens": list(self.blend_tokens),
            "blend_steps": sorted(self.blend_steps),
            "self_layers": sorted(self.self_layers),
            "self_steps": sorted(self.self_steps),
        }


def _spatial_attentions(video_unet, suffix: str) -> dict[str, int]:
    levels = len(video_unet.unet.config.block_out_channels)
    return {
        name: 2 ** layer_level(name, levels)
        for name, module in video_unet.unet.named_modules()
        if isinstance(module, Attention) and name.endswith(f".spatial.{suffix}")
        and (suffix != "attn2" or module.is_cross_attention)
    }  # fmt: skip


def cross_attention_layers(video_unet, min_downsample: int = 2) -> dict[str, int]:
    """Cross-attention layers at least ``min_downsample`` times smaller than the latent (FateZero
    controls those with at most 32x32 queries: 2 at 512 px)."""
    found = _spatial_attentions(video_unet, "attn2")
    return {name: d for name, d in found.items() if d >= min_downsample}


def blend_layers(video_unet, downsample: int = BLEND_DOWNSAMPLE) -> dict[str, int]:
    """The down- and up-block cross-attention layers ``downsample`` times smaller than the latent
    (FateZero's ``down_cross[2:4] + up_cross[:3]``: SD's five 16x16 layers at 512 px; never the
    mid block). A UNet without such layers uses its deepest down/up cross-attention level."""
    found = {n: d for n, d in _spatial_attentions(video_unet, "attn2").items()
             if not n.startswith("mid_block")}  # fmt: skip
    if not found:
        raise ValueError("blend words need cross-attention in the UNet's down or up blocks")
    level = max((d for d in found.values() if d <= downsample), default=min(found.values()))
    return {name: d for name, d in found.items() if d == level}


class PromptControl:
    """State shared by the processors: phase, current step, plan, controller, store."""

    def __init__(
        self,
        plan: ControlPlan,
        control: CrossAttentionControl | None,
        store: AttentionStore | None = None,
        *,
        num_steps: int,
        source: str = "store",
        blend_weights: Tensor | None = None,
        local_blend: LocalBlend | None = None,
        batch_videos: int = 2,
        videos: int = 1,
    ):
        if source not in ("store", "batch"):
            raise ValueError(f"source must be 'store' or 'batch', got {source!r}")
        if source == "store" and store is None:
            raise ValueError("source='store' needs an AttentionStore")
        self.plan, self.control, self.store, self.source = plan, control, store, source
        self.num_steps = num_steps
        self.blend_weights = blend_weights  # (77,): 1 on the blend tokens ("store")
        self.local_blend = local_blend  # "batch": collects the blend layers' maps
        self.batch_videos, self.videos = batch_videos, videos  # "batch": videos per call/branch
        self.phase: str | None = None
        self.step: int | None = None
        self.latent_hw: tuple[int, int] | None = None
        self._blend_sum: Tensor | None = None
        self._blend_count = 0

    @property
    def sampling_step(self) -> int:
        """The controller's step (0 = noisiest) of the current schedule index."""
        return self.num_steps - 1 - self.step

    def controls_cross(self, name: str) -> bool:
        if self.phase is None or self.step not in self.plan.cross_steps:
            return False
        return name in self.plan.cross_layers and self.control is not None

    def stepped(self, noise_fn: NoiseFn, timesteps: Tensor) -> NoiseFn:
        """``noise_fn`` that tells the processors which schedule step each call evaluates."""
        index = {int(t): i for i, t in enumerate(timesteps.tolist())}

        def fn(latents: Tensor, timestep: int) -> Tensor:
            self.step, self.latent_hw = index[int(timestep)], tuple(latents.shape[-2:])
            self._blend_sum, self._blend_count = None, 0
            noise_pred = noise_fn(latents, timestep)
            if self._blend_count:
                self._store_blend()
            if self.local_blend is not None and self.local_blend._step:
                self.local_blend.end_step()
            self.step = None
            return noise_pred

        return fn

    def add_blend(self, probs: Tensor, downsample: int) -> None:
        """Accumulate one layer's blend-word maps from its probabilities ``(b f, heads, n, 77)``."""
        h, w = self.latent_hw
        maps = word_maps(probs, self.blend_weights).sum(dim=1)  # (b f, n): summed over heads
        maps = rearrange(maps, "b (h w) -> b h w", h=h // downsample, w=w // downsample)
        self._blend_sum = maps if self._blend_sum is None else self._blend_sum + maps
        self._blend_count += probs.shape[1]

    def _store_blend(self) -> None:
        pooled = pooled_word_map(self._blend_sum / self._blend_count)  # mean over layers, heads
        self.store.put(blend_key(self.step), pooled)


def _heads(x: Tensor, heads: int) -> Tensor:
    return rearrange(x, "b n (h d) -> b h n d", h=heads)


def attention_probs(attn: Attention, hidden_states: Tensor, context: Tensor | None) -> Tensor:
    """``softmax(q k^T * scale)`` of ``attn``, float32 ``(b, heads, n, m)``; and it reads the
    layer as diffusers' AttnProcessor2_0 does (group norm, cross norm, q/k norms)."""
    query, key, _ = _qkv(attn, hidden_states, context, values=False)
    return (query.float() @ key.float().transpose(-1, -2) * attn.scale).softmax(dim=-1)


def _qkv(attn: Attention, hidden_states: Tensor, context: Tensor | None, values: bool = True):
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    if context is None:
        context = hidden_states
    elif attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    query = _heads(attn.to_q(hidden_states), attn.heads)
    key = _heads(attn.to_k(context), attn.heads)
    if attn.norm_q is not None:
        query = attn.norm_q(query)
    if attn.norm_k is not None:
        key = attn.norm_k(key)
    value = _heads(attn.to_v(context), attn.heads) if values else None
    return query, key, value


def attend_with(attn: Attention, probs: Tensor, hidden_states: Tensor, context) -> Tensor:
    """``attn``'s output with the given probabilities ``(b, heads, n, m)`` in place of its own."""
    residual = hidden_states
    _, _, value = _qkv(attn, hidden_states, context)
    out = rearrange(probs.to(value.dtype) @ value, "b h n d -> b n (h d)")
    out = attn.to_out[1](attn.to_out[0](out))
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class PromptCrossAttnProcessor:
    """Wraps a cross-attention (``attn2``) processor: records its maps (and blend maps) while
    inverting; while editing, the conditional rows attend with the controlled maps."""

    def __init__(self, state: PromptControl, name: str, downsample: int, inner):
        self.state, self.name, self.downsample, self.inner = state, name, downsample, inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}(layer={self.name!r})"

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, **kwargs):  # fmt: skip
        def plain(rows=slice(None)):
            context = None if encoder_hidden_states is None else encoder_hidden_states[rows]
            mask = None if attention_mask is None else attention_mask[rows]
            return self.inner(attn, hidden_states[rows], context, mask, temb, **kwargs)

        s, plan = self.state, self.state.plan
        if encoder_hidden_states is None or s.phase is None or attention_mask is not None:
            return plain()
        if s.phase == "record" and s.source == "store":
            self._record(attn, hidden_states, encoder_hidden_states)
            return plain()
        blend = s.local_blend is not None and self.name in plan.blend_layers
        if s.phase != "edit" or not (s.controls_cross(self.name) or blend):
            return plain()
        if s.source == "store":
            return self._edit_from_store(attn, hidden_states, encoder_hidden_states, plain)
        return self._edit_in_batch(attn, hidden_states, encoder_hidden_states, plain)

    def _record(self, attn, hidden_states, context) -> None:
        s, plan = self.state, self.state.plan
        store_map = self.name in plan.cross_layers and s.step in plan.cross_steps
        blend = self.name in plan.blend_layers and s.step in plan.blend_steps
        if not (store_map or blend):
            return
        probs = attention_probs(attn, hidden_states, context)  # (b f, heads, n, 77)
        if store_map:
            s.store.put(cross_key(s.step, self.name), probs)
        if blend:
            s.add_blend(probs, self.downsample)

    def _edit_from_store(self, attn, hidden_states, context, plain):
        s = self.state
        base = s.store.get(cross_key(s.step, self.name), device=hidden_states.device,
                           dtype=torch.float32)  # fmt: skip
        rows = base.shape[0]
        if rows > hidden_states.shape[0] or base.shape[2] != hidden_states.shape[1]:
            raise ValueError(
                f"stored cross-attention {tuple(base.shape)} of {self.name} does not fit the "
                f"edit's {tuple(hidden_states.shape)} (same frames, size and model expected)"
            )
        cond = slice(hidden_states.shape[0] - rows, None)
        own = attention_probs(attn, hidden_states[cond], context[cond])
        probs = s.control(base, own, s.sampling_step)
        out = attend_with(attn, probs, hidden_states[cond], context[cond])
        if rows == hidden_states.shape[0]:
            return out
        return torch.cat([plain(slice(None, hidden_states.shape[0] - rows)), out])

    def _edit_in_batch(self, attn, hidden_states, context, plain):
        s = self.state
        rows = hidden_states.shape[0] // s.batch_videos * s.videos  # the conditional branch
        cond = slice(hidden_states.shape[0] - rows, None)
        probs = attention_probs(attn, hidden_states[cond], context[cond])
        videos = rearrange(probs, "(v r) h n m -> v r h n m", v=s.videos)
        if s.controls_cross(self.name):
            edited = s.control(videos[:1], videos[1:], s.sampling_step)
            videos = torch.cat([videos[:1], edited])
        if s.local_blend is not None and self.name in s.plan.blend_layers:
            h, w = s.latent_hw
            s.local_blend.add(videos, (h // self.downsample, w // self.downsample))
        probs = rearrange(videos, "v r h n m -> (v r) h n m")
        out = attend_with(attn, probs, hidden_states[cond], context[cond])
        return torch.cat([plain(slice(None, hidden_states.shape[0] - rows)), out])


class MapReplaceProcessor:
    """``"batch"`` self-map replacement on any attention module (Video-P2P: the temporal
    attention): during ``self_steps`` the edited rows of the conditional branch attend with the
    source row's map and their own values; everything else is the wrapped processor's."""

    def __init__(self, state: PromptControl, name: str, inner):
        self.state, self.name, self.inner = state, name, inner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, **kwargs):  # fmt: skip
        s = self.state
        active = s.phase == "edit" and s.step in s.plan.self_steps and attention_mask is None
        if not active or encoder_hidden_states is not None:
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                              **kwargs)  # fmt: skip
        rows = hidden_states.shape[0] // s.batch_videos * s.videos
        split = hidden_states.shape[0] - rows
        probs = attention_probs(attn, hidden_states[split:], None)
        videos = rearrange(probs, "(v r) h n m -> v r h n m", v=s.videos)
        videos = torch.cat([videos[:1], videos[:1].expand_as(videos[1:])])
        probs = rearrange(videos, "v r h n m -> (v r) h n m")
        out = attend_with(attn, probs, hidden_states[split:], None)
        if not split:
            return out
        return torch.cat([self.inner(attn, hidden_states[:split], None, None, temb), out])


@contextmanager
def prompt_control_installed(video_unet, state: PromptControl | None, phase: str) -> Iterator[None]:
    """Install the processors of ``state.plan`` for one phase (``"record"`` or ``"edit"``);
    restore the previous processors afterwards. ``state=None`` does nothing."""
    if state is None:
        yield
        return
    if phase not in ("record", "edit"):
        raise ValueError(f"phase must be 'record' or 'edit', got {phase!r}")
    modules = dict(video_unet.unet.named_modules())
    saved = []
    try:
        for name in {**state.plan.cross_layers, **state.plan.blend_layers}:
            attn = modules.get(name)
            if not isinstance(attn, Attention):
                raise ValueError(f"expected a cross-attention layer {name!r}, found none")
            d = state.plan.cross_layers.get(name) or state.plan.blend_layers[name]
            saved.append((attn, attn.processor))
            attn.set_processor(PromptCrossAttnProcessor(state, name, d, attn.processor))
        for name in state.plan.self_layers:
            attn = modules.get(name)
            if not isinstance(attn, Attention):
                raise ValueError(f"expected an attention layer {name!r}, found none")
            saved.append((attn, attn.processor))
            attn.set_processor(MapReplaceProcessor(state, name, attn.processor))
        state.phase = phase
        yield
    finally:
        state.phase, state.step = None, None
        for attn, processor in reversed(saved):
            attn.set_processor(processor)


def estimate_control_bytes(video_unet, plan: ControlPlan, *, num_frames: int, latent_hw) -> int:
    """Bytes a ``"store"`` recording with ``plan`` stores for one video of ``num_frames``."""
    modules = dict(video_unet.unet.named_modules())
    h, w = latent_hw
    per_step = sum(
        num_frames * modules[name].heads * (h // d) * (w // d) * 77 * 2
        for name, d in plan.cross_layers.items()
    )
    blend = 0
    if plan.blend_layers:
        d = next(iter(plan.blend_layers.values()))
        blend = num_frames * (h // d) * (w // d) * 2
    return len(plan.cross_steps) * per_step + len(plan.blend_steps) * blend
