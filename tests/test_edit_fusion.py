"""Attention fusion: what is stored during inversion, what replaces what while editing."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention
from einops import rearrange

from edit_helpers import make_pipeline, source_frames, source_latents
from inr_smooth.inversion import ddim_sample
from inr_smooth.models import ATTENTION_MODES, CrossFrameAttnProcessor, inflate_unet
from inr_smooth.models.frames import FrameContext
from inr_smooth.pipelines.attention_fusion import (
    AttentionFusion,
    FusionPlan,
    FusionSelfAttnProcessor,
    blend_token_positions,
    estimate_store_bytes,
    fusion_installed,
    fusion_layers,
    replace_steps,
)
from inr_smooth.pipelines.attention_store import AttentionStore
from inr_smooth.pipelines.components import encode_prompts, load_parts
from inr_smooth.pipelines.guidance import guided_noise_fn
from inr_smooth.pipelines.p2p_attention import (
    blend_layers,
    cross_attention_layers,
    estimate_control_bytes,
)
from tiny_models import randomize_, tiny_unet2d

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parts(tiny_sd_folder):
    return load_parts(str(tiny_sd_folder))


@pytest.fixture(scope="module")
def latents(parts):
    return source_latents(parts, source_frames())


# ---------------------------------------------------------------------- one attention layer
F_, N_, C_ = 2, 4, 16  # frames, tokens per frame (2x2), channels


def _layer(seed: int = 1) -> Attention:
    with torch.random.fork_rng(devices=[]):
        attn = Attention(query_dim=C_, heads=1, dim_head=C_)
    return randomize_(attn, seed, scale=0.5).eval()


def _fusion(store, *, blend=(), threshold=0.3, phase="edit") -> AttentionFusion:
    fusion = AttentionFusion(FusionPlan({"layer": 1}, frozenset({0}), blend, threshold), store)
    fusion.phase, fusion.step, fusion._latent_hw = phase, 0, (2, 2)
    return fusion


def _run(processor, attn, hidden):
    with processor.context.frames(F_):
        return processor(attn, hidden)


def test_recording_stores_the_layer_input_in_fp16_and_changes_nothing():
    attn, context, store = _layer(), FrameContext(), AttentionStore()
    hidden = torch.randn(F_, N_, C_, generator=torch.Generator().manual_seed(0))
    fused = FusionSelfAttnProcessor(context, "full", 0, _fusion(store, phase="record"), "layer", 1)
    plain = CrossFrameAttnProcessor(context, "full")
    assert torch.equal(_run(fused, attn, hidden), _run(plain, attn, hidden))
    assert store.names() == ["self/0/layer"]
    assert torch.equal(store.get("self/0/layer"), hidden.half())


def test_the_replaced_map_is_the_stored_source_map_and_uncond_is_left_alone():
    """Values = one-hot token indices and identity projections make the output rows the
    attention map itself: the conditional video's map must be softmax(q_s k_s^T / sqrt(d))
    of the stored source tokens, under "full" attention over all frames' tokens."""
    attn, context, store = _layer(), FrameContext(), AttentionStore()
    with torch.no_grad():
        attn.to_v.weight.copy_(torch.eye(C_))
        attn.to_out[0].weight.copy_(torch.eye(C_))
        attn.to_out[0].bias.zero_()
    g = torch.Generator().manual_seed(0)
    store.put("self/0/layer", torch.randn(F_, N_, C_, generator=g))
    one_hot = rearrange(torch.eye(C_)[: F_ * N_], "(f n) c -> f n c", f=F_)  # cond video
    uncond = torch.randn(F_, N_, C_, generator=g)
    processor = FusionSelfAttnProcessor(context, "full", 0, _fusion(store), "layer", 1)
    out = _run(processor, attn, torch.cat([uncond, one_hot]))  # [uncond, cond], as CFG batches

    source = rearrange(store.get("self/0/layer", dtype=torch.float32), "f n c -> (f n) c")
    with torch.no_grad():
        stored_map = (attn.to_q(source) @ attn.to_k(source).T * attn.scale).softmax(-1)
    applied_map = rearrange(out[F_:], "f n c -> (f n) c")[:, : F_ * N_]
    torch.testing.assert_close(applied_map, stored_map, atol=1e-6, rtol=1e-5)
    plain = CrossFrameAttnProcessor(context, "full")
    torch.testing.assert_close(out[:F_], _run(plain, attn, uncond), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("mode", ATTENTION_MODES)
def test_replacing_with_the_edits_own_tokens_changes_nothing_in_every_mode(mode):
    attn, context, store = _layer(), FrameContext(), AttentionStore("device")
    hidden = torch.randn(F_, N_, C_, generator=torch.Generator().manual_seed(0))
    hidden = hidden.half().float()  # exact in the fp16 store
    store.put("self/0/layer", hidden)
    fused = _run(
        FusionSelfAttnProcessor(context, mode, 0, _fusion(store), "layer", 1), attn, hidden
    )
    plain = _run(CrossFrameAttnProcessor(context, mode), attn, hidden)
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-6)


