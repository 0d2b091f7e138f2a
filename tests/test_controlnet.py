"""ControlNets on the video UNet and ControlVideo's architecture: parity with definitions."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, UNet2DConditionModel
from einops import rearrange, repeat

from inr_smooth.models import CONTROLVIDEO_TRAINABLE, inflate_unet
from inr_smooth.models.attention import ParallelTemporalAttention
from inr_smooth.models.controlnet import (
    ControlledVideoUNet,
    ControlWindow,
    inflate_controlnet,
    set_controlled_trainable,
)
from tiny_models import TINY_UNET_CONFIG, randomize_, tiny_unet2d

D = TINY_UNET_CONFIG["cross_attention_dim"]
# SD 1.x's block layout (4 levels, 2 layers per block) at tiny widths
SD_LAYOUT = {
    **TINY_UNET_CONFIG,
    "block_out_channels": (32, 32, 32, 32),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "layers_per_block": 2,
}

pytestmark = pytest.mark.usefixtures("one_thread")


def inputs(b=1, f=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 4, f, 8, 8, generator=g), torch.randn(b, 6, D, generator=g)


def tiny_controlnet(unet, seed=5) -> ControlNetModel:
    """A ControlNet of the tiny UNet reading 16 px maps (2x the 8 px latents), its zero
    convolutions woken so that it changes the UNet's output."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    for module in (*net.controlnet_down_blocks, net.controlnet_mid_block,
                   net.controlnet_cond_embedding.conv_out):  # fmt: skip
        randomize_(module, seed, scale=0.2)
    return net.eval()


def maps(f=3, b=1, seed=1):
    return torch.rand(b, 3, f, 16, 16, generator=torch.Generator().manual_seed(seed))


def controlvideo_unet(image=None, **kwargs):
    image = image or tiny_unet2d()
    kwargs = {"attention": "keyframe", "group_norm": "video", **kwargs}
    return inflate_unet(copy.deepcopy(image), architecture="controlvideo", **kwargs)


# ----------------------------------------------------------------------------- architecture


@torch.no_grad()
@pytest.mark.parametrize("group_norm", ["per_frame", "video"])
def test_zero_conv_branch_leaves_the_image_model_with_keyframe_attention_exactly(group_norm):
    image = tiny_unet2d()
    ours = controlvideo_unet(image, group_norm=group_norm)
    plain = inflate_unet(copy.deepcopy(image), attention="keyframe", temporal_attention=False,
                         group_norm=group_norm)  # fmt: skip
    sample, embeds = inputs(f=4)
    assert torch.equal(ours(sample, 500, embeds).sample, plain(sample, 500, embeds).sample)
    randomize_(next(m for m in ours.modules() if isinstance(m, ParallelTemporalAttention)).conv,
               3)  # fmt: skip
    assert not torch.equal(ours(sample, 500, embeds).sample, plain(sample, 500, embeds).sample)


def test_temporal_branch_only_in_down_blocks_0_to_2_and_up_blocks_1_to_3():
    with torch.random.fork_rng(devices=[]):
        image = UNet2DConditionModel(**SD_LAYOUT)
    ours = controlvideo_unet(image)
    with_branch = {
        ".".join(name.split(".")[1:3])
        for name, m in ours.named_modules() if isinstance(m, ParallelTemporalAttention)
    }  # fmt: skip
    assert with_branch == {"down_blocks.0", "down_blocks.1", "down_blocks.2",
                           "up_blocks.1", "up_blocks.2", "up_blocks.3"}  # fmt: skip
    # each branch starts as a copy of its block's attn1, its 1x1 conv at zero
    for name, m in ours.named_modules():
        if isinstance(m, ParallelTemporalAttention):
            attn1 = ours.get_submodule(name.replace(".temporal", ".spatial.attn1"))
            for key, value in attn1.state_dict().items():
                assert torch.equal(m.attn.state_dict()[key], value), (name, key)
            assert not m.conv.weight.any() and not m.conv.bias.any()


