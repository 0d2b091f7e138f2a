"""SmoothVideo baseline: spec §3 and the §5 properties, plus the faithful mode's quirks."""

import pytest
import torch
from diffusers import DDPMScheduler

from inr_smooth.relations import smoothvideo_kappa, smoothvideo_loss

SD_SCHEDULE = DDPMScheduler(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
).alphas_cumprod


def frames(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 1, -1, 1, 1)


def reference_original(model_pred, noisy_latents, t, abar, lambda_factor=1000.0):
    """The original training script's formula, written out for a batch of one."""
    d_pred = (model_pred[:, :, 1:-1] - model_pred[:, :, :-2]) + (
        model_pred[:, :, 1:-1] - model_pred[:, :, 2:]
    )
    d_lat = (noisy_latents[:, :, 1:-1] - noisy_latents[:, :, :-2]) + (
        noisy_latents[:, :, 1:-1] - noisy_latents[:, :, 2:]
    )
    c = torch.sqrt(abar[t]) / (
        torch.sqrt(abar[t]) * torch.sqrt(1 - abar[t - 1])
        - torch.sqrt(abar[t - 1]) * torch.sqrt(1 - abar[t])
    )
    return torch.abs(d_pred - d_lat * c / lambda_factor).mean()


def test_simple_worked_values():
    assert float(smoothvideo_loss(frames(0, 1, 2), simple=True)) == 0.0
    assert float(smoothvideo_loss(frames(0, 1, 0), simple=True)) == 2.0


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("simple", [True, False])
def test_short_videos_give_connected_zero(n, simple):
    pred = torch.randn(1, 4, n, 2, 2, requires_grad=True)
    loss = smoothvideo_loss(
        pred,
        noisy_latents=torch.randn(1, 4, n, 2, 2),
        timesteps=torch.tensor([10]),
        alphas_cumprod=SD_SCHEDULE,
        simple=simple,
    )
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.equal(pred.grad, torch.zeros_like(pred))


def test_faithful_short_video_is_nan_with_a_warning():
    with pytest.warns(RuntimeWarning, match="fewer than 3 frames"):
        loss = smoothvideo_loss(frames(0, 1), simple=True, faithful=True)
    assert torch.isnan(loss)


def test_kappa_is_negative_on_the_sd_schedule():
    t = torch.arange(1, 1000)
    assert bool((smoothvideo_kappa(t, SD_SCHEDULE) < 0).all())


def test_kappa_at_t0_fixed_vs_faithful():
    a0 = SD_SCHEDULE[0].double()
    fixed = smoothvideo_kappa(torch.tensor([0]), SD_SCHEDULE)
    # abar_{-1} = 1: kappa_0 = sqrt(a0) / (0 - sqrt(1 - a0))
    torch.testing.assert_close(fixed, (-(a0 / (1 - a0)).sqrt()).float().view(1))
    faithful = smoothvideo_kappa(torch.tensor([0]), SD_SCHEDULE, faithful=True)
    last = SD_SCHEDULE[-1].double()
    expected = a0.sqrt() / (a0.sqrt() * (1 - last).sqrt() - last.sqrt() * (1 - a0).sqrt())
    torch.testing.assert_close(faithful, expected.float().view(1))
    assert not torch.allclose(fixed, faithful)


@pytest.mark.parametrize("t", [1, 37, 500, 999])
@pytest.mark.parametrize("faithful", [False, True])
def test_full_mode_matches_the_original_formula_for_batch_one(t, faithful):
    g = torch.Generator().manual_seed(t)
    pred = torch.randn(1, 4, 6, 4, 5, generator=g)
    noisy = torch.randn(1, 4, 6, 4, 5, generator=g)
    ts = torch.tensor([t])
    loss = smoothvideo_loss(
        pred, noisy_latents=noisy, timesteps=ts, alphas_cumprod=SD_SCHEDULE, faithful=faithful
    )
    torch.testing.assert_close(loss, reference_original(pred, noisy, ts, SD_SCHEDULE))