def test_blend_mask_keeps_the_edit_inside_and_the_source_outside():
    attn, context, store = _layer(), FrameContext(), AttentionStore()
    g = torch.Generator().manual_seed(0)
    store.put("self/0/layer", torch.randn(F_, N_, C_, generator=g))
    store.put("blend/0", torch.tensor([[[1.0, 0.0], [0.2, 0.9]]] * F_))  # (f, h, w): pooled map
    edit = torch.randn(F_, N_, C_, generator=g)
    blended = _run(
        FusionSelfAttnProcessor(context, "full", 0, _fusion(store, blend=(1,)), "layer", 1),
        attn, edit,
    )  # fmt: skip
    replaced = _run(
        FusionSelfAttnProcessor(context, "full", 0, _fusion(store), "layer", 1), attn, edit
    )
    plain = _run(CrossFrameAttnProcessor(context, "full"), attn, edit)
    inside = torch.tensor([True, False, False, True])  # map / max > 0.3, tokens in h w order
    assert torch.equal(blended[:, inside], plain[:, inside])
    assert torch.equal(blended[:, ~inside], replaced[:, ~inside])
    assert not torch.allclose(plain, replaced)


def test_missing_entries_and_misfit_shapes_are_reported():
    attn, context, store = _layer(), FrameContext(), AttentionStore()
    processor = FusionSelfAttnProcessor(context, "full", 0, _fusion(store), "layer", 1)
    with pytest.raises(KeyError, match="no entry 'self/0/layer'"):
        _run(processor, attn, torch.zeros(F_, N_, C_))
    store.put("self/0/layer", torch.zeros(F_, N_ + 1, C_))
    with pytest.raises(ValueError, match="do not fit the edit's"):
        _run(processor, attn, torch.zeros(F_, N_, C_))


# ---------------------------------------------------------------------- the tiny pipeline
@torch.no_grad()
def test_inversion_records_the_chosen_layers_at_the_replaced_steps(parts, latents):
    pipe = make_pipeline(parts, self_replace=0.5)  # 4 steps: the 2 noisiest, indices 2 and 3
    assert pipe.plan.steps == {2, 3} and len(pipe.plan.layers) == 4
    modules = dict(pipe.video_unet.unet.named_modules())
    seen = {name: [] for name in pipe.plan.layers}
    hooks = [
        modules[name].register_forward_pre_hook(
            lambda module, args, name=name: seen[name].append(args[0].clone())
        )
        for name in pipe.plan.layers
    ]
    store = pipe.invert(latents).store
    for hook in hooks:
        hook.remove()
    expected = {f"self/{step}/{name}" for step in (2, 3) for name in pipe.plan.layers}
    assert set(store.names()) == expected
    for step in (2, 3):
        for name in pipe.plan.layers:  # the UNet is called once per step, in step order
            assert torch.equal(store.get(f"self/{step}/{name}"), seen[name][step].half())
    deep_only = make_pipeline(parts, fusion_min_downsample=2).plan.layers
    assert list(deep_only) == ["mid_block.attentions.0.transformer_blocks.0.spatial.attn1"]


