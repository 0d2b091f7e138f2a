"""Interframe noise relations: the INR Smooth mathematics as pure tensor functions.

Reference: Yu, Han, Zhang, "INR Smooth: Interframe noise relation-based smooth video
synthesis on diffusion models", PLoS One 20(4): e0321193 (2025). The published text lost its
display equations; the forms below follow the project's specification
(``shared/spec/noise-relations.md``), which reconstructs them from the prose.
Section numbers (``spec §2``) refer to that specification.

Every function takes video tensors laid out ``(b, c, f, h, w)`` (batch, channels, frames,
height, width); ``frame_dim`` names another frame axis if your layout differs (the batch axis
is always 0). Arithmetic is done in float32 whatever the input dtype.

* :func:`inr_smoothing_loss`  -- INR(T), the smoothing loss for tuned models (spec §2).
* :func:`smoothvideo_loss`    -- the SmoothVideo baseline loss (spec §3).
* :func:`inr_inversion_noise` -- INR(TF), inversion noise for training-free editors (spec §4).
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, NamedTuple

import torch
from torch import Tensor

Chain = Literal["adjacent", "anchored"]
CHAINS = ("adjacent", "anchored")

__all__ = [
    "CHAINS",
    "INRLossTerms",
    "inr_inversion_noise",
    "inr_smoothing_loss",
    "smoothvideo_kappa",
    "smoothvideo_loss",
]


class INRLossTerms(NamedTuple):
    """INR(T) loss with its two directional terms (unweighted), for logging."""

    loss: Tensor
    last_to_first: Tensor  # MSE(1), paper Eq 18 direction
    first_to_last: Tensor  # MSE(2), paper Eq 17 direction


# ----------------------------------------------------------------------------- validation


def _frames_last(x: Tensor, frame_dim: int, name: str) -> Tensor:
    """Check a 5-D video tensor and return it as float32 ``(b, c, h, w, f)``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 5:
        raise ValueError(
            f"{name}: expected a 5-D video tensor (b, c, f, h, w), got shape {tuple(x.shape)}"
        )
    if not -5 <= frame_dim <= 4 or frame_dim % 5 == 0:
        raise ValueError(f"frame_dim must index a non-batch axis (1..4), got {frame_dim}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf values")
    return x.float().movedim(frame_dim, -1)


def _same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _weights(alpha: float, beta: float) -> None:
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite non-negative weight, got {value}")


def _chain(chain: str) -> None:
    if chain not in CHAINS:
        raise ValueError(f"chain must be one of {CHAINS}, got {chain!r}")


def _per_sample_mean(x: Tensor) -> Tensor:
    """Mean over every axis but the batch axis: ``(b, ...) -> (b,)``."""
    return x.flatten(1).mean(dim=1)


# ----------------------------------------------------------------------------- INR(T)


