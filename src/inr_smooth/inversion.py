"""DDIM inversion of a latent video, with per-step noise hooks and INR(TF) (spec §4).

The noise predictor is any callable ``noise_fn(latents, timestep) -> noise_pred`` on
``(b, c, f, h, w)`` latents, so nothing here depends on a particular model: a video UNet with
classifier-free guidance, or an analytic function in tests.

The noise levels come from a diffusers scheduler: :class:`DDIMSchedule` reads the timesteps
and ``alphas_cumprod`` of :class:`diffusers.DDIMInverseScheduler` built from the scheduler's
config, and steps exactly as diffusers' ``DDIMInverseScheduler`` / ``DDIMScheduler`` do
(tested step for step). For Stable Diffusion 1.x and K = 50 the levels are 1, 21, ..., 981.

Inversion step k (1-based) evaluates ``noise_fn`` on the latent of level ``tau_(k-1)`` at
timestep ``tau_k`` and moves it to level ``tau_k``:

    z_k = sqrt(abar_k / abar_(k-1)) z_(k-1) + c_k eps_k,
    c_k = sqrt(1 - abar_k) - sqrt(abar_k / abar_(k-1)) sqrt(1 - abar_(k-1)).

Latents are kept in float32 throughout; ``noise_fn`` casts to its model's dtype itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from diffusers import DDIMInverseScheduler
from torch import Tensor
from tqdm.auto import tqdm

from .relations import CHAINS, inr_inversion_noise

NoiseFn = Callable[[Tensor, int], Tensor]
ApplyAt = Literal["final_step", "every_step"]
NoiseSource = Literal["gaussian", "implied"]
APPLY_AT = ("final_step", "every_step")
NOISE_SOURCES = ("gaussian", "implied")

__all__ = [
    "APPLY_AT",
    "NOISE_SOURCES",
    "DDIMSchedule",
    "InversionStep",
    "InversionTrajectory",
    "ddim_invert",
    "ddim_sample",
]


@dataclass(frozen=True, eq=False)
class DDIMSchedule:
    """The K noise levels of DDIM inversion and sampling, read from a diffusers scheduler.

    Step ``i`` (0-based) of inversion moves a latent from ``alphas_cumprod_prev[i]`` to
    ``alphas_cumprod[i]`` at timestep ``timesteps[i]``; sampling runs the same steps in reverse.
    """

    timesteps: Tensor  # (K,) int64, ascending: tau_1 .. tau_K
    alphas_cumprod: Tensor  # (K,) float64: abar at tau_k
    alphas_cumprod_prev: Tensor  # (K,) float64: abar one DDIM step below tau_k

    @classmethod
    def from_scheduler(cls, scheduler, num_inference_steps: int = 50) -> DDIMSchedule:
        """Build from any diffusers scheduler (or its config) of an epsilon-prediction model.

        ``clip_sample`` is switched off: clipping the predicted original sample would make
        inversion irreversible.
        """
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(
                f"num_inference_steps must be a positive integer, got {num_inference_steps!r}"
            )
        config = getattr(scheduler, "config", scheduler)
        prediction_type = config.get("prediction_type", "epsilon")
        if prediction_type != "epsilon":
            raise ValueError(
                "DDIM inversion expects an epsilon-prediction scheduler (Stable Diffusion 1.x), "
                f"got prediction_type={prediction_type!r}"
            )
        inverse = DDIMInverseScheduler.from_config(config, clip_sample=False)
        num_train = inverse.config.num_train_timesteps
        if num_inference_steps > num_train:
            raise ValueError(
                f"num_inference_steps ({num_inference_steps}) cannot exceed the scheduler's "
                f"num_train_timesteps ({num_train})"
            )
        inverse.set_timesteps(num_inference_steps)
        timesteps = inverse.timesteps.to(torch.int64).cpu()
        abar_all = inverse.alphas_cumprod.to(torch.float64)
        # the level below t, exactly as DDIMInverseScheduler.step / DDIMScheduler.step take it
        below = (timesteps - num_train // num_inference_steps).clamp(max=num_train - 1)
        initial = torch.as_tensor(inverse.initial_alpha_cumprod, dtype=torch.float64)
        abar_prev = torch.where(below >= 0, abar_all[below.clamp(min=0)], initial)
        return cls(timesteps, abar_all[timesteps], abar_prev)

    def __len__(self) -> int:
        return int(self.timesteps.shape[0])

    def noise_coefficient(self, index: int) -> float:
        """``c_k``: how much of step ``index``'s noise ends up in the inverted latent."""
        abar, prev = self.alphas_cumprod[index], self.alphas_cumprod_prev[index]
        return float((1 - abar).sqrt() - (abar / prev).sqrt() * (1 - prev).sqrt())

    def invert_step(self, latents: Tensor, noise_pred: Tensor, index: int) -> Tensor:
        """One DDIM inversion step: level ``tau_(k-1)`` -> ``tau_k`` with ``k = index + 1``."""
        return _ddim_move(
            latents, noise_pred, self.alphas_cumprod_prev[index], self.alphas_cumprod[index]
        )

    def sample_step(self, latents: Tensor, noise_pred: Tensor, index: int) -> Tensor:
        """One DDIM sampling step, the reverse of :meth:`invert_step` with the same index."""
        return _ddim_move(
            latents, noise_pred, self.alphas_cumprod[index], self.alphas_cumprod_prev[index]
        )

    def implied_noise(self, latents: Tensor, source_latents: Tensor, index: int) -> Tensor:
        """``(z_k - sqrt(abar_k) z_0) / sqrt(1 - abar_k)``: the forward-process noise that
        turns the source latents into ``latents`` at level ``tau_k`` (spec §4, "implied")."""
        abar = self.alphas_cumprod[index]
        return ((latents - abar.sqrt() * source_latents) / (1 - abar).sqrt()).to(latents.dtype)