@torch.no_grad()
def test_replaying_the_maps_of_a_run_reproduces_it_and_other_maps_do_not(parts, latents):
    """Replace fraction 1.0, the same prompt, the maps recorded along the same trajectory:
    the run is reproduced (up to the fp16 store). The tiny random UNet does not reconstruct
    through DDIM inversion itself, so maps recorded during inversion serve as the control."""
    pipe = make_pipeline(parts, self_replace=1.0)
    embeds = encode_prompts(pipe.parts, [pipe.config.source_prompt])
    noise_fn = guided_noise_fn(pipe.video_unet, embeds)
    start = torch.randn(latents.shape, generator=torch.Generator().manual_seed(0))

    def sample(store, phase):
        fusion = AttentionFusion(pipe.plan, store)
        with fusion_installed(pipe.video_unet, fusion, phase):
            return ddim_sample(
                start, fusion.stepped(noise_fn, pipe.schedule.timesteps), pipe.schedule
            )

    recorded = AttentionStore()
    first = sample(recorded, "record")
    assert len(recorded) == 4 * 4 and torch.equal(
        first, ddim_sample(start, noise_fn, pipe.schedule)
    )
    replayed = sample(recorded, "edit")
    other = sample(pipe.invert(latents).store, "edit")
    replay_error = float((replayed - first).abs().max())
    other_error = float((other - first).abs().max())
    assert replay_error < 1e-3 * other_error, (replay_error, other_error)


@torch.no_grad()
def test_fusion_without_replaced_steps_is_bit_identical_to_no_fusion(parts, latents):
    pipe = make_pipeline(parts, self_replace=0.0)
    plain_inverted = pipe.invert(latents)
    plain = pipe.sample(plain_inverted.final_latents, None)
    layers = fusion_layers(pipe.video_unet, 1)
    pipe.plan = FusionPlan(layers, replace_steps(4, 0.0), (2,))  # installed, never active
    inverted = pipe.invert(latents)
    assert len(inverted.store) == 0
    assert torch.equal(inverted.final_latents, plain_inverted.final_latents)
    assert torch.equal(pipe.sample(inverted.final_latents, inverted.store), plain)
    assert all(
        type(m.processor) is CrossFrameAttnProcessor
        for n, m in pipe.video_unet.unet.named_modules()
        if n.endswith("attn1")
    )  # the plain processors are back


@torch.no_grad()
def test_disk_store_gives_the_same_edit_and_holds_one_entry_at_a_time(parts, latents, tmp_path):
    results = {}
    for location in ("device", "disk"):
        pipe = make_pipeline(parts, attention_store=location, blend_words=("circle",))
        inverted = pipe.invert(latents)
        store = inverted.store
        report = store.report()
        assert store.location == location
        results[location] = pipe.sample(inverted.final_latents, store)
        entry = max(store.get(n).numel() * 2 for n in store.names())
        shape = dict(num_frames=4, latent_hw=(8, 8))
        estimate = estimate_store_bytes(pipe.video_unet, pipe.plan, **shape)
        estimate += estimate_control_bytes(pipe.video_unet, pipe.control_plan, **shape)
        assert store.stored_bytes == estimate
        if location == "disk":
            assert store.peak_resident_bytes == entry
            spill = store._spill_path
            store.close()
            assert not spill.exists()
        else:
            assert report["peak_resident_mb"] == report["stored_mb"]
    assert torch.equal(results["device"], results["disk"])


@torch.no_grad()
def test_blend_words_store_one_map_per_replaced_step_and_change_the_edit(parts, latents):
    pipe = make_pipeline(parts, blend_words=("circle",))
    inverted = pipe.invert(latents)
    assert {n for n in inverted.store.names() if n.startswith("blend/")} == {
        f"blend/{step}" for step in pipe.plan.steps
    }
    for step in pipe.plan.steps:  # the tiny UNet's blend layers are at the latent's 8x8
        pooled = inverted.store.get(f"blend/{step}", dtype=torch.float32)
        assert pooled.shape == (4, 8, 8) and pooled.min() >= 0 and pooled.max() > 0
    blended = pipe.sample(inverted.final_latents, inverted.store)
    replaced_only = dataclasses.replace(pipe.plan, blend_tokens=())
    pipe.plan = replaced_only
    assert not torch.allclose(blended, pipe.sample(inverted.final_latents, inverted.store))


def test_blend_word_positions_in_the_source_prompt(parts):
    tokenizer = parts.tokenizer
    assert blend_token_positions(tokenizer, "a rabbit is jumping on the grass", ["rabbit"]) == (2,)
    both = blend_token_positions(tokenizer, "a jeep car on a jeep road", ["jeep", "car"])
    assert both == (2, 3, 6)
    with pytest.raises(ValueError, match="blend word 'tiger' is not in the source prompt"):
        blend_token_positions(tokenizer, "a rabbit", ["tiger"])


