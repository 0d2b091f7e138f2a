"""DDIM inversion: parity with diffusers, round trips, and where INR(TF) enters (spec §4, §5)."""

import itertools

import pytest
import torch
from diffusers import DDIMInverseScheduler, DDIMScheduler, PNDMScheduler

from inr_smooth.inversion import DDIMSchedule, InversionStep, ddim_invert, ddim_sample
from inr_smooth.math_demo import SD_SCHEDULER_CONFIG
from inr_smooth.relations import inr_inversion_noise


def analytic_noise(latents, timestep):
    """A smooth noise model: eps(z) = 0.5 tanh(z)."""
    return 0.5 * torch.tanh(latents)


def timestep_dependent_noise(latents, timestep):
    return 0.5 * torch.tanh(latents) + 1e-3 * timestep * torch.sin(latents)


@pytest.fixture
def source():
    return torch.randn(1, 4, 5, 6, 6, generator=torch.Generator().manual_seed(0))


def sd_scheduler(**overrides):
    return DDIMScheduler.from_config({**SD_SCHEDULER_CONFIG, **overrides})


def test_sd_levels_and_final_noise_coefficient():
    schedule = DDIMSchedule.from_scheduler(sd_scheduler(), 50)
    assert schedule.timesteps.tolist() == list(range(1, 1000, 20))  # 1, 21, ..., 981
    assert 0.10 < schedule.noise_coefficient(49) < 0.12  # spec: c_K about 0.11


def test_schedule_reads_a_pndm_config_like_stable_diffusion_ships():
    pndm = PNDMScheduler.from_config({**SD_SCHEDULER_CONFIG, "skip_prk_steps": True})
    ddim = DDIMSchedule.from_scheduler(sd_scheduler(), 20)
    from_pndm = DDIMSchedule.from_scheduler(pndm, 20)
    assert torch.equal(ddim.timesteps, from_pndm.timesteps)
    assert torch.equal(ddim.alphas_cumprod_prev, from_pndm.alphas_cumprod_prev)