def _ddim_move(latents: Tensor, noise: Tensor, abar_from: Tensor, abar_to: Tensor) -> Tensor:
    """Deterministic DDIM transfer between two noise levels with a fixed epsilon."""
    pred_original = (latents - (1 - abar_from).sqrt() * noise) / abar_from.sqrt()
    return (abar_to.sqrt() * pred_original + (1 - abar_to).sqrt() * noise).to(latents.dtype)


@dataclass(frozen=True, eq=False)
class InversionStep:
    """What a step hook sees. ``noise`` is the noise about to be used at this step (the
    prediction, possibly already changed by an earlier hook)."""

    index: int  # 0-based step number; the step goes to level timesteps[index]
    timestep: int
    latents: Tensor  # z_(k-1), the input of this step, (b, c, f, h, w) float32
    noise_pred: Tensor  # eps_inv_k as predicted by noise_fn
    noise: Tensor
    source_latents: Tensor  # z_0
    schedule: DDIMSchedule


StepHook = Callable[[InversionStep], Tensor | None]


@dataclass(eq=False)
class InversionTrajectory:
    """The whole DDIM inversion: sample from ``latents[-1]``."""

    latents: list[Tensor]  # K + 1 entries: z_0 (the input), z_1, ..., z_K
    noise_preds: list[Tensor]  # K entries: eps_inv_k predicted at each step
    noise: list[Tensor]  # K entries: the noise used at each step (hooks applied)
    schedule: DDIMSchedule
    random_noise: Tensor | None = None  # rho of INR(TF), if it was used (last step's)
    metadata: dict = field(default_factory=dict)

    @property
    def timesteps(self) -> Tensor:
        return self.schedule.timesteps

    @property
    def final_latents(self) -> Tensor:
        return self.latents[-1]


