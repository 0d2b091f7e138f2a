"""Null-text inversion (Mokady et al. 2022) of a latent video, as Video-P2P runs it.

Plain DDIM inversion reconstructs its source only when sampled without guidance; under
classifier-free guidance (7.5) the sampled path drifts away. Null-text inversion keeps the
inversion and tunes the *unconditional* embedding instead, one per sampling step, so that the
guided sampling path passes through the inverted latents:

* the **pivot** is plain DDIM inversion with the source prompt at guidance 1:
  ``z*_0, z*_1, ..., z*_K`` (:func:`~inr_smooth.inversion.ddim_invert`);
* sampling step ``i = 0 .. K-1`` goes from ``t = T`` down (schedule index ``k = K-1-i``).
  ``z_bar`` starts at ``z*_K`` (or a given start, e.g. INR(TF)'s ``z_K*``). At step ``i`` the
  embedding ``phi`` starts from step ``i-1``'s result (step 0: the empty prompt's) and is
  optimised with Adam, ``lr = 1e-2 (1 - i/100)``, for up to ``num_inner_steps`` (10)
  iterations of

      eps  = eps(z_bar, t, phi) + w (eps(z_bar, t, c) - eps(z_bar, t, phi))   (w = 7.5)
      loss = MSE(DDIM step of z_bar with eps, z*_(k))

  stopping after the iteration whose loss (before its Adam step) is below
  ``epsilon + i * 2e-5`` (``epsilon`` 1e-5); ``phi_i`` is kept and ``z_bar`` advances one
  guided step with it. One ``phi`` per step is shared by every frame: the video is one sample
  whose single prompt embedding the UNet repeats per frame.

Video-P2P (ShaoTengLiu/Video-P2P 92d2b52, ``run_videop2p.py``: ``NullInversion``) hard-codes
``K = 50``; the per-step formulas above are its own and are used as they are for any ``K``.
Its ``--fast`` mode skips this optimisation altogether (see :mod:`~.pipelines.video_p2p`).

The noise predictor is any differentiable ``noise_fn(latents, timestep, prompt_embeds)``:
nothing here depends on a particular model. Gradients flow into ``phi`` only (the model's
weights are frozen by the caller); the caller may enable gradient checkpointing on the model
and pass ``autocast`` (a context-manager factory) and a ``grad_scaler`` for half precision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from .inversion import DDIMSchedule

__all__ = [
    "EARLY_STOP_SLOPE",
    "LEARNING_RATE",
    "EmbedNoiseFn",
    "NullTextResult",
    "null_text_optimization",
    "sample_with_null_text",
]

EmbedNoiseFn = Callable[[Tensor, int, Tensor], Tensor]
LEARNING_RATE = 1e-2  # Adam's rate at step 0; step i: 1e-2 * (1 - i / 100)
LR_DECAY_STEPS = 100.0
EARLY_STOP_SLOPE = 2e-5  # step i stops below epsilon + i * 2e-5


@dataclass(eq=False)
class NullTextResult:
    """The optimised unconditional embeddings and how each step went."""

    embeddings: Tensor  # (K, 1, n, d) float32; row i: sampling step i (0 = t = T, noisiest)
    iterations: list[int] = field(default_factory=list)  # Adam iterations per step
    losses: list[float] = field(default_factory=list)  # the last loss evaluated per step

    def to_dict(self) -> dict:
        return {
            "steps": int(self.embeddings.shape[0]),
            "embedding_shape": list(self.embeddings.shape),
            "embedding_mb": round(self.embeddings.numel() * 4 / 2**20, 3),
            "iterations": list(self.iterations),
            "total_iterations": int(sum(self.iterations)),
            "losses": [float(f"{x:.4g}") for x in self.losses],
        }


def _check(pivot: Sequence[Tensor], schedule: DDIMSchedule, cond: Tensor, uncond: Tensor) -> None:
    if len(pivot) != len(schedule) + 1:
        raise ValueError(
            f"expected the pivot's {len(schedule) + 1} latents z_0 .. z_K for {len(schedule)} "
            f"steps, got {len(pivot)}"
        )
    if cond.ndim != 3 or cond.shape[0] != 1 or uncond.shape != cond.shape:
        raise ValueError(
            f"expected conditional and unconditional embeddings of shape (1, n, d), got "
            f"{tuple(cond.shape)} and {tuple(uncond.shape)}"
        )


def null_text_optimization(
    pivot: Sequence[Tensor],
    noise_fn: EmbedNoiseFn,
    schedule: DDIMSchedule,
    cond_embeds: Tensor,
    uncond_embeds: Tensor,
    *,
    guidance_scale: float = 7.5,
    num_inner_steps: int = 10,
    epsilon: float = 1e-5,
    start_latents: Tensor | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
    grad_scaler=None,
    progress: bool = False,
) -> NullTextResult:
    """Optimise one unconditional embedding per sampling step (module docstring).

    Args:
        pivot: ``[z*_0, ..., z*_K]``, the DDIM inversion with the source prompt, no guidance;
            each ``(1, c, f, h, w)``.
        noise_fn: ``noise_fn(latents, timestep, prompt_embeds) -> noise_pred``, differentiable
            in ``prompt_embeds``.
        schedule: the inversion's :class:`~inr_smooth.inversion.DDIMSchedule`.
        cond_embeds, uncond_embeds: the source prompt's and the empty prompt's ``(1, n, d)``.
        guidance_scale: ``w`` of the guided step being matched.
        num_inner_steps: at most this many Adam iterations per step (>= 1).
        epsilon: early-stop threshold at step 0 (grows by 2e-5 a step).
        start_latents: where the guided path starts (default ``z*_K``).
        autocast: a factory of the context the model calls run in (e.g. ``torch.autocast``).
        grad_scaler: a ``torch.amp.GradScaler`` for float16 gradients, or None.
        progress: show a progress bar over the steps.
    """
    _check(pivot, schedule, cond_embeds, uncond_embeds)
    if num_inner_steps < 1:
        raise ValueError(f"num_inner_steps must be at least 1, got {num_inner_steps}")
    autocast = autocast or contextlib.nullcontext
    num_steps = len(schedule)
    z = (pivot[-1] if start_latents is None else start_latents).detach().float()
    cond = cond_embeds.detach().float()
    phi = uncond_embeds.detach().float().clone()
    result = NullTextResult(torch.empty(0))
    kept = []
    bar = tqdm(range(num_steps), desc="null-text optimisation", disable=not progress)
    for i in bar:
        index = num_steps - 1 - i
        timestep = int(schedule.timesteps[index])
        target = pivot[index].detach().float()
        with torch.no_grad(), autocast():
            eps_cond = noise_fn(z, timestep, cond).float()
        phi = phi.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([phi], lr=LEARNING_RATE * (1.0 - i / LR_DECAY_STEPS))
        threshold = epsilon + i * EARLY_STOP_SLOPE
        iterations = 0
        while iterations < num_inner_steps:
            iterations += 1
            with autocast():
                eps_uncond = noise_fn(z, timestep, phi).float()
            eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
            loss = F.mse_loss(schedule.sample_step(z, eps, index), target)
            optimizer.zero_grad(set_to_none=True)
            if grad_scaler is None:
                loss.backward()
                optimizer.step()
            else:
                grad_scaler.scale(loss).backward()
                grad_scaler.step(optimizer)
                grad_scaler.update()
            value = float(loss.detach())
            if value < threshold:
                break
        result.iterations.append(iterations)
        result.losses.append(value)
        bar.set_postfix(loss=f"{value:.2e}", refresh=False)
        phi = phi.detach()
        kept.append(phi.clone())
        with torch.no_grad(), autocast():  # advance the guided path with phi_i
            eps_uncond = noise_fn(z, timestep, phi).float()
        z = schedule.sample_step(z, eps_uncond + guidance_scale * (eps_cond - eps_uncond), index)
    result.embeddings = torch.stack(kept)  # (K, 1, n, d)
    return result


@torch.no_grad()
def sample_with_null_text(
    start_latents: Tensor,
    noise_fn: EmbedNoiseFn,
    schedule: DDIMSchedule,
    cond_embeds: Tensor,
    embeddings: Tensor,
    *,
    guidance_scale: float = 7.5,
) -> Tensor:
    """The source branch alone: guided DDIM sampling with the step's optimised embedding as
    the unconditional one. Returns the float32 latents at the lowest level."""
    if embeddings.shape[0] != len(schedule):
        raise ValueError(
            f"expected one embedding per step ({len(schedule)}), got {embeddings.shape[0]}"
        )
    z = start_latents.detach().float()
    for i in range(len(schedule)):
        index = len(schedule) - 1 - i
        timestep = int(schedule.timesteps[index])
        eps_cond = noise_fn(z, timestep, cond_embeds).float()
        eps_uncond = noise_fn(z, timestep, embeddings[i]).float()
        z = schedule.sample_step(z, eps_uncond + guidance_scale * (eps_cond - eps_uncond), index)
    return z
