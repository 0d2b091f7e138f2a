"""FateZero's prompt-to-prompt settings for ``inr-smooth edit``: config checks and the plan.

:class:`~.edit.EditConfig` carries FateZero's ``p2p_config`` under our names:

============================  ===========================================================
FateZero                      ``EditConfig``
============================  ===========================================================
``cross_replace_steps``       ``cross_replace`` (a fraction, or ``{default: f, WORD: [s, e]}``)
``self_replace_steps``        ``self_replace``
``is_replace_controller``     ``controller`` (``auto``: word swap iff as many words)
``eq_params``                 ``reweight`` (``{WORD: scale}``)
``blend_words`` (source)      ``blend_words``
``blend_th``                  ``blend_threshold``
``SparseCausalAttention_      ``attention`` (``sparse_causal`` = ``[-1, 'first']``,
index``                       ``middle`` = ``['mid']``)
``least_sc_channel``          ``cross_frame_min_channels``
============================  ===========================================================

:func:`plan_prompt_control` turns them into the layers and steps of
:mod:`.p2p_attention`: cross-attention is recorded and controlled on the layers fusion uses
(``fusion_min_downsample``, FateZero's "at most 32x32 queries"), for the sampling steps of the
``cross_replace`` windows; with blend words, the blend map comes from the "16x16" layers
(:func:`~.p2p_attention.blend_layers`) at every self-replaced step.
"""

from __future__ import annotations

import torch

from .p2p_attention import ControlPlan, PromptControl, blend_layers, cross_attention_layers
from .p2p_words import check_control_fields
from .prompt_to_prompt import (
    MAX_TOKENS,
    CrossAttentionControl,
    config_cross_control,
    config_windows,
    cross_replace_alpha,
)

__all__ = ["check_control_fields", "new_prompt_control", "plan_prompt_control"]


def plan_prompt_control(
    video_unet, tokenizer, config, self_steps: frozenset[int], blend_tokens: tuple[int, ...]
) -> tuple[ControlPlan | None, CrossAttentionControl | None, dict]:
    """The plan and controller of an edit, and what to log; ``(None, None, log)`` when no step
    records or controls cross-attention (then nothing is installed)."""
    n = config.inference_steps
    if (config.cross_replace or blend_tokens) and not hasattr(video_unet, "unet"):
        raise ValueError(
            "prompt-to-prompt control (cross_replace > 0 or blend words) needs a VideoUNet, got "
            f"{type(video_unet).__name__}"
        )
    alpha = cross_replace_alpha(n, config_windows(config.cross_replace), tokenizer, config.prompt)
    cross_steps = frozenset(n - 1 - i for i in range(n) if alpha[i].any())
    blend = blend_layers(video_unet) if blend_tokens and self_steps else {}
    layers = cross_attention_layers(video_unet, config.fusion_min_downsample) if cross_steps else {}
    log = {"cross_layers": len(layers), "cross_steps": len(cross_steps) if layers else 0,
           "blend_layers": sorted(blend)}  # fmt: skip
    if not layers and not blend:
        return None, None, log
    control = None
    if layers:
        control = config_cross_control(tokenizer, config, n, log)
    plan = ControlPlan(
        cross_layers=layers, cross_steps=cross_steps if layers else frozenset(),
        blend_layers=blend, blend_tokens=tuple(blend_tokens) if blend else (),
        blend_steps=frozenset(self_steps) if blend else frozenset(),
    )  # fmt: skip
    return plan, control, log


def new_prompt_control(plan, control, store, num_steps: int) -> PromptControl | None:
    """The ``"store"`` state for one phase of an edit (None without a plan)."""
    if plan is None:
        return None
    weights = torch.zeros(MAX_TOKENS)
    weights[list(plan.blend_tokens)] = 1.0
    return PromptControl(plan, control, store, num_steps=num_steps, blend_weights=weights)