@pytest.mark.parametrize("spacing, steps", [("leading", 50), ("leading", 7), ("trailing", 25)])
def test_inversion_agrees_with_diffusers_step_for_step(source, spacing, steps):
    config = {**SD_SCHEDULER_CONFIG, "timestep_spacing": spacing}
    reference = DDIMInverseScheduler.from_config(config)
    reference.set_timesteps(steps)
    traj = ddim_invert(
        source, timestep_dependent_noise, sd_scheduler(timestep_spacing=spacing), steps
    )
    assert traj.timesteps.tolist() == reference.timesteps.tolist()
    z = source
    for k, t in enumerate(reference.timesteps):
        eps = timestep_dependent_noise(z, int(t))
        torch.testing.assert_close(traj.noise_preds[k], eps)
        z = reference.step(eps, t, z).prev_sample
        torch.testing.assert_close(traj.latents[k + 1], z, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_sampling_agrees_with_diffusers_step_for_step(source, spacing):
    reference = sd_scheduler(timestep_spacing=spacing)
    reference.set_timesteps(10)
    ours = ddim_sample(source, timestep_dependent_noise, reference, 10)
    z = source
    for t in reference.timesteps:
        z = reference.step(timestep_dependent_noise(z, int(t)), t, z).prev_sample
    torch.testing.assert_close(ours, z, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("index", [0, 17, 49])
def test_one_inversion_step_then_one_sampling_step_returns_the_input(source, index):
    schedule = DDIMSchedule.from_scheduler(sd_scheduler(), 50)
    noise = torch.randn_like(source)
    back = schedule.sample_step(schedule.invert_step(source, noise, index), noise, index)
    torch.testing.assert_close(back, source, rtol=1e-5, atol=1e-5)


def test_invert_then_sample_error_shrinks_as_steps_grow(source):
    errors = []
    for steps in (12, 25, 50, 100):
        traj = ddim_invert(source, analytic_noise, sd_scheduler(), steps)
        recon = ddim_sample(traj.final_latents, analytic_noise, sd_scheduler(), steps)
        errors.append(float((recon - source).abs().max()))
    # DDIM inversion is first order: doubling the steps about halves the error
    for coarse, fine in itertools.pairwise(errors):
        assert 0.4 < fine / coarse < 0.7


@pytest.mark.parametrize("apply_at", ["final_step", "every_step"])
@pytest.mark.parametrize("noise_source", ["gaussian", "implied"])
def test_gamma_zero_is_plain_inversion_in_every_mode(source, apply_at, noise_source):
    plain = ddim_invert(source, analytic_noise, sd_scheduler(), 10)
    same = ddim_invert(
        source,
        analytic_noise,
        sd_scheduler(),
        10,
        inversion_weight=0.0,
        apply_at=apply_at,
        noise_source=noise_source,
        generator=torch.Generator().manual_seed(1),
    )
    for a, b in zip(plain.latents, same.latents, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("noise_source", ["gaussian", "implied"])
def test_final_step_changes_only_the_final_latent(source, noise_source):
    steps, gamma = 10, 0.8
    schedule = DDIMSchedule.from_scheduler(sd_scheduler(), steps)
    plain = ddim_invert(source, analytic_noise, schedule)
    inr = ddim_invert(
        source,
        analytic_noise,
        schedule,
        inversion_weight=gamma,
        noise_source=noise_source,
        generator=torch.Generator().manual_seed(1),
    )
    for a, b in zip(plain.latents[:-1], inr.latents[:-1], strict=True):
        assert torch.equal(a, b)
    eps_inv = plain.noise_preds[-1]
    rho = inr.random_noise
    if noise_source == "implied":  # the noise implied by the plain inverted latent
        abar = schedule.alphas_cumprod[-1]
        expected_rho = (plain.final_latents - abar.sqrt() * source) / (1 - abar).sqrt()
        torch.testing.assert_close(rho, expected_rho.float())
    eps_inr = inr_inversion_noise(eps_inv, rho, gamma=1.0)
    c_k = schedule.noise_coefficient(steps - 1)
    expected = plain.final_latents + c_k * gamma * (eps_inr - eps_inv)
    torch.testing.assert_close(inr.final_latents, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(inr.final_latents, plain.final_latents)


def test_every_step_applies_inr_online_with_one_gaussian_draw(source):
    gamma = 0.5
    rho = torch.randn_like(source)
    traj = ddim_invert(
        source,
        analytic_noise,
        sd_scheduler(),
        6,
        inversion_weight=gamma,
        apply_at="every_step",
        random_noise=rho,
    )
    for k in range(6):
        # the model saw the modified trajectory ...
        torch.testing.assert_close(traj.noise_preds[k], analytic_noise(traj.latents[k], 0))
        # ... and each step used eps_star built from that prediction and the same rho
        torch.testing.assert_close(
            traj.noise[k], inr_inversion_noise(traj.noise_preds[k], rho, gamma=gamma)
        )
    plain = ddim_invert(source, analytic_noise, sd_scheduler(), 6)
    assert not torch.allclose(traj.latents[1], plain.latents[1])


def test_gaussian_noise_is_reproducible_from_the_seed(source):
    def run(seed):
        return ddim_invert(
            source,
            analytic_noise,
            sd_scheduler(),
            5,
            inversion_weight=1.0,
            generator=torch.Generator().manual_seed(seed),
        ).final_latents

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_step_hooks_see_each_step_and_can_replace_the_noise(source):
    seen = []

    def record(step: InversionStep):
        seen.append((step.index, step.timestep))
        return None

    def zero_last(step: InversionStep):
        return torch.zeros_like(step.noise) if step.index == len(step.schedule) - 1 else None

    plain = ddim_invert(source, analytic_noise, sd_scheduler(), 4, step_hooks=[record])
    assert seen == [(0, 1), (1, 251), (2, 501), (3, 751)]
    hooked = ddim_invert(source, analytic_noise, sd_scheduler(), 4, step_hooks=[zero_last])
    schedule = plain.schedule
    expected = (schedule.alphas_cumprod[-1] / schedule.alphas_cumprod_prev[-1]).sqrt() * (
        plain.latents[-2]
    )
    torch.testing.assert_close(hooked.final_latents, expected.float())
    assert torch.equal(hooked.noise[-1], torch.zeros_like(source))


def test_bad_input_is_reported(source):
    with pytest.raises(ValueError, match=r"\(b, c, f, h, w\)"):
        ddim_invert(source[0], analytic_noise, sd_scheduler(), 3)
    with pytest.raises(ValueError, match=r"seeded torch\.Generator"):
        ddim_invert(source, analytic_noise, sd_scheduler(), 3, inversion_weight=0.5)
    with pytest.raises(ValueError, match="apply_at"):
        ddim_invert(source, analytic_noise, sd_scheduler(), 3, apply_at="middle")
    with pytest.raises(ValueError, match="noise_source"):
        ddim_invert(source, analytic_noise, sd_scheduler(), 3, noise_source="uniform")
    with pytest.raises(ValueError, match=r"inversion_weight .*\[0, 1\]"):
        ddim_invert(source, analytic_noise, sd_scheduler(), 3, inversion_weight=2.0)
    with pytest.raises(ValueError, match="noise_fn must return"):
        ddim_invert(source, lambda z, t: z[:, :, :1], sd_scheduler(), 3)
    with pytest.raises(ValueError, match="epsilon"):
        DDIMSchedule.from_scheduler(sd_scheduler(prediction_type="v_prediction"), 3)
    with pytest.raises(ValueError, match="num_inference_steps"):
        DDIMSchedule.from_scheduler(sd_scheduler(), 0)
    nan = source.clone()
    nan[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ddim_invert(nan, analytic_noise, sd_scheduler(), 3)


def test_low_precision_latents_are_inverted_in_float32(source):
    traj = ddim_invert(source.half(), analytic_noise, sd_scheduler(), 5)
    assert all(z.dtype == torch.float32 for z in traj.latents)
    reference = ddim_invert(source.half().float(), analytic_noise, sd_scheduler(), 5)
    torch.testing.assert_close(traj.final_latents, reference.final_latents)