def inr_smoothing_loss(
    noise_pred: Tensor,
    noise: Tensor,
    *,
    alpha: float = 0.5,
    beta: float = 0.5,
    chain: Chain = "adjacent",
    detach_anchor: bool = False,
    reduction: Literal["mean", "none"] = "mean",
    return_terms: bool = False,
    frame_dim: int = 2,
) -> Tensor | INRLossTerms:
    """INR(T) smoothing loss tying each frame's noise error to its neighbours' (spec §2).

    With ``e = noise_pred - noise`` (the prediction error, ``eps_hat - eps``) the paper's
    interframe relations (Eqs 17, 18) ask ``e^n - e^(n-1) = 0`` (first -> last) and
    ``e^n - e^(n+1) = 0`` (last -> first). The loss is

        MSE(1) = mean_{b, c, n=0..N-2, h, w} (e^n - e^(n+1))^2     # last -> first, Eq 18
        MSE(2) = mean_{b, c, n=1..N-1, h, w} (e^n - e^(n-1))^2     # first -> last, Eq 17
        L_smooth = alpha * MSE(1) + beta * MSE(2)

    and is added to the diffusion loss as ``mean((eps_hat - eps)^2) + lambda * L_smooth``
    (paper: lambda 2.0 on Tune-A-Video, 0.2 on ControlVideo). An error that is the same in
    every frame costs nothing, so the loss does not pull neighbouring frames together.

    Args:
        noise_pred: ``eps_hat``, the UNet's noise prediction, shape ``(b, c, f, h, w)``.
            Gradients flow to this tensor only.
        noise: ``eps``, the Gaussian noise that was added, same shape (treated as constant).
        alpha: weight of the last -> first term MSE(1); must be >= 0.
        beta: weight of the first -> last term MSE(2); must be >= 0.
        chain: ``"adjacent"`` compares neighbouring frames (above). ``"anchored"`` propagates
            each direction from its end of the video: MSE(2) compares ``e^n`` with ``e^0``
            (n = 1..N-1), MSE(1) compares ``e^n`` with ``e^(N-1)`` (n = 0..N-2).
        detach_anchor: treat the neighbour (or anchor) prediction of each directional term
            as a constant, so each direction propagates information one way. Values are
            unchanged; gradients change.
        reduction: ``"mean"`` gives a 0-dim tensor; ``"none"`` a per-sample tensor ``(b,)``.
            The batch mean of the per-sample losses equals the ``"mean"`` loss.
        return_terms: also return the unweighted directional terms, as
            ``INRLossTerms(loss, last_to_first, first_to_last)`` (a tuple).
        frame_dim: the frame axis of both tensors (default 2).

    Returns:
        The float32 loss (0-dim or ``(b,)``), or an :class:`INRLossTerms` tuple.
        With a single frame the loss is an exact zero still connected to ``noise_pred``.

    Raises:
        ValueError: shapes differ (both are named), a tensor is not 5-D, a weight is
            negative, an option is unknown, or an input holds NaN/inf.
    """
    _same_shape(noise_pred, noise, "noise_pred", "noise")
    _weights(alpha, beta)
    _chain(chain)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    pred = _frames_last(noise_pred, frame_dim, "noise_pred")  # (b, c, h, w, f)
    target = _frames_last(noise, frame_dim, "noise").detach()
    err = pred - target  # e = eps_hat - eps

    def anchor(x: Tensor) -> Tensor:
        return x.detach() if detach_anchor else x

    if err.shape[-1] == 1:
        # N == 1: no neighbours. An exact zero that is still connected to noise_pred, so
        # backward() works and gives a zero gradient (never NaN from an empty mean).
        last_to_first = first_to_last = err * 0.0
    elif chain == "adjacent":
        # Eq 18: e^n - e^(n+1), n = 0..N-2 ; Eq 17: e^n - e^(n-1), n = 1..N-1
        last_to_first = err[..., :-1] - anchor(err[..., 1:])
        first_to_last = err[..., 1:] - anchor(err[..., :-1])
    else:
        # anchored: e^n - e^(N-1), n = 0..N-2 ; e^n - e^0, n = 1..N-1
        last_to_first = err[..., :-1] - anchor(err[..., -1:])
        first_to_last = err[..., 1:] - anchor(err[..., :1])
    mse1 = _per_sample_mean(last_to_first.square())  # (b,)
    mse2 = _per_sample_mean(first_to_last.square())  # (b,)
    loss = alpha * mse1 + beta * mse2
    if reduction == "mean":
        loss, mse1, mse2 = loss.mean(), mse1.mean(), mse2.mean()
    if return_terms:
        return INRLossTerms(loss, mse1.detach(), mse2.detach())
    return loss


# ----------------------------------------------------------------------------- SmoothVideo


def _second_difference(x: Tensor) -> Tensor:
    """``D2 u^n = 2 u^n - u^(n-1) - u^(n+1)`` on interior frames (frames on the last axis)."""
    return 2 * x[..., 1:-1] - x[..., :-2] - x[..., 2:]


def smoothvideo_kappa(
    timesteps: Tensor, alphas_cumprod: Tensor, *, faithful: bool = False
) -> Tensor:
    """SmoothVideo's noise/latent coupling ``kappa_t`` per timestep (spec §3).

    ``kappa_t = sqrt(abar_t) / (sqrt(abar_t) sqrt(1 - abar_{t-1})
    - sqrt(abar_{t-1}) sqrt(1 - abar_t))`` with ``abar_{t-1}`` one DDPM step back.

    Args:
        timesteps: integer timesteps, shape ``(b,)`` or 0-dim.
        alphas_cumprod: the scheduler's ``alphas_cumprod``, shape ``(T,)``.
        faithful: reproduce the original code, which reads ``abar_{-1}`` at ``t = 0`` as the
            *last* schedule entry (Python indexing). The default uses ``abar_{-1} = 1``.

    Returns:
        float32 tensor of the same shape as ``timesteps`` (negative for 1 <= t <= 999 on
        the SD-1.x schedule).
    """
    if timesteps.is_floating_point():
        raise TypeError(f"timesteps must be integers, got {timesteps.dtype}")
    abar_all = alphas_cumprod.to(device=timesteps.device, dtype=torch.float64)
    num_train = abar_all.shape[0]
    if bool(((timesteps < 0) | (timesteps >= num_train)).any()):
        raise ValueError(f"timesteps must lie in [0, {num_train - 1}], got {timesteps.tolist()}")
    t = timesteps.long()
    abar_t = abar_all[t]
    if faithful:
        abar_prev = abar_all[t - 1]  # t = 0 wraps to the last entry, as the original code
    else:
        abar_prev = torch.where(t > 0, abar_all[(t - 1).clamp(min=0)], torch.ones_like(abar_t))
    denom = abar_t.sqrt() * (1 - abar_prev).sqrt() - abar_prev.sqrt() * (1 - abar_t).sqrt()
    return (abar_t.sqrt() / denom).float()