class _INRHook:
    """INR(TF) as a step hook: replace the step's noise by ``eps_star`` (spec §4)."""

    def __init__(self, *, gamma, alpha, beta, chain, apply_at, noise_source, random_noise):
        self.kwargs = {"gamma": gamma, "alpha": alpha, "beta": beta, "chain": chain}
        self.apply_at = apply_at
        self.noise_source = noise_source
        self.random_noise = random_noise  # fixed rho for "gaussian", reused at every step

    def __call__(self, step: InversionStep) -> Tensor | None:
        last = step.index == len(step.schedule) - 1
        if self.apply_at == "final_step" and not last:
            return None
        if self.noise_source == "implied":
            plain = step.schedule.invert_step(step.latents, step.noise, step.index)
            self.random_noise = step.schedule.implied_noise(plain, step.source_latents, step.index)
        return inr_inversion_noise(step.noise, self.random_noise, **self.kwargs)


def _check_latents(latents: Tensor) -> None:
    if not isinstance(latents, Tensor) or latents.ndim != 5:
        shape = tuple(latents.shape) if isinstance(latents, Tensor) else type(latents).__name__
        raise ValueError(f"expected latents of shape (b, c, f, h, w), got {shape}")
    if not bool(torch.isfinite(latents).all()):
        raise ValueError("latents contain NaN or inf values")


def _call_noise_fn(noise_fn: NoiseFn, latents: Tensor, timestep: int) -> Tensor:
    noise_pred = noise_fn(latents, timestep)
    if not isinstance(noise_pred, Tensor) or noise_pred.shape != latents.shape:
        got = tuple(noise_pred.shape) if isinstance(noise_pred, Tensor) else type(noise_pred)
        raise ValueError(
            f"noise_fn must return a tensor shaped like its input {tuple(latents.shape)}, got {got}"
        )
    return noise_pred.float()


def ddim_invert(
    latents: Tensor,
    noise_fn: NoiseFn,
    scheduler,
    num_inference_steps: int = 50,
    *,
    inversion_weight: float = 0.0,
    alpha: float = 0.5,
    beta: float = 0.5,
    chain: str = "adjacent",
    apply_at: ApplyAt = "final_step",
    noise_source: NoiseSource = "gaussian",
    generator: torch.Generator | None = None,
    random_noise: Tensor | None = None,
    step_hooks: Sequence[StepHook] = (),
    progress: bool = False,
) -> InversionTrajectory:
    """DDIM-invert latents ``z_0`` to level ``tau_K``, optionally with INR(TF) noise.

    Args:
        latents: ``z_0``, the encoded source video, shape ``(b, c, f, h, w)``.
        noise_fn: ``noise_fn(latents, timestep) -> noise_pred`` (same shape); guidance, if any,
            is the callable's business.
        scheduler: a diffusers scheduler (or config) of the model; see
            :meth:`DDIMSchedule.from_scheduler`. A :class:`DDIMSchedule` is taken as is.
        num_inference_steps: K, the number of inversion steps (ignored for a DDIMSchedule).
        inversion_weight: gamma of INR(TF), in [0, 1]; 0 is plain DDIM inversion.
        alpha, beta, chain: passed to :func:`inr_smooth.relations.inr_inversion_noise`.
        apply_at: ``"final_step"`` replaces only the last step's noise, so only ``z_K``
            changes (by ``c_K * gamma * (eps_inr - eps_inv_K)``); ``"every_step"`` applies
            INR at every step, and the model sees the modified trajectory.
        noise_source: ``"gaussian"``: rho ~ N(0, 1) drawn once from ``generator`` (or given as
            ``random_noise``) and reused at every step; ``"implied"``: rho is the noise implied
            by each step's plain inverted latent.
        generator: the seeded generator for Gaussian rho.
        random_noise: rho itself, instead of drawing it.
        step_hooks: extra hooks run after INR at every step; a hook returns the noise to use
            instead, or None to keep it.
        progress: show a progress bar.

    Returns:
        An :class:`InversionTrajectory` with every level's latents and every step's noise.
    """
    _check_latents(latents)
    if apply_at not in APPLY_AT:
        raise ValueError(f"apply_at must be one of {APPLY_AT}, got {apply_at!r}")
    if noise_source not in NOISE_SOURCES:
        raise ValueError(f"noise_source must be one of {NOISE_SOURCES}, got {noise_source!r}")
    if chain not in CHAINS:
        raise ValueError(f"chain must be one of {CHAINS}, got {chain!r}")
    if not 0.0 <= inversion_weight <= 1.0:
        raise ValueError(f"inversion_weight (gamma) must be in [0, 1], got {inversion_weight}")
    schedule = (
        scheduler
        if isinstance(scheduler, DDIMSchedule)
        else DDIMSchedule.from_scheduler(scheduler, num_inference_steps)
    )
    source = latents.detach().float()
    hooks = list(step_hooks)
    rho = None
    if inversion_weight > 0:
        if noise_source == "gaussian":
            rho = _gaussian_noise(source, generator, random_noise)
        hooks.insert(
            0,
            _INRHook(
                gamma=inversion_weight,
                alpha=alpha,
                beta=beta,
                chain=chain,
                apply_at=apply_at,
                noise_source=noise_source,
                random_noise=rho,
            ),
        )

    trajectory = InversionTrajectory([source], [], [], schedule)
    z = source
    for index in tqdm(range(len(schedule)), desc="DDIM inversion", disable=not progress):
        timestep = int(schedule.timesteps[index])
        noise_pred = _call_noise_fn(noise_fn, z, timestep)
        noise = noise_pred
        for hook in hooks:
            step = InversionStep(index, timestep, z, noise_pred, noise, source, schedule)
            changed = hook(step)
            if changed is not None:
                noise = changed
        z = schedule.invert_step(z, noise, index)
        trajectory.latents.append(z)
        trajectory.noise_preds.append(noise_pred)
        trajectory.noise.append(noise)
    if inversion_weight > 0:
        trajectory.random_noise = hooks[0].random_noise
    trajectory.metadata = {
        "num_inference_steps": len(schedule),
        "inversion_weight": inversion_weight,
        "alpha": alpha,
        "beta": beta,
        "chain": chain,
        "apply_at": apply_at,
        "noise_source": noise_source,
    }
    return trajectory