@torch.no_grad()
def test_a_block_computes_controlvideos_definition():
    """ControlVideo's BasicTransformerBlock (libs/attention.py), written out here: key-frame
    attention on norm1(x), plus conv_temp(attn_temp(norm1(x) over frames)), then cross-
    attention and the feed-forward, each with its residual."""
    f, n = 3, 16
    ours = controlvideo_unet()
    video_block = ours.unet.down_blocks[0].attentions[0].transformer_blocks[0]
    randomize_(video_block.temporal, 2, scale=0.3)
    block, branch = video_block.spatial, video_block.temporal
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2 * f, n, block.norm1.normalized_shape[0], generator=g)
    context = torch.randn(2 * f, 6, D, generator=g)

    def attention(a, q_in, kv_in):
        q, k, v = a.to_q(q_in), a.to_k(kv_in), a.to_v(kv_in)
        heads = [rearrange(t, "b n (h d) -> b h n d", h=a.heads) for t in (q, k, v)]
        out = rearrange(F.scaled_dot_product_attention(*heads), "b h n d -> b n (h d)")
        return a.to_out[0](out)

    h = block.norm1(x)
    keyframe = repeat(rearrange(h, "(b f) n c -> b f n c", f=f)[:, 0], "b n c -> (b f) n c", f=f)
    out = attention(block.attn1, h, keyframe) + x
    frames_seq = rearrange(h, "(b f) n c -> (b n) f c", f=f)
    temp = rearrange(attention(branch.attn, frames_seq, frames_seq), "(b n) f c -> (b f) n c", n=n)
    temp = rearrange(temp, "b (hh ww) c -> b c hh ww", hh=4)
    out = out + rearrange(branch.conv(temp), "b c hh ww -> b (hh ww) c")
    out = attention(block.attn2, block.norm2(out), context) + out
    expected = block.ff(block.norm3(out)) + out
    with ours.frames.frames(f):
        got = video_block(x, encoder_hidden_states=context)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_tune_a_video_architecture_is_unchanged_by_default():
    video = inflate_unet(tiny_unet2d())
    assert video.config.architecture == "tune_a_video"
    assert not any(isinstance(m, ParallelTemporalAttention) for m in video.modules())
    assert any(".mid_block." in n and ".temporal." in n for n, _ in video.named_parameters())


# ----------------------------------------------------------------------------- ControlNets