def smoothvideo_loss(
    noise_pred: Tensor,
    *,
    noisy_latents: Tensor | None = None,
    timesteps: Tensor | None = None,
    alphas_cumprod: Tensor | None = None,
    simple: bool = False,
    lambda_factor: float = 1000.0,
    faithful: bool = False,
    frame_dim: int = 2,
) -> Tensor:
    """SmoothVideo's noise-constraint loss, the baseline INR is compared with (spec §3).

    With the second difference over interior frames ``D2 u^n = 2u^n - u^(n-1) - u^(n+1)``
    (n = 1..N-2):

    * simple mode: ``L = mean |D2 eps_hat|``
    * full mode:   ``L = mean |D2 eps_hat - (kappa_t / lambda_factor) * D2 z_t|`` where
      ``kappa_t`` is :func:`smoothvideo_kappa` and ``z_t`` (``noisy_latents``) is a constant.

    SmoothVideo adds it to the diffusion loss with weight 0.2 and ``lambda_factor`` 1000.

    Args:
        noise_pred: ``eps_hat``, shape ``(b, c, f, h, w)``.
        noisy_latents: ``z_t``, same shape; required unless ``simple``.
        timesteps: integer timesteps ``(b,)`` (one per video) or 0-dim; required unless
            ``simple``.
        alphas_cumprod: the training scheduler's ``alphas_cumprod``; required unless
            ``simple``.
        simple: use the L1 second difference of ``eps_hat`` alone.
        lambda_factor: ``lambda_SV``, the divisor of ``kappa_t`` (default 1000).
        faithful: reproduce the original code's three quirks for exact comparison:
            ``abar_{-1}`` read as the last schedule entry at ``t = 0``; per-sample ``kappa``
            of shape ``(b,)`` broadcast against the *width* axis (right only for b = 1; other
            batch sizes raise unless ``b == w``, where it is silently wrong, as in the
            original); fewer than 3 frames give NaN (with a warning). The default fixes all
            three: ``abar_{-1} = 1``, ``kappa`` per sample, and an exact zero for N <= 2.
        frame_dim: the frame axis (default 2).

    Returns:
        0-dim float32 loss.
    """
    if not math.isfinite(lambda_factor) or lambda_factor <= 0:
        raise ValueError(f"lambda_factor must be a positive number, got {lambda_factor}")
    pred = _frames_last(noise_pred, frame_dim, "noise_pred")  # (b, c, h, w, f)
    b, n_frames = pred.shape[0], pred.shape[-1]
    if not simple:
        missing = [
            name
            for name, value in (
                ("noisy_latents", noisy_latents),
                ("timesteps", timesteps),
                ("alphas_cumprod", alphas_cumprod),
            )
            if value is None
        ]
        if missing:
            raise ValueError(
                f"full SmoothVideo loss needs {', '.join(missing)} (or pass simple=True)"
            )
        _same_shape(noise_pred, noisy_latents, "noise_pred", "noisy_latents")
    if n_frames <= 2:
        if faithful:
            warnings.warn(
                "SmoothVideo loss with fewer than 3 frames is NaN in the original code "
                "(faithful=True); the default gives 0",
                RuntimeWarning,
                stacklevel=2,
            )
            return pred.sum() * float("nan")
        return pred.sum() * 0.0
    d2_pred = _second_difference(pred)  # (b, c, h, w, f-2)
    if simple:
        return d2_pred.abs().mean()

    latents = _frames_last(noisy_latents, frame_dim, "noisy_latents").detach()
    t = torch.as_tensor(timesteps, device=pred.device)
    if t.ndim == 0:
        t = t.expand(b)
    if t.shape != (b,):
        raise ValueError(f"timesteps must have shape ({b},) or be 0-dim, got {tuple(t.shape)}")
    kappa = smoothvideo_kappa(t, alphas_cumprod, faithful=faithful) / lambda_factor  # (b,)
    d2_latents = _second_difference(latents)  # (b, c, h, w, f-2)
    if faithful:
        # the original multiplies (b,) by (b, c, f-2, h, w): kappa lands on the width axis
        d2_latents = d2_latents.movedim(-1, 2)  # (b, c, f-2, h, w)
        if b != 1 and b != d2_latents.shape[-1]:
            raise ValueError(
                f"faithful SmoothVideo loss broadcasts kappa of shape ({b},) against the width "
                f"axis ({d2_latents.shape[-1]}), which only works for batch size 1"
            )
        scaled = (d2_latents * kappa).movedim(2, -1)
    else:
        scaled = d2_latents * kappa.view(b, 1, 1, 1, 1)
    return (d2_pred - scaled).abs().mean()


