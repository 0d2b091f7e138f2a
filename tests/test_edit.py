"""The editing pipeline on tiny components: INR inversion noise where the spec puts it."""

from __future__ import annotations

import dataclasses
import itertools
import re
from pathlib import Path

import pytest
import torch
import yaml

from edit_helpers import (
    EDIT,
    SOURCE,
    AnalyticUNet,
    make_pipeline,
    small_config,
    source_frames,
    source_latents,
)
from inr_smooth.config import ConfigError, load_config
from inr_smooth.inversion import ddim_invert, ddim_sample
from inr_smooth.pipelines.components import encode_prompts, load_parts
from inr_smooth.pipelines.edit import EditConfig, EditPipeline, inr_start_latents
from inr_smooth.pipelines.guidance import guided_noise_fn
from tiny_models import tiny_unet2d

PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs" / "edit").glob("*.yaml"))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parts(tiny_sd_folder):
    return load_parts(str(tiny_sd_folder))


@pytest.fixture(scope="module")
def latents(parts):
    return source_latents(parts, source_frames())


def _edit(pipe, latents):
    inverted = pipe.invert(latents)
    start = inr_start_latents(inverted, pipe.schedule, pipe.config)
    return inverted, start, pipe.sample(start, inverted.store)


def _noise_fns(pipe):
    embeds = {p: encode_prompts(pipe.parts, [p]) for p in (SOURCE, EDIT, "")}
    invert_fn = guided_noise_fn(pipe.video_unet, embeds[SOURCE])
    sample_fn = guided_noise_fn(pipe.video_unet, embeds[EDIT], embeds[""], 7.5)
    return invert_fn, sample_fn


@pytest.mark.parametrize("apply_at", ["final_step", "every_step"])
@torch.no_grad()
def test_gamma_zero_gives_exactly_the_plain_inversion_edit(parts, latents, apply_at):
    pipe = make_pipeline(parts, inversion_weight=0.0, apply_at=apply_at, self_replace=0.0)
    _, start, edited = _edit(pipe, latents)
    invert_fn, sample_fn = _noise_fns(pipe)  # the plain recipe, written out
    plain = ddim_invert(latents, invert_fn, pipe.schedule).final_latents
    assert torch.equal(start, plain)
    assert torch.equal(edited, ddim_sample(plain, sample_fn, pipe.schedule))


