"""Video UNet weights: diff-only save/load, Tune-A-Video checkpoints, loading the base UNet."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from inr_smooth.models import (
    inflate_unet,
    load_tune_a_video_weights,
    load_unet2d,
    load_video_unet_weights,
    save_video_unet_weights,
    set_trainable,
    to_tune_a_video_state_dict,
)
from tiny_models import TINY_UNET_CONFIG, tiny_unet2d

D = TINY_UNET_CONFIG["cross_attention_dim"]


def inputs(f=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 4, f, 8, 8, generator=g), torch.randn(1, 5, D, generator=g)


def tuned_video_unet(seed=1):
    """An inflated tiny UNet whose trainable tensors were moved away from their start."""
    video = inflate_unet(tiny_unet2d(), attention="sparse_causal")
    set_trainable(video)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in video.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn(param.shape, generator=g))
    return video


# ----------------------------------------------------------------------------- save / load


@torch.no_grad()
def test_save_load_round_trip_is_exact_and_stores_only_the_difference(tmp_path):
    video = tuned_video_unet()
    save_video_unet_weights(video, tmp_path / "w", base_unet=tiny_unet2d())
    stored = load_file(tmp_path / "w" / "video_unet.safetensors")
    trainable = {name for name, p in video.named_parameters() if p.requires_grad}
    assert set(stored) == trainable  # the tuned tensors; the frozen base is not copied

    loaded = load_video_unet_weights(tiny_unet2d(), tmp_path / "w")
    assert loaded.config == video.config
    for (name, a), (_, b) in zip(
        video.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    sample, prompt_embeds = inputs()
    assert torch.equal(
        video(sample, 7, prompt_embeds).sample, loaded(sample, 7, prompt_embeds).sample
    )


def test_save_without_base_takes_the_trainable_tensors(tmp_path):
    video = tuned_video_unet()
    save_video_unet_weights(video, tmp_path)
    record = json.loads((tmp_path / "video_unet.json").read_text())
    assert record["changed_from"] == "requires_grad"
    assert record["num_tensors"] == sum(p.requires_grad for p in video.parameters())


def test_load_rejects_a_different_architecture_and_missing_files(tmp_path):
    save_video_unet_weights(tuned_video_unet(), tmp_path / "w")
    other = tiny_unet2d(cross_attention_dim=16)
    with pytest.raises(ValueError, match="cross_attention_dim=32"):
        load_video_unet_weights(other, tmp_path / "w")
    with pytest.raises(FileNotFoundError, match=r"video_unet\.json"):
        load_video_unet_weights(tiny_unet2d(), tmp_path / "nothing")
    with pytest.raises(ValueError, match="expected a UNet2DConditionModel or a VideoUNet"):
        load_video_unet_weights(torch.nn.Linear(2, 2), tmp_path / "w")


# ----------------------------------------------------------------------------- Tune-A-Video


def tune_a_video_state_dict(seed=2) -> dict[str, torch.Tensor]:
    """A Tune-A-Video UNet3DConditionModel state dict, named the way its code names it.

    Built from the 2-D UNet's own names (Tune-A-Video keeps them) plus, in every transformer
    block, ``attn_temp`` (attention with bias-free q/k/v and a biased output projection) and
    ``norm_temp`` (LayerNorm) -- independently of this package's key mapping.
    """
    base = tiny_unet2d(seed=seed).state_dict()
    blocks = sorted({m.group(0) for k in base if (m := re.match(r".*transformer_blocks\.\d+", k))})
    g = torch.Generator().manual_seed(seed)
    state = {k: v.clone() for k, v in base.items()}
    for block in blocks:
        dim = base[f"{block}.norm1.weight"].shape[0]
        for name in ("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight"):
            state[f"{block}.attn_temp.{name}"] = 0.1 * torch.randn(dim, dim, generator=g)
        state[f"{block}.attn_temp.to_out.0.bias"] = 0.1 * torch.randn(dim, generator=g)
        state[f"{block}.norm_temp.weight"] = 1 + 0.1 * torch.randn(dim, generator=g)
        state[f"{block}.norm_temp.bias"] = 0.1 * torch.randn(dim, generator=g)
    return state


def test_tune_a_video_state_dict_loads_without_missing_or_unexpected_keys(tmp_path):
    state = tune_a_video_state_dict()
    video = inflate_unet(tiny_unet2d(), attention="full")
    names = load_tune_a_video_weights(video, state)
    assert len(names) == len(state) == len(video.state_dict())
    assert video.config.attention == "sparse_causal" and video.config.group_norm == "video"
    back = to_tune_a_video_state_dict(video)
    assert set(back) == set(state)
    assert all(torch.equal(back[k], state[k]) for k in state)

    # the same through a file and a pipeline folder
    save_file(state, tmp_path / "diffusion_pytorch_model.safetensors")
    (tmp_path / "unet").mkdir()
    save_file(state, tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    for source in (tmp_path / "diffusion_pytorch_model.safetensors", tmp_path):
        again = inflate_unet(tiny_unet2d(seed=5))
        load_tune_a_video_weights(again, source)
        assert all(
            torch.equal(a, b)
            for a, b in zip(again.state_dict().values(), back.values(), strict=True)
        )


@torch.no_grad()
def test_tune_a_video_weights_give_the_same_output_as_the_mapped_model():
    state = tune_a_video_state_dict()
    a = inflate_unet(tiny_unet2d(seed=7))
    b = inflate_unet(tiny_unet2d(seed=8), attention="none")
    load_tune_a_video_weights(a, state)
    load_tune_a_video_weights(b, copy.deepcopy(state))
    sample, prompt_embeds = inputs(f=4)
    assert torch.equal(a(sample, 11, prompt_embeds).sample, b(sample, 11, prompt_embeds).sample)


def test_tune_a_video_loading_rejects_incomplete_or_2d_checkpoints():
    state = tune_a_video_state_dict()
    video = inflate_unet(tiny_unet2d())
    with pytest.raises(ValueError, match="attn_temp"):
        load_tune_a_video_weights(video, tiny_unet2d().state_dict())
    partial = {k: v for k, v in state.items() if "norm_temp" not in k}
    with pytest.raises(ValueError, match=r"lacks \d+ tensors.*norm_temp"):
        load_tune_a_video_weights(video, partial)
    with pytest.raises(ValueError, match="temporal attention"):
        load_tune_a_video_weights(inflate_unet(tiny_unet2d(), temporal_attention=False), state)


# ----------------------------------------------------------------------------- base UNet


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd")
    tiny_unet2d(seed=3).save_pretrained(folder / "unet")
    return folder


def same_weights(a, b):
    return all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_load_unet2d_from_a_pipeline_folder_a_unet_folder_and_a_single_file(sd_folder, tmp_path):
    reference = tiny_unet2d(seed=3)
    assert same_weights(load_unet2d(sd_folder), reference)
    assert same_weights(load_unet2d(sd_folder / "unet"), reference)
    save_file(reference.state_dict(), tmp_path / "model.safetensors")
    single = load_unet2d(tmp_path / "model.safetensors", config=sd_folder)
    assert same_weights(single, reference)
    half = load_unet2d(sd_folder, torch_dtype=torch.float16)
    assert half.dtype == torch.float16


def test_load_unet2d_says_what_is_wrong(sd_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="no Stable Diffusion folder"):
        load_unet2d(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a diffusers Stable Diffusion folder"):
        load_unet2d(tmp_path)
    (tmp_path / "model.ckpt").write_bytes(b"pickle")
    with pytest.raises(ValueError, match=r"expected a \.safetensors checkpoint"):
        load_unet2d(tmp_path / "model.ckpt")
    tav = tmp_path / "tav" / "unet"
    tav.mkdir(parents=True)
    config = json.loads((sd_folder / "unet" / "config.json").read_text())
    (tav / "config.json").write_text(json.dumps({**config, "_class_name": "UNet3DConditionModel"}))
    with pytest.raises(ValueError, match="Tune-A-Video UNet"):
        load_unet2d(tav.parent)