@torch.no_grad()
def test_video_controlnet_per_frame_equals_the_2d_controlnet_on_each_frame():
    image = tiny_unet2d()
    net2d = tiny_controlnet(image)
    video = inflate_controlnet(copy.deepcopy(net2d), attention="none", group_norm="per_frame")
    sample, embeds = inputs(f=3)
    cond = maps(f=3)
    res = video(sample, 500, embeds, cond, conditioning_scale=0.7)
    for i in range(3):
        down, mid = net2d(sample[:, :, i], 500, embeds, cond[:, :, i], conditioning_scale=0.7,
                          return_dict=False)  # fmt: skip
        for ours, theirs in zip(res.down, down, strict=True):
            torch.testing.assert_close(ours[:, :, i], theirs, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(res.mid[:, :, i], mid, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_keyframe_attention_in_the_controlnet_reads_frame_0():
    video = inflate_controlnet(tiny_controlnet(tiny_unet2d()), group_norm="per_frame")
    sample, embeds = inputs(f=4)
    base = video(sample, 500, embeds, maps(f=4)).mid
    changed = sample.clone()
    changed[:, :, 2] += 1.0
    diff = (video(changed, 500, embeds, maps(f=4)).mid - base).abs().amax(dim=(0, 1, 3, 4))
    assert [bool(d > 1e-6) for d in diff] == [False, False, True, False]
    changed = sample.clone()
    changed[:, :, 0] += 1.0
    diff = (video(changed, 500, embeds, maps(f=4)).mid - base).abs().amax(dim=(0, 1, 3, 4))
    assert all(d > 1e-6 for d in diff)


@torch.no_grad()
def test_control_scale_zero_equals_the_unconditioned_model_bit_for_bit():
    image = tiny_unet2d()
    unet = controlvideo_unet(image)
    model = ControlledVideoUNet(unet, [inflate_controlnet(tiny_controlnet(image))], [0.0])
    model.set_conditions([maps()])
    sample, embeds = inputs()
    assert torch.equal(model(sample, 500, embeds).sample, unet(sample, 500, embeds).sample)
    model.scales = [1.0]
    assert not torch.equal(model(sample, 500, embeds).sample, unet(sample, 500, embeds).sample)


@torch.no_grad()
def test_one_controlnet_through_the_multi_net_path_equals_the_single_net_and_nets_add_up():
    image = tiny_unet2d()
    unet = controlvideo_unet(image)
    a, b = (inflate_controlnet(tiny_controlnet(image, seed)) for seed in (5, 6))
    sample, embeds = inputs()
    ra = a(sample, 500, embeds, maps(seed=1), conditioning_scale=0.8)
    single = unet(sample, 500, embeds, down_block_additional_residuals=ra.down,
                  mid_block_additional_residual=ra.mid).sample  # fmt: skip
    model = ControlledVideoUNet(unet, [a], [0.8])
    model.set_conditions([maps(seed=1)])
    assert torch.equal(model(sample, 500, embeds).sample, single)

    rb = b(sample, 500, embeds, maps(seed=2), conditioning_scale=0.5)
    summed = [x + y for x, y in zip(ra.down, rb.down, strict=True)]
    both = unet(sample, 500, embeds, down_block_additional_residuals=summed,
                mid_block_additional_residual=ra.mid + rb.mid).sample  # fmt: skip
    model = ControlledVideoUNet(unet, [a, b], [0.8, 0.5])
    model.set_conditions([maps(seed=1), maps(seed=2)])
    assert torch.equal(model(sample, 500, embeds).sample, both)


@torch.no_grad()
def test_one_map_batch_serves_both_halves_of_guidance():
    image = tiny_unet2d()
    model = ControlledVideoUNet(controlvideo_unet(image),
                                [inflate_controlnet(tiny_controlnet(image))])  # fmt: skip
    sample, embeds = inputs(b=2)
    model.set_conditions([maps(b=1)])
    one = model(sample, 500, embeds).sample
    model.set_conditions([maps(b=1).expand(2, -1, -1, -1, -1)])
    assert torch.equal(one, model(sample, 500, embeds).sample)


def test_guidance_window_follows_diffusers_rule_by_step():
    timesteps = torch.arange(1, 1000, 100)  # K = 10 levels, ascending
    window = ControlWindow(0.2, 0.7, timesteps)
    steps = []
    for i in range(10):  # sampling step i runs at timesteps[K - 1 - i]
        keep = bool(window.keep(timesteps[9 - i].reshape(1)))
        diffusers_keep = not (i / 10 < 0.2 or (i + 1) / 10 > 0.7)
        assert keep == diffusers_keep
        steps.append(keep)
    assert steps == [False, False, True, True, True, True, True, False, False, False]
    assert ControlWindow(0.0, 1.0, timesteps).always
    with pytest.raises(ValueError, match="start < end"):
        ControlWindow(0.5, 0.5, timesteps)


@torch.no_grad()
def test_outside_the_window_the_model_is_the_unconditioned_one():
    image = tiny_unet2d()
    unet = controlvideo_unet(image)
    timesteps = torch.tensor([1, 501])
    model = ControlledVideoUNet(unet, [inflate_controlnet(tiny_controlnet(image))],
                                window=ControlWindow(0.0, 0.5, timesteps))  # fmt: skip
    model.set_conditions([maps()])
    sample, embeds = inputs()
    assert torch.equal(model(sample, 1, embeds).sample, unet(sample, 1, embeds).sample)
    assert not torch.equal(model(sample, 501, embeds).sample, unet(sample, 501, embeds).sample)


def test_trainable_set_is_exactly_controlvideos():
    """ControlVideo trains every module whose name ends with one of its `trainable_modules`
    (attn1.to_out, attn_temp, conv_temp; norm_temp matches nothing), in the UNet and the
    ControlNet (train.py)."""
    with torch.random.fork_rng(devices=[]):
        image = UNet2DConditionModel(**SD_LAYOUT)
    model = ControlledVideoUNet(controlvideo_unet(image),
                                [inflate_controlnet(ControlNetModel.from_unet(image))])  # fmt: skip
    trainable = set(set_controlled_trainable(model, CONTROLVIDEO_TRAINABLE))
    expected = set()
    ours_to_cv = {".temporal.attn": ".attn_temp", ".temporal.conv": ".conv_temp",
                  ".spatial.": "."}  # fmt: skip
    for name, module in model.named_modules():
        cv_name = name
        for a, b in ours_to_cv.items():
            cv_name = cv_name.replace(a, b)
        if cv_name.endswith(("attn1.to_out", "attn_temp", "conv_temp")):
            expected |= {f"{name}.{p}" for p, _ in module.named_parameters()}
    assert trainable == expected
    assert any(".controlnet." in n for n in trainable)
    assert any(".mid_block." in n and "attn1.to_out" in n for n in trainable)
    assert not any("attn1.to_q" in n or "attn2" in n for n in trainable)


def test_gradient_checkpointing_in_both_networks_gives_the_same_gradients():
    image = tiny_unet2d()
    net = tiny_controlnet(image)

    def grads(checkpointing):
        model = ControlledVideoUNet(controlvideo_unet(image),
                                    [inflate_controlnet(copy.deepcopy(net))])  # fmt: skip
        randomize_(model.unet.unet.down_blocks[0].attentions[0].transformer_blocks[0].temporal
                   .conv, 7)  # fmt: skip
        set_controlled_trainable(model)
        model.set_conditions([maps()])
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.train()
        sample, embeds = inputs()
        model(sample, torch.tensor([500]), embeds).sample.square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain, checkpointed = grads(False), grads(True)
    assert plain.keys() == checkpointed.keys()
    assert all(plain[n].abs().sum() > 0 for n in plain if ".controlnet." in n)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7)


def test_bad_conditions_say_what_was_expected():
    image = tiny_unet2d()
    model = ControlledVideoUNet(controlvideo_unet(image),
                                [inflate_controlnet(tiny_controlnet(image))])  # fmt: skip
    sample, embeds = inputs(f=3)
    with pytest.raises(RuntimeError, match="set_conditions"):
        model(sample, 500, embeds)
    model.set_conditions([maps(f=2)])
    with pytest.raises(ValueError, match=r"\(1 or 1, 3, 3, 16, 16\)"):
        model(sample, 500, embeds)
    with pytest.raises(ValueError, match="one per ControlNet"):
        model.set_conditions([maps(), maps()])