def test_faithful_t0_matches_original_wraparound():
    g = torch.Generator().manual_seed(0)
    pred, noisy = torch.randn(1, 4, 5, 3, 3, generator=g), torch.randn(1, 4, 5, 3, 3, generator=g)
    ts = torch.tensor([0])
    loss = smoothvideo_loss(
        pred, noisy_latents=noisy, timesteps=ts, alphas_cumprod=SD_SCHEDULE, faithful=True
    )
    torch.testing.assert_close(loss, reference_original(pred, noisy, ts, SD_SCHEDULE))


def test_fixed_mode_applies_kappa_per_sample():
    g = torch.Generator().manual_seed(1)
    pred, noisy = torch.randn(2, 4, 5, 3, 3, generator=g), torch.randn(2, 4, 5, 3, 3, generator=g)
    ts = torch.tensor([100, 900])
    batch = smoothvideo_loss(pred, noisy_latents=noisy, timesteps=ts, alphas_cumprod=SD_SCHEDULE)
    singles = [
        smoothvideo_loss(
            pred[i : i + 1],
            noisy_latents=noisy[i : i + 1],
            timesteps=ts[i : i + 1],
            alphas_cumprod=SD_SCHEDULE,
        )
        for i in range(2)
    ]
    torch.testing.assert_close(batch, torch.stack(singles).mean())


def test_faithful_mode_broadcasts_kappa_on_width_like_the_original():
    g = torch.Generator().manual_seed(2)
    # b == w == 2: the original silently multiplies width column j by sample j's kappa
    pred, noisy = torch.randn(2, 4, 5, 3, 2, generator=g), torch.randn(2, 4, 5, 3, 2, generator=g)
    ts = torch.tensor([100, 900])
    faithful = smoothvideo_loss(
        pred, noisy_latents=noisy, timesteps=ts, alphas_cumprod=SD_SCHEDULE, faithful=True
    )
    fixed = smoothvideo_loss(pred, noisy_latents=noisy, timesteps=ts, alphas_cumprod=SD_SCHEDULE)
    torch.testing.assert_close(faithful, reference_original(pred, noisy, ts, SD_SCHEDULE))
    assert not torch.allclose(faithful, fixed)
    with pytest.raises(ValueError, match="batch size 1"):
        smoothvideo_loss(
            torch.randn(2, 4, 5, 3, 3),
            noisy_latents=torch.randn(2, 4, 5, 3, 3),
            timesteps=ts,
            alphas_cumprod=SD_SCHEDULE,
            faithful=True,
        )


def test_noisy_latents_are_constant():
    pred = torch.randn(1, 4, 5, 2, 2, requires_grad=True)
    noisy = torch.randn(1, 4, 5, 2, 2, requires_grad=True)
    smoothvideo_loss(
        pred, noisy_latents=noisy, timesteps=torch.tensor([5]), alphas_cumprod=SD_SCHEDULE
    ).backward()
    assert pred.grad is not None and noisy.grad is None


def test_scalar_timestep_is_shared_by_the_batch():
    g = torch.Generator().manual_seed(3)
    pred, noisy = torch.randn(2, 4, 5, 2, 2, generator=g), torch.randn(2, 4, 5, 2, 2, generator=g)
    kwargs = {"noisy_latents": noisy, "alphas_cumprod": SD_SCHEDULE}
    torch.testing.assert_close(
        smoothvideo_loss(pred, timesteps=torch.tensor(250), **kwargs),
        smoothvideo_loss(pred, timesteps=torch.tensor([250, 250]), **kwargs),
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "noisy_latents, timesteps, alphas_cumprod"),
        ({"timesteps": torch.tensor([1]), "alphas_cumprod": SD_SCHEDULE}, "noisy_latents"),
        (
            {
                "noisy_latents": torch.zeros(1, 1, 3, 1, 1),
                "timesteps": torch.tensor([1000]),
                "alphas_cumprod": SD_SCHEDULE,
            },
            r"\[0, 999\]",
        ),
        ({"simple": True, "lambda_factor": 0.0}, "lambda_factor"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        smoothvideo_loss(torch.zeros(1, 1, 3, 1, 1), **kwargs)


def test_computes_in_float32():
    loss = smoothvideo_loss(frames(0, 1, 0).half(), simple=True)
    assert loss.dtype == torch.float32