@pytest.mark.parametrize("noise_source", ["gaussian", "implied"])
@torch.no_grad()
def test_final_step_gamma_changes_only_the_sampling_start(parts, latents, noise_source):
    gamma, seed = 0.7, 3
    pipe = make_pipeline(parts, inversion_weight=gamma, noise_source=noise_source, seed=seed)
    inverted = pipe.invert(latents)
    start = inr_start_latents(inverted, pipe.schedule, pipe.config)
    invert_fn, _ = _noise_fns(pipe)
    reference = ddim_invert(
        latents, invert_fn, pipe.schedule, inversion_weight=gamma, apply_at="final_step",
        noise_source=noise_source, generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    assert torch.equal(start, reference.final_latents)  # redone from the cache-able parts
    plain = ddim_invert(latents, invert_fn, pipe.schedule)
    for level, (a, b) in enumerate(zip(reference.latents, plain.latents, strict=True)):
        assert torch.equal(a, b) == (level < len(pipe.schedule)), level
    last = len(pipe.schedule) - 1
    shift = pipe.schedule.noise_coefficient(last) * (reference.noise[-1] - plain.noise_preds[-1])
    torch.testing.assert_close(start - plain.final_latents, shift, atol=1e-5, rtol=1e-4)
    assert float((start - plain.final_latents).abs().max()) > 1e-3
    # the stored attention comes from the earlier levels: the same with and without INR
    plain_store = make_pipeline(parts, inversion_weight=0.0).invert(latents).store
    assert sorted(inverted.store.names()) == sorted(plain_store.names())
    for name in plain_store.names():
        assert torch.equal(inverted.store.get(name), plain_store.get(name))


@torch.no_grad()
def test_every_step_applies_inr_during_the_inversion(parts, latents):
    pipe = make_pipeline(parts, inversion_weight=1.0, apply_at="every_step", seed=5)
    inverted, start, _ = _edit(pipe, latents)
    invert_fn, _ = _noise_fns(pipe)
    reference = ddim_invert(
        latents, invert_fn, pipe.schedule, inversion_weight=1.0, apply_at="every_step",
        generator=torch.Generator().manual_seed(5),
    )  # fmt: skip
    assert torch.equal(start, reference.final_latents)
    plain = ddim_invert(latents, invert_fn, pipe.schedule)
    assert not torch.equal(inverted.penultimate_latents, plain.latents[-2])
    plain_store = make_pipeline(parts, inversion_weight=0.0).invert(latents).store
    last = max(pipe.plan.steps)  # its UNet call saw a latent INR already changed
    name = next(n for n in plain_store.names() if n.startswith(f"self/{last}/"))
    assert not torch.equal(inverted.store.get(name), plain_store.get(name))


@torch.no_grad()
def test_invert_then_sample_with_the_source_prompt_reconstructs_the_latents(parts):
    """An analytic noise model, the source prompt and no guidance: the error of the round trip
    shrinks as the steps grow (for a real model it is DDIM's reconstruction)."""
    latents = torch.randn(1, 4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    errors = []
    for steps in (12, 25, 50, 100):
        config = small_config(
            prompt=SOURCE, guidance_scale=1.0, inversion_weight=0.0, self_replace=0.0,
            inference_steps=steps,
        )  # fmt: skip
        pipe = EditPipeline(parts, AnalyticUNet(), config, progress=False)
        _, _, edited = _edit(pipe, latents)
        errors.append(float((edited - latents).abs().max()))
    for coarse, fine in itertools.pairwise(errors):  # first order: twice the steps, half the error
        assert 0.4 < fine / coarse < 0.7, errors


@torch.no_grad()
def test_gamma_is_reproducible_from_the_seed_and_changes_with_it(parts, latents):
    pipe = make_pipeline(parts, self_replace=0.0)
    inverted = pipe.invert(latents)
    a = inr_start_latents(inverted, pipe.schedule, small_config(seed=1))
    b = inr_start_latents(inverted, pipe.schedule, small_config(seed=1))
    c = inr_start_latents(inverted, pipe.schedule, small_config(seed=2))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"frames": 1}, "frames must be at least 2"),
        ({"size": 100}, "multiple of 8"),
        ({"inversion_weight": 1.5}, "inversion_weight (gamma) must be in [0, 1]"),
        ({"self_replace": -0.1}, "self_replace"),
        ({"guidance_scale": 0.5}, "guidance_scale"),
        ({"alpha": 0.0, "beta": 0.0}, "alpha, beta"),
        ({"blend_threshold": 0.0}, "blend_threshold"),
    ],
)
def test_bad_settings_are_reported(change, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        small_config(**change)


def test_size_must_suit_the_unets_downsamplings(parts):
    """Four UNet levels and a VAE scale of 2: the side must be a multiple of 2 * 2**3 px."""
    deep = tiny_unet2d(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("CrossAttnDownBlock2D", *["DownBlock2D"] * 3),
        up_block_types=(*["UpBlock2D"] * 3, "CrossAttnUpBlock2D"),
    )
    with pytest.raises(ValueError, match=r"multiple of 16 px for this model .* got 24"):
        EditPipeline(dataclasses.replace(parts, unet=deep), AnalyticUNet(), small_config(size=24))


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_are_edit_configs_without_a_video(preset):
    assert not {"video", "output"} & set(yaml.safe_load(preset.read_text()))
    config = load_config(EditConfig, preset, video="clip.mp4")
    assert config.source_prompt and config.prompt  # gamma: the paper's value for the editor
    assert config.inversion_weight == (0.5 if config.editor == "video-p2p" else 1.0)
    with pytest.raises(ConfigError, match="unknown EditConfig key"):
        load_config(EditConfig, preset, not_a_key=1)