def _gaussian_noise(
    like: Tensor, generator: torch.Generator | None, random_noise: Tensor | None
) -> Tensor:
    if random_noise is not None:
        if random_noise.shape != like.shape:
            raise ValueError(
                f"random_noise must have the latents' shape {tuple(like.shape)}, "
                f"got {tuple(random_noise.shape)}"
            )
        return random_noise.to(like.device, torch.float32)
    if generator is None:
        raise ValueError(
            "INR(TF) with Gaussian noise needs a seeded torch.Generator (generator=...) "
            "or random_noise=..., so that the run can be reproduced"
        )
    noise = torch.randn(like.shape, generator=generator, device=generator.device)
    return noise.to(like.device)


def ddim_sample(
    latents: Tensor,
    noise_fn: NoiseFn,
    scheduler,
    num_inference_steps: int = 50,
    *,
    progress: bool = False,
    step_callback: Callable[[int, Tensor], Tensor | None] | None = None,
) -> Tensor:
    """DDIM sampling from level ``tau_K`` down to ``tau_0`` (the reverse of :func:`ddim_invert`).

    Args mirror :func:`ddim_invert`; ``step_callback(index, latents)``, if given, runs after
    each step (``index`` into the schedule, counting down) and may return latents to go on
    with (prompt-to-prompt's local blending), or None. Returns the float32 latents at the
    lowest level.
    """
    _check_latents(latents)
    schedule = (
        scheduler
        if isinstance(scheduler, DDIMSchedule)
        else DDIMSchedule.from_scheduler(scheduler, num_inference_steps)
    )
    z = latents.detach().float()
    steps = range(len(schedule) - 1, -1, -1)
    for index in tqdm(steps, desc="DDIM sampling", disable=not progress):
        noise_pred = _call_noise_fn(noise_fn, z, int(schedule.timesteps[index]))
        z = schedule.sample_step(z, noise_pred, index)
        if step_callback is not None:
            changed = step_callback(index, z)
            z = z if changed is None else changed.float()
    return z
