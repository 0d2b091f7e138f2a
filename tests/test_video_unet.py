"""The inflated video UNet: parity with the 2-D UNet, cross-frame structure, training hooks."""

from __future__ import annotations

import copy

import pytest
import torch
from einops import rearrange, repeat

from inr_smooth.models import (
    ATTENTION_MODES,
    DEFAULT_TRAINABLE,
    TUNE_A_VIDEO_TRAINABLE,
    VideoUNet,
    inflate_unet,
    set_trainable,
)
from tiny_models import TINY_UNET_CONFIG, randomize_, tiny_unet2d

D = TINY_UNET_CONFIG["cross_attention_dim"]


def inputs(b=1, f=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(b, 4, f, 8, 8, generator=g)
    prompt_embeds = torch.randn(b, 6, D, generator=g)
    return sample, prompt_embeds


def video_and_image(**kwargs) -> tuple[VideoUNet, torch.nn.Module]:
    image = tiny_unet2d()
    video = inflate_unet(copy.deepcopy(image), **kwargs)
    return video, image


def per_frame_2d(image, sample, timestep, prompt_embeds):
    """The 2-D UNet run on each frame on its own: ``(b, c, f, h, w)``."""
    frames = [
        image(sample[:, :, i], timestep, prompt_embeds).sample for i in range(sample.shape[2])
    ]
    return torch.stack(frames, dim=2)


def wake_temporal_(video: VideoUNet, seed: int = 1) -> None:
    for name, module in video.named_modules():
        if name.endswith(".temporal"):
            randomize_(module, seed, scale=0.3)


def frame_changes(out_a, out_b, atol=1e-6):
    """Per frame: True where the two outputs differ by more than ``atol``."""
    diff = (out_a - out_b).abs().amax(dim=(0, 1, 3, 4))
    return [bool(d > atol) for d in diff]


# ----------------------------------------------------------------------------- parity


@torch.no_grad()
def test_zero_init_temporal_and_no_cross_frame_equals_image_model_per_frame():
    video, image = video_and_image(attention="none", temporal_attention=True)
    sample, prompt_embeds = inputs(b=2, f=3)
    out = video(sample, 500, prompt_embeds).sample
    assert out.shape == sample.shape
    expected = per_frame_2d(image, sample, 500, prompt_embeds)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("group_norm", ["per_frame", "video"])
@pytest.mark.parametrize("attention", ["sparse_causal", "full", "first_frame", "keyframe"])
@torch.no_grad()
def test_identical_frames_equal_image_model(attention, group_norm):
    video, image = video_and_image(attention=attention, keyframe=2, group_norm=group_norm)
    sample, prompt_embeds = inputs(b=2, f=1)
    sample = sample.expand(-1, -1, 4, -1, -1).contiguous()
    timesteps = torch.tensor([10, 900])
    out = video(sample, timesteps, prompt_embeds).sample
    expected = per_frame_2d(image, sample, timesteps, prompt_embeds)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


@torch.no_grad()
def test_cross_frame_attention_changes_output_on_different_frames():
    video, image = video_and_image(attention="sparse_causal", temporal_attention=False)
    sample, prompt_embeds = inputs(f=3)
    out = video(sample, 10, prompt_embeds).sample
    expected = per_frame_2d(image, sample, 10, prompt_embeds)
    # frame 0 attends to itself only (twice), the others to frames 0 and i - 1
    assert frame_changes(out, expected, atol=1e-4) == [False, True, True]


# ----------------------------------------------------------------------------- structure


STRUCTURE = [  # (mode, changed frame, frames whose output changes), f = 5, keyframe = 1
    ("sparse_causal", 2, [False, False, True, True, True]),
    ("sparse_causal", 4, [False, False, False, False, True]),
    ("sparse_causal", 0, [True] * 5),
    ("first_frame", 2, [False, False, True, False, False]),
    ("first_frame", 0, [True] * 5),
    ("keyframe", 2, [False, False, True, False, False]),
    ("keyframe", 1, [True] * 5),
    ("middle", 2, [True] * 5),
    ("middle", 3, [False, False, False, True, False]),
    ("full", 3, [True] * 5),
    ("none", 3, [False, False, False, True, False]),
]


@pytest.mark.parametrize(("attention", "k", "expected"), STRUCTURE)
@torch.no_grad()
def test_which_frames_a_change_reaches(attention, k, expected):
    """Spatial attention alone (no temporal attention): the cross-frame dependency graph."""
    video, _ = video_and_image(attention=attention, keyframe=1, temporal_attention=False)
    sample, prompt_embeds = inputs(f=5)
    changed = sample.clone()
    changed[:, :, k] += torch.randn(
        changed[:, :, k].shape, generator=torch.Generator().manual_seed(3)
    )
    out_a = video(sample, 10, prompt_embeds).sample
    out_b = video(changed, 10, prompt_embeds).sample
    # unchanged frames are bit for bit unchanged; changed ones well above rounding noise
    # (frame k + 2 under sparse_causal only through frame k + 1's deeper features)
    assert frame_changes(out_a, out_b, atol=0) == expected
    assert frame_changes(out_a, out_b, atol=1e-5) == expected


@torch.no_grad()
def test_temporal_attention_mixes_all_frames_once_trained():
    video, image = video_and_image(attention="none")
    wake_temporal_(video)
    sample, prompt_embeds = inputs(f=4)
    changed = sample.clone()
    changed[:, :, 3] += 1.0
    out_a = video(sample, 10, prompt_embeds).sample
    out_b = video(changed, 10, prompt_embeds).sample
    assert frame_changes(out_a, out_b) == [True] * 4
    assert not torch.allclose(out_a, per_frame_2d(image, sample, 10, prompt_embeds), atol=1e-3)


def test_inflation_is_reproducible_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = inflate_unet(tiny_unet2d())
    assert torch.equal(torch.random.get_rng_state(), state)
    b = inflate_unet(tiny_unet2d())
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    to_out = [p for n, p in a.named_parameters() if ".temporal.attn.to_out." in n]
    assert to_out and all(torch.count_nonzero(p) == 0 for p in to_out)


@torch.no_grad()
def test_bf16_runs_and_is_finite():
    video, _ = video_and_image(attention="sparse_causal", group_norm="video")
    wake_temporal_(video)
    video = video.to(torch.bfloat16)
    sample, prompt_embeds = inputs(f=3)
    out = video(sample.bfloat16(), 10, prompt_embeds.bfloat16()).sample
    assert out.dtype == torch.bfloat16 and out.shape == sample.shape
    assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------- training


def grads(video, sample, prompt_embeds):
    video.zero_grad(set_to_none=True)
    loss = video(sample, torch.tensor([10, 700]), prompt_embeds).sample.square().mean()
    loss.backward()
    return {n: p.grad.clone() for n, p in video.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients(monkeypatch):
    video, _ = video_and_image(attention="sparse_causal", group_norm="video")
    wake_temporal_(video)
    video.train()
    set_trainable(video)
    sample, prompt_embeds = inputs(b=2, f=3)
    plain = grads(video, sample, prompt_embeds)
    video.enable_gradient_checkpointing()
    calls = []
    checkpoint = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(
        torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or checkpoint(*a, **k)
    )
    checkpointed = grads(video, sample, prompt_embeds)
    blocks = [m for m in video.modules() if type(m).__name__ == "VideoTransformerBlock"]
    assert len(calls) > len(blocks)  # every transformer block (with its temporal attention)
    assert plain.keys() == checkpointed.keys() and any(".temporal." in n for n in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5)


def test_checkpoint_recompute_uses_the_frame_count_of_its_own_forward():
    video, _ = video_and_image(attention="sparse_causal", group_norm="video")
    wake_temporal_(video)
    video.train()
    sample, prompt_embeds = inputs(b=1, f=4)
    sample.requires_grad_()
    t = torch.tensor([10])
    (plain,) = torch.autograd.grad(video(sample, t, prompt_embeds).sample.square().mean(), sample)
    video.enable_gradient_checkpointing()
    loss = video(sample, t, prompt_embeds).sample.square().mean()
    other = inputs(b=2, f=2, seed=5)
    video(*other[:1], 10, other[1])  # another forward, other frame count, before backward
    (checkpointed,) = torch.autograd.grad(loss, sample)
    torch.testing.assert_close(checkpointed, plain, atol=1e-6, rtol=1e-5)


def test_set_trainable_default_and_tune_a_video_sets():
    video, _ = video_and_image()
    names = set(set_trainable(video))
    assert names == {n for n, p in video.named_parameters() if p.requires_grad}
    for name, _ in video.named_parameters():
        expected = ".attn1.to_q." in name or ".attn2.to_q." in name or ".temporal." in name
        assert (name in names) == expected, name
    assert any(".temporal.norm." in n for n in names)
    tav = set(set_trainable(video, TUNE_A_VIDEO_TRAINABLE))
    assert tav == names - {n for n in names if ".temporal.norm." in n}
    assert set(set_trainable(video, ["attn1.to_q", "attn2.to_q", "attn_temp"])) == tav
    assert DEFAULT_TRAINABLE[: len(TUNE_A_VIDEO_TRAINABLE)] == TUNE_A_VIDEO_TRAINABLE


def test_set_trainable_rejects_patterns_that_match_nothing():
    video, _ = video_and_image()
    with pytest.raises(ValueError, match=r"attn1\.to_qk"):
        set_trainable(video, ["attn1.to_qk"])
    with pytest.raises(ValueError, match="sequence of patterns"):
        set_trainable(video, "attn1.to_q")


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_name_what_was_expected():
    video, image = video_and_image()
    sample, prompt_embeds = inputs(b=2, f=3)
    with pytest.raises(ValueError, match=r"expected sample of shape \(b, 4, f, h, w\)"):
        video(rearrange(sample, "b c f h w -> (b f) c h w"), 10, prompt_embeds)
    with pytest.raises(ValueError, match=r"expected encoder_hidden_states of shape \(b, n, d\)"):
        video(sample, 10, repeat(prompt_embeds, "b n d -> (b f) n d", f=3))
    with pytest.raises(ValueError, match=r"expected timestep"):
        video(sample, torch.tensor([1, 2, 3]), prompt_embeds)
    with pytest.raises(ValueError, match="expected a diffusers UNet2DConditionModel"):
        inflate_unet(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="already inflated"):
        inflate_unet(video.unet)
    with pytest.raises(ValueError, match="attention must be one of"):
        inflate_unet(image, attention="sparse")
    with pytest.raises(ValueError, match="group_norm must be one of"):
        inflate_unet(image, group_norm="batch")
    with pytest.raises(ValueError, match="keyframe"):
        inflate_unet(image, attention="keyframe", keyframe=-1)
    key = inflate_unet(image, attention="keyframe", keyframe=5)
    with pytest.raises(ValueError, match="keyframe 5 is out of range for a video of 3 frames"):
        key(sample, 10, prompt_embeds)


def test_replaced_processors_are_detected_and_restorable():
    from diffusers.models.attention_processor import AttnProcessor2_0

    video, _ = video_and_image(attention="first_frame")
    video.unet.set_attn_processor(AttnProcessor2_0())
    sample, prompt_embeds = inputs(f=2)
    with pytest.raises(RuntimeError, match="set_cross_frame_attention"):
        video(sample, 10, prompt_embeds)
    video.set_cross_frame_attention("first_frame")
    assert video(sample, 10, prompt_embeds).sample.shape == sample.shape


def test_all_attention_modes_are_covered():
    assert {mode for mode, *_ in STRUCTURE} == set(ATTENTION_MODES)


@torch.no_grad()
def test_min_channels_keeps_narrow_blocks_per_frame():
    """FateZero's least_sc_channel: blocks narrower than it attend within their own frame."""
    sample, prompt_embeds = inputs(f=3)
    none, _ = video_and_image(attention="none", temporal_attention=False)
    wide_only, _ = video_and_image(
        attention="middle", temporal_attention=False, cross_frame_min_channels=64
    )
    everywhere, _ = video_and_image(attention="middle", temporal_attention=False)
    nowhere, _ = video_and_image(
        attention="middle", temporal_attention=False, cross_frame_min_channels=65
    )
    plain = none(sample, 10, prompt_embeds).sample
    assert torch.equal(nowhere(sample, 10, prompt_embeds).sample, plain)
    partial = wide_only(sample, 10, prompt_embeds).sample
    full = everywhere(sample, 10, prompt_embeds).sample
    assert not torch.allclose(partial, plain, atol=1e-5)
    assert not torch.allclose(partial, full, atol=1e-5)
    assert torch.equal(partial[:, :, 1], plain[:, :, 1])  # the middle frame attends to itself
    assert wide_only.config.cross_frame_min_channels == 64
    wide_only.set_cross_frame_attention("middle")  # keeps the setting
    assert torch.equal(wide_only(sample, 10, prompt_embeds).sample, partial)