def test_sd_sized_plan_and_store_estimate():
    """SD 1.x's UNet (built on the meta device): which layers fuse, and what the default edit
    (8 frames, 512 px, 50 steps, self_replace 0.5, blend words) stores."""
    config = dict(
        block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
        down_block_types=(*["CrossAttnDownBlock2D"] * 3, "DownBlock2D"),
        up_block_types=("UpBlock2D", *["CrossAttnUpBlock2D"] * 3), attention_head_dim=8,
    )  # fmt: skip
    with torch.device("meta"):
        video_unet = inflate_unet(UNet2DConditionModel(**config), temporal_attention=False)
    everything = fusion_layers(video_unet, 1)
    counts = {d: list(everything.values()).count(d) for d in (1, 2, 4, 8)}
    assert counts == {1: 5, 2: 5, 4: 5, 8: 1}
    plan = FusionPlan(fusion_layers(video_unet, 2), replace_steps(50, 0.5), (2,))
    assert len(plan.layers) == 11 and len(plan.steps) == 25
    stored = estimate_store_bytes(video_unet, plan, num_frames=8, latent_hw=(64, 64))
    assert 1.8 * 2**30 < stored < 1.9 * 2**30  # vs. 266 GiB as float32 maps
    # FateZero's cross-attention layers (at most 32x32 queries) and its five 16x16 blend layers
    assert len(cross_attention_layers(video_unet, 2)) == 11
    blend = blend_layers(video_unet)
    assert set(blend.values()) == {4} and sorted(blend) == [
        f"{block}.attentions.{i}.transformer_blocks.0.spatial.attn2"
        for block, i in [("down_blocks.2", 0), ("down_blocks.2", 1), ("up_blocks.1", 0),
                         ("up_blocks.1", 1), ("up_blocks.1", 2)]
    ]  # fmt: skip


@torch.no_grad()
def test_an_sd_shaped_unet_fuses_three_resolutions_and_blends_across_them(parts):
    """Four levels like SD 1.x (small channels): the default fusion_min_downsample keeps the
    2x, 4x and 8x smaller layers; the blend map comes from the 4x smaller down/up layers (SD's
    16x16 at 512 px) and masks the layers of all three sizes."""
    deep = tiny_unet2d(
        block_out_channels=(32, 32, 32, 32), layers_per_block=1,
        down_block_types=(*["CrossAttnDownBlock2D"] * 3, "DownBlock2D"),
        up_block_types=("UpBlock2D", *["CrossAttnUpBlock2D"] * 3),
    )  # fmt: skip
    sd_like = dataclasses.replace(parts, unet=deep)
    pipe = make_pipeline(sd_like, size=32, fusion_min_downsample=2, blend_words=("circle",))
    assert sorted(set(pipe.plan.layers.values())) == [2, 4, 8] and len(pipe.plan.layers) == 7
    latents = source_latents(parts, source_frames(size=32))  # (1, 4, 4, 16, 16)
    inverted = pipe.invert(latents)
    assert len(inverted.store) == len(pipe.plan.steps) * (len(pipe.plan.layers) + 1)
    assert sorted(pipe.control_plan.blend_layers) == [
        "down_blocks.2.attentions.0.transformer_blocks.0.spatial.attn2",
        "up_blocks.1.attentions.0.transformer_blocks.0.spatial.attn2",
        "up_blocks.1.attentions.1.transformer_blocks.0.spatial.attn2",
    ]  # SD (2 layers per block): down_blocks.2's two and up_blocks.1's three
    assert inverted.store.get(f"blend/{min(pipe.plan.steps)}").shape == (4, 4, 4)
    shape = dict(num_frames=4, latent_hw=(16, 16))
    assert inverted.store.stored_bytes == estimate_store_bytes(
        pipe.video_unet, pipe.plan, **shape
    ) + estimate_control_bytes(pipe.video_unet, pipe.control_plan, **shape)
    edited = pipe.sample(inverted.final_latents, inverted.store)
    assert edited.shape == latents.shape and bool(torch.isfinite(edited).all())
