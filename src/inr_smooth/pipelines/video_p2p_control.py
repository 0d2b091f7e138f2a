"""Video-P2P's prompt-to-prompt control: which layers and steps, and its local blending.

Read from ShaoTengLiu/Video-P2P (92d2b52, ``run_videop2p.py`` and ``ptp_utils.py``), done with
this package's prompt-to-prompt layer (:mod:`.prompt_to_prompt`, :mod:`.p2p_attention`) on the
``"batch"`` source: the edit batch holds ``[source, edit]``, the source's maps are live.

* Video-P2P's controller sees every module of class ``CrossAttention``: each block's ``attn2``
  (cross-attention) and ``attn_temp`` (the temporal attention, with no context: its "self"
  attention); the spatial frame attention (``FrameAttention``) is not hooked.
* **Cross-attention**: every ``attn2`` layer, at every resolution, inside the ``cross_replace``
  windows (sampling steps ``i < int(f (N + 1))``): replace (word swap) or refine, then
  reweighting (``eq_params``), as :class:`~.prompt_to_prompt.CrossAttentionControl` does.
* **"Self" replacement on the temporal attention**: for sampling steps
  ``int(N s0) <= i < int(N s1)`` (``self_replace``; 0.5: the first half) the edited row attends
  over the frames with the source row's temporal map and its own values, in every layer (its
  size limit of 32x32 keys never bites: the temporal maps are frames x frames).
* **LocalBlend** (with blend words): from the blend words' cross-attention in the "16x16"
  layers (:func:`~.p2p_attention.blend_layers`; Video-P2P's ``down_cross[2:4] +
  up_cross[:3]``), summed over all steps so far, threshold 0.3, the union of the source word's
  and the edit word's masks, after every sampling step from 20 % of the steps on:
  ``z_edit <- z_source + mask (z_edit - z_source)``.

The maps are controlled in the conditional half of the batch only (Video-P2P's controller
changes ``attn[h // 2:]``); the unconditional rows keep their own attention.
"""

from __future__ import annotations

import torch

from ..models.attention import TemporalAttention
from .p2p_attention import ControlPlan, PromptControl, blend_layers, cross_attention_layers
from .prompt_to_prompt import (
    MAX_TOKENS,
    CrossAttentionControl,
    LocalBlend,
    config_cross_control,
    config_windows,
    cross_replace_alpha,
    self_replace_range,
    token_positions,
)

__all__ = [
    "START_BLEND",
    "VideoP2PControl",
    "plan_video_p2p_control",
    "temporal_attention_layers",
]

START_BLEND = 0.2  # LocalBlend's start_blend in Video-P2P (no end)


def temporal_attention_layers(video_unet) -> tuple[str, ...]:
    """The temporal attention modules (names in the 2-D UNet, ``....temporal.attn``)."""
    return tuple(f"{name}.attn" for name, module in video_unet.unet.named_modules()
                 if isinstance(module, TemporalAttention))  # fmt: skip


def _blend_weights(tokenizer, config) -> torch.Tensor:
    """``(2, 77)``: 1 on the source prompt's blend-word tokens (row 0), the edit's (row 1)."""
    weights = torch.zeros(2, MAX_TOKENS)
    edit_words = config.edit_blend_words or config.blend_words
    for row, (prompt, words) in enumerate(((config.source_prompt, config.blend_words),
                                           (config.prompt, edit_words))):  # fmt: skip
        for word in words:
            weights[row, list(token_positions(tokenizer, prompt, word, what="blend word"))] = 1.0
    return weights


class VideoP2PControl:
    """The plan, the controller and the blend words of one edit; :meth:`new` makes the
    processors' state (and a fresh LocalBlend) for one sampling run."""

    def __init__(self, plan: ControlPlan, control: CrossAttentionControl | None,
                 blend_weights: torch.Tensor | None, config) -> None:  # fmt: skip
        self.plan, self.control, self.blend_weights = plan, control, blend_weights
        self.num_steps = config.inference_steps
        self.threshold = config.blend_threshold

    def new(self, *, fast: bool) -> PromptControl:
        local_blend = None
        if self.blend_weights is not None:
            local_blend = LocalBlend(self.blend_weights, self.num_steps, threshold=self.threshold,
                                     start_blend=START_BLEND)  # fmt: skip
        return PromptControl(
            self.plan, self.control, num_steps=self.num_steps, source="batch",
            local_blend=local_blend, batch_videos=3 if fast else 4, videos=2,
        )  # fmt: skip


def plan_video_p2p_control(video_unet, tokenizer, config) -> tuple[VideoP2PControl | None, dict]:
    """Video-P2P's control of an edit (module docstring), and what to log; None when nothing
    is controlled (no cross window, no self steps or temporal layers, no blend words)."""
    n = config.inference_steps
    alpha = cross_replace_alpha(n, config_windows(config.cross_replace), tokenizer, config.prompt)
    cross_steps = frozenset(n - 1 - i for i in range(n) if alpha[i].any())
    cross = cross_attention_layers(video_unet, 1) if cross_steps else {}
    temporal = temporal_attention_layers(video_unet)
    self_steps = frozenset(n - 1 - i for i in self_replace_range(n, config.self_replace))
    self_layers = temporal if self_steps else ()
    blend = blend_layers(video_unet) if config.blend_words else {}
    log = {"cross_layers": len(cross), "cross_steps": len(cross_steps) if cross else 0,
           "temporal_layers": len(self_layers), "self_steps": len(self_steps) if self_layers else 0,
           "blend_layers": sorted(blend)}  # fmt: skip
    if not temporal:
        log["note"] = "no temporal attention in this UNet: nothing to replace as 'self'"
    if not (cross or self_layers or blend):
        return None, log
    control = None
    if cross:
        control = config_cross_control(tokenizer, config, n, log)
    weights = _blend_weights(tokenizer, config) if blend else None
    if weights is not None:
        log["blend_tokens"] = [[int(i) for i in row.nonzero()] for row in weights]
    plan = ControlPlan(
        cross_layers=cross, cross_steps=cross_steps if cross else frozenset(),
        blend_layers=blend, self_layers=self_layers,
        self_steps=self_steps if self_layers else frozenset(),
    )  # fmt: skip
    return VideoP2PControl(plan, control, weights, config), log