# ----------------------------------------------------------------------------- INR(TF)


def inr_inversion_noise(
    inversion_noise: Tensor,
    random_noise: Tensor,
    *,
    gamma: float,
    alpha: float = 0.5,
    beta: float = 0.5,
    chain: Chain = "adjacent",
    frame_dim: int = 2,
) -> Tensor:
    """INR(TF): rebuild each frame's inversion noise from its neighbours' (spec §4).

    With ``eps_inv`` (one DDIM inversion step's noise) and a random noise ``rho``:

        eps_b^n = eps_inv^(n+1) + rho^n - rho^(n+1),  n = 0..N-2;  eps_b^(N-1) = eps_inv^(N-1)
        eps_f^n = eps_inv^(n-1) + rho^n - rho^(n-1),  n = 1..N-1;  eps_f^0 = eps_inv^0
        eps_inr  = (alpha * eps_b + beta * eps_f) / (alpha + beta)
        eps_star = (1 - gamma) * eps_inv + gamma * eps_inr

    ``gamma`` is the paper's inversion noise weight (1.0 on FateZero, 0.5 on Video-P2P).
    If ``eps_inv - rho`` is the same in every frame the output equals ``eps_inv``.
    With Gaussian ``rho`` the interior frames of ``eps_inr`` have variance about 2.

    Args:
        inversion_noise: ``eps_inv``, shape ``(b, c, f, h, w)``.
        random_noise: ``rho``, same shape.
        gamma: blend weight in [0, 1]; 0 returns ``inversion_noise`` itself, bit for bit.
        alpha: weight of the last -> first chain ``eps_b`` (>= 0).
        beta: weight of the first -> last chain ``eps_f`` (>= 0); ``alpha + beta > 0``.
        chain: ``"adjacent"`` (above) or ``"anchored"``, where the chains are propagated from
            the ends of the video and telescope to ``eps_f^n = eps_inv^0 + rho^n - rho^0``
            and ``eps_b^n = eps_inv^(N-1) + rho^n - rho^(N-1)``.
        frame_dim: the frame axis of both tensors (default 2).

    Returns:
        ``eps_star`` with the shape and dtype of ``inversion_noise`` (computed in float32).
        A single-frame video returns ``inversion_noise`` for any gamma.
    """
    _same_shape(inversion_noise, random_noise, "inversion_noise", "random_noise")
    _weights(alpha, beta)
    _chain(chain)
    if not (isinstance(gamma, (int, float)) and 0.0 <= gamma <= 1.0):
        raise ValueError(f"gamma (the inversion noise weight) must be in [0, 1], got {gamma!r}")
    if alpha + beta == 0:
        raise ValueError("alpha + beta must be positive (the chains are blended by them)")
    eps_inv = _frames_last(inversion_noise, frame_dim, "inversion_noise")  # (b, c, h, w, f)
    rho = _frames_last(random_noise, frame_dim, "random_noise")
    if gamma == 0 or eps_inv.shape[-1] == 1:
        return inversion_noise

    diff = eps_inv - rho  # eps_b^n = rho^n + diff^(n+1), eps_f^n = rho^n + diff^(n-1)
    if chain == "adjacent":
        src_b = torch.cat([diff[..., 1:], diff[..., -1:]], dim=-1)  # diff^(n+1); seed N-1
        src_f = torch.cat([diff[..., :1], diff[..., :-1]], dim=-1)  # diff^(n-1); seed 0
    else:
        src_b = diff[..., -1:].expand_as(diff)  # diff^(N-1) for every n
        src_f = diff[..., :1].expand_as(diff)  # diff^0 for every n
    eps_inr = rho + (alpha * src_b + beta * src_f) / (alpha + beta)
    eps_star = torch.lerp(eps_inv, eps_inr, gamma)  # (1 - gamma) eps_inv + gamma eps_inr
    return eps_star.movedim(-1, frame_dim).to(inversion_noise.dtype)
