"""training_step: how each smoothing mode composes the loss (spec §2, §3)."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from inr_smooth.pipelines.training import DEFAULT_SMOOTH_WEIGHT, training_step
from inr_smooth.relations import inr_smoothing_loss, smoothvideo_loss


class StandInDenoiser(torch.nn.Module):
    """A video 'UNet' small enough to reason about: a 3-D conv conditioned on the prompt."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(4, 4, 3, padding=1)
        self.text = torch.nn.Linear(8, 4)

    def forward(self, sample, timestep, encoder_hidden_states):
        bias = self.text(encoder_hidden_states.mean(1))[:, :, None, None, None]
        return SimpleNamespace(sample=self.conv(sample) + bias)


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = StandInDenoiser()
    latents = torch.randn(2, 4, 5, 8, 8)
    embeds = torch.randn(2, 3, 8)
    scheduler = DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    )
    noise = torch.randn_like(latents)
    timesteps = torch.tensor([10, 700])
    return model, latents, embeds, scheduler, noise, timesteps


def run(setup, **kwargs):
    model, latents, embeds, scheduler, noise, timesteps = setup
    return training_step(
        model, latents, embeds, scheduler, noise=noise, timesteps=timesteps, **kwargs
    )


def prediction(setup):
    model, latents, embeds, scheduler, noise, timesteps = setup
    noisy = scheduler.add_noise(latents, noise, timesteps)
    return model(noisy, timesteps, embeds).sample, noisy


@pytest.mark.parametrize("mode", ["inr", "smoothvideo", "smoothvideo-simple"])
def test_weight_zero_is_exactly_the_baseline(setup, mode):
    baseline = run(setup, smoothing="none")
    zero = run(setup, smoothing=mode, smooth_weight=0.0)
    assert torch.equal(zero.loss, baseline.loss)
    assert zero.smoothing_loss > 0  # the term is still computed for the log


def test_baseline_is_the_plain_diffusion_mse(setup):
    pred, _ = prediction(setup)
    out = run(setup, smoothing="none")
    torch.testing.assert_close(out.loss, F.mse_loss(pred, setup[4]))
    assert float(out.smoothing_loss) == 0


def test_inr_mode_adds_lambda_times_the_inr_loss(setup):
    pred, _ = prediction(setup)
    noise = setup[4]
    out = run(setup, smoothing="inr", smooth_weight=1.5, alpha=0.2, beta=0.7, chain="anchored")
    expected_term = inr_smoothing_loss(pred, noise, alpha=0.2, beta=0.7, chain="anchored")
    torch.testing.assert_close(out.smoothing_loss, expected_term)
    torch.testing.assert_close(out.loss, F.mse_loss(pred, noise) + 1.5 * expected_term)


@pytest.mark.parametrize("mode, simple", [("smoothvideo", False), ("smoothvideo-simple", True)])
def test_smoothvideo_modes_use_the_noisy_latents_and_timesteps(setup, mode, simple):
    pred, noisy = prediction(setup)
    scheduler, timesteps = setup[3], setup[5]
    out = run(setup, smoothing=mode)  # default weight 0.2
    term = smoothvideo_loss(
        pred,
        noisy_latents=noisy,
        timesteps=timesteps,
        alphas_cumprod=scheduler.alphas_cumprod,
        simple=simple,
    )
    torch.testing.assert_close(out.loss, F.mse_loss(pred, setup[4]) + 0.2 * term)


def test_default_weights_are_the_papers():
    assert DEFAULT_SMOOTH_WEIGHT["inr"] == 2.0
    assert DEFAULT_SMOOTH_WEIGHT["smoothvideo"] == 0.2


def test_generator_draws_one_timestep_per_video_reproducibly(setup):
    model, latents, embeds, scheduler, _, _ = setup
    seen = []

    class Spy(StandInDenoiser):
        def forward(self, sample, timestep, encoder_hidden_states):
            seen.append(timestep.clone())
            return super().forward(sample, timestep, encoder_hidden_states)

    spy = Spy()
    spy.load_state_dict(model.state_dict())
    a = training_step(spy, latents, embeds, scheduler, generator=torch.Generator().manual_seed(5))
    b = training_step(spy, latents, embeds, scheduler, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.loss, b.loss)
    assert seen[0].shape == (2,) and torch.equal(seen[0], seen[1])


def test_a_few_steps_lower_the_loss(setup):
    model, latents, embeds, scheduler, noise, timesteps = setup
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        out = training_step(
            model, latents, embeds, scheduler, smoothing="inr", noise=noise, timesteps=timesteps
        )
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


def test_bad_mode_and_weight(setup):
    with pytest.raises(ValueError, match="smoothing must be one of"):
        run(setup, smoothing="temporal")
    with pytest.raises(ValueError, match="smooth_weight"):
        run(setup, smoothing="inr", smooth_weight=-1.0)
