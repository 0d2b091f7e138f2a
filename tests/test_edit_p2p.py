"""Prompt-to-prompt control in `edit`: recording, identity cases, processors, end to end."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from einops import rearrange

from edit_helpers import EDIT, SOURCE, make_pipeline, source_frames, source_latents
from inr_smooth.cli import main
from inr_smooth.inversion import ddim_invert, ddim_sample
from inr_smooth.pipelines import p2p_attention
from inr_smooth.pipelines.attention_fusion import estimate_store_bytes
from inr_smooth.pipelines.components import encode_prompts, load_parts
from inr_smooth.pipelines.edit import EditConfig, edit
from inr_smooth.pipelines.guidance import guided_noise_fn
from inr_smooth.pipelines.inversion_cache import cache_key
from inr_smooth.pipelines.p2p_attention import (
    ControlPlan,
    MapReplaceProcessor,
    PromptControl,
    PromptCrossAttnProcessor,
    cross_key,
    estimate_control_bytes,
)
from inr_smooth.pipelines.prompt_to_prompt import MAX_TOKENS, build_cross_control
from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import read_video, write_video
from tiny_models import randomize_

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def parts(tiny_sd_folder):
    return load_parts(str(tiny_sd_folder))


@pytest.fixture(scope="module")
def latents(parts):
    return source_latents(parts, source_frames())


def _edit(pipe, latents):
    inverted = pipe.invert(latents)
    return inverted, pipe.sample(inverted.final_latents, inverted.store)


def _reference_probs(attn, hidden, context):
    """softmax(q k^T / sqrt(d)) per head, written out: (b, heads, n, 77)."""
    q = rearrange(attn.to_q(hidden), "b n (h d) -> b h n d", h=attn.heads)
    k = rearrange(attn.to_k(context), "b m (h d) -> b h m d", h=attn.heads)
    return (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)


# ---------------------------------------------------------------------- the tiny pipeline
@torch.no_grad()
def test_recording_stores_the_cross_attention_maps_and_changes_nothing(parts, latents):
    pipe = make_pipeline(parts, cross_replace=0.5, self_replace=0.0, inversion_weight=0.0)
    plan = pipe.control_plan
    assert plan.cross_steps == {2, 3} and len(plan.cross_layers) == 4  # int(0.5 * 5) = 2 steps
    modules = dict(pipe.video_unet.unet.named_modules())
    seen = {name: [] for name in plan.cross_layers}

    def hook(name):
        def grab(module, args, kwargs):
            seen[name].append((args[0].clone(), kwargs["encoder_hidden_states"].clone()))

        return grab

    hooks = [modules[n].register_forward_pre_hook(hook(n), with_kwargs=True) for n in seen]
    inverted = pipe.invert(latents)
    for handle in hooks:
        handle.remove()
    plain = make_pipeline(parts, cross_replace=0.0, self_replace=0.0, inversion_weight=0.0)
    assert torch.equal(inverted.final_latents, plain.invert(latents).final_latents)
    store = inverted.store
    assert set(store.names()) == {cross_key(k, n) for k in (2, 3) for n in plan.cross_layers}
    for step in (2, 3):
        for name in plan.cross_layers:
            stored = store.get(cross_key(step, name))
            hidden, context = seen[name][step]  # inversion calls the UNet in step order
            reference = _reference_probs(modules[name], hidden, context)
            assert stored.dtype == torch.float16 and stored.shape[-1] == MAX_TOKENS
            torch.testing.assert_close(stored.float(), reference, atol=1e-3, rtol=0)
    shape = dict(num_frames=4, latent_hw=(8, 8))
    assert store.stored_bytes == estimate_control_bytes(pipe.video_unet, plan, **shape)


@torch.no_grad()
def test_identical_prompts_with_replace_give_the_edit_exactly_the_sources_maps(
    parts, latents, monkeypatch
):
    pipe = make_pipeline(parts, prompt=SOURCE, cross_replace=1.0, self_replace=0.0,
                         controller="replace")  # fmt: skip
    inverted = pipe.invert(latents)
    names = {id(m): n for n, m in pipe.video_unet.unet.named_modules()}
    applied = []
    original = p2p_attention.attend_with

    def recording(attn, probs, hidden_states, context):
        applied.append((names[id(attn)], probs.clone()))
        return original(attn, probs, hidden_states, context)

    monkeypatch.setattr(p2p_attention, "attend_with", recording)
    pipe.sample(inverted.final_latents, inverted.store)
    layers = list(pipe.control_plan.cross_layers)
    assert len(applied) == 4 * len(layers)  # every step, every controlled layer
    for i, (name, probs) in enumerate(applied):
        step = 3 - i // len(layers)  # sampling runs from the noisiest schedule index
        source = inverted.store.get(cross_key(step, name), dtype=torch.float32)
        assert torch.equal(probs, source), (i, name)


@torch.no_grad()
def test_reweight_one_is_bit_identical_to_no_reweight(parts, latents):
    plain = make_pipeline(parts, cross_replace=0.8)
    inverted, edited = _edit(plain, latents)
    ones = make_pipeline(parts, cross_replace=0.8, reweight={"green": 1.0})
    assert torch.equal(ones.sample(inverted.final_latents, inverted.store), edited)
    strong = make_pipeline(parts, cross_replace=0.8, reweight=["green=5"])
    assert strong.config.reweight == {"green": 5.0}
    assert not torch.allclose(strong.sample(inverted.final_latents, inverted.store), edited)


@torch.no_grad()
def test_no_replacement_at_all_is_bit_identical_to_plain_editing(parts, latents):
    pipe = make_pipeline(parts, cross_replace=0.0, self_replace=0.0, blend_words=("circle",),
                         inversion_weight=0.0)  # fmt: skip
    assert pipe.plan is None and pipe.control_plan is None
    inverted, edited = _edit(pipe, latents)
    assert inverted.store is None
    embeds = {p: encode_prompts(pipe.parts, [p]) for p in (SOURCE, EDIT, "")}
    start = ddim_invert(latents, guided_noise_fn(pipe.video_unet, embeds[SOURCE]), pipe.schedule)
    sample_fn = guided_noise_fn(pipe.video_unet, embeds[EDIT], embeds[""], 7.5)
    assert torch.equal(edited, ddim_sample(start.final_latents, sample_fn, pipe.schedule))


@torch.no_grad()
def test_cross_replacement_changes_the_edit_and_the_store_counts_it(parts, latents):
    pipe = make_pipeline(parts, cross_replace=0.8, blend_words=("circle",))
    assert pipe.control.kind == "replace"  # the two prompts have as many words
    inverted, edited = _edit(pipe, latents)
    without = make_pipeline(parts, cross_replace=0.0, blend_words=("circle",))
    assert not torch.allclose(without.sample(inverted.final_latents, inverted.store), edited)
    report, shape = inverted.store.report(), dict(num_frames=4, latent_hw=(8, 8))
    assert inverted.store.stored_bytes == estimate_store_bytes(
        pipe.video_unet, pipe.plan, **shape
    ) + estimate_control_bytes(pipe.video_unet, pipe.control_plan, **shape)
    assert set(report["by_kind"]) == {"self", "cross", "blend"} and report["by_kind"]["cross"] > 0


def test_words_not_in_their_prompt_and_impossible_swaps_are_one_line_errors():
    base = dict(video="v.mp4", source_prompt=SOURCE, prompt=EDIT)
    with pytest.raises(ValueError, match="reweight word 'tiger' is not in the edit prompt"):
        EditConfig(**base, reweight={"tiger": 2})
    with pytest.raises(ValueError, match="cross-replace word 'tiger' is not in the edit prompt"):
        EditConfig(**base, cross_replace={"default": 0.8, "tiger": [0, 0.5]})
    with pytest.raises(ValueError, match="same number of words"):
        EditConfig(**{**base, "prompt": "a big green square"}, controller="replace")
    with pytest.raises(ValueError, match="WORD=SCALE"):
        EditConfig(**base, reweight=["green"])
    with pytest.raises(ValueError, match="cross_replace must be a fraction"):
        EditConfig(**base, cross_replace=1.5)
    assert EditConfig(**base, cross_replace={"default_": 1, "green": [0.2, 0.5]}).cross_replace \
        == {"default": 1.0, "green": [0.2, 0.5]}  # fmt: skip


# ---------------------------------------------------------------------- "batch" processors
def _probe_layer(dim: int = MAX_TOKENS, cross: bool = True) -> Attention:
    """One head; identity values and output: the output rows are the attention map itself
    when the keys' inputs are the identity (one token per key)."""
    with torch.random.fork_rng(devices=[]):
        attn = Attention(query_dim=dim, cross_attention_dim=dim if cross else None, heads=1,
                         dim_head=dim, out_bias=True)  # fmt: skip
    randomize_(attn, 3, scale=0.3).eval()
    with torch.no_grad():
        attn.to_v.weight.copy_(torch.eye(dim))
        attn.to_out[0].weight.copy_(torch.eye(dim))
        attn.to_out[0].bias.zero_()
    return attn


@torch.no_grad()
def test_batch_source_cross_control_gives_edit_rows_the_source_rows_maps(tok_folder):
    attn, frames, n = _probe_layer(), 2, 6
    control = build_cross_control(tok_folder, SOURCE, SOURCE, 1, 1.0, controller="replace")
    plan = ControlPlan({"layer": 1}, frozenset({0}))
    state = PromptControl(plan, control, num_steps=1, source="batch", batch_videos=4, videos=2)
    state.phase, state.step, state.latent_hw = "edit", 0, (2, 3)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(4 * frames, n, MAX_TOKENS, generator=g)  # [u_src, u_edit, c_src, c_edit]
    context = torch.eye(MAX_TOKENS).expand(4 * frames, -1, -1)
    out = PromptCrossAttnProcessor(state, "layer", 1, AttnProcessor2_0())(attn, hidden, context)
    plain = AttnProcessor2_0()(attn, hidden, context)
    own = _reference_probs(attn, hidden, context)[:, 0]  # (rows, n, 77)
    torch.testing.assert_close(out[: 2 * frames], plain[: 2 * frames], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[2 * frames : 3 * frames], own[2 * frames : 3 * frames])
    torch.testing.assert_close(out[3 * frames :], own[2 * frames : 3 * frames])  # source's maps


@torch.no_grad()
def test_batch_map_replacement_on_a_temporal_layer():
    """Video-P2P's "self" replacement on temporal attention: (b n) rows of f frames."""
    attn, frames, n = _probe_layer(dim=8, cross=False), 3, 5
    plan = ControlPlan({}, frozenset(), self_layers=("temporal",), self_steps=frozenset({0}))
    state = PromptControl(plan, None, num_steps=1, source="batch", batch_videos=4, videos=2)
    state.phase, state.step = "edit", 0
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(4 * n, frames, 8, generator=g)
    processor = MapReplaceProcessor(state, "temporal", AttnProcessor2_0())
    out = processor(attn, hidden)
    probs = _reference_probs(attn, hidden, hidden)  # (rows, 1, f, f)
    source, edit_rows = slice(2 * n, 3 * n), slice(3 * n, None)
    expected = (probs[source] @ attn.to_v(hidden[edit_rows])[:, None])[:, 0]
    torch.testing.assert_close(out[edit_rows], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[: 3 * n], AttnProcessor2_0()(attn, hidden)[: 3 * n],
                               atol=1e-5, rtol=0)  # fmt: skip
    same = hidden.clone()
    same[edit_rows] = hidden[source]
    torch.testing.assert_close(processor(attn, same), AttnProcessor2_0()(attn, same),
                               atol=1e-5, rtol=0)  # fmt: skip
    state.step = None  # outside the self steps: the wrapped processor's output, bit for bit
    assert torch.equal(processor(attn, hidden), AttnProcessor2_0()(attn, hidden))


@pytest.fixture(scope="module")
def tok_folder(tiny_sd_folder):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(tiny_sd_folder / "tokenizer")


# ---------------------------------------------------------------------- end to end
STYLE = dict(prompt="a red circle moving right on a blue background, watercolor painting",
             controller="refine", cross_replace=0.5, reweight={"watercolor": 10})  # fmt: skip
SHAPE = dict(prompt="a red square moving right on a blue background", controller="replace",
             cross_replace=0.5, blend_words=("circle",))  # fmt: skip


@pytest.mark.parametrize("kind", ["style", "shape"])
def test_edit_end_to_end_on_the_tiny_model(tiny_sd_folder, tmp_path, kind):
    video = write_video(tmp_path / "clip.mp4", source_frames(frames=4, size=16), fps=8)
    settings = STYLE if kind == "style" else SHAPE
    result = edit(EditConfig(
        video=str(video), source_prompt=SOURCE, model=str(tiny_sd_folder),
        output=str(tmp_path / "out"), frames=4, size=16, inference_steps=3,
        fusion_min_downsample=1, **settings,
    ), progress=False)  # fmt: skip
    assert len(result.files) == 3 and all(p.is_file() for p in result.files)
    log = json.loads((result.output / "log.json").read_text())
    control = log["prompt_control"]
    assert control["controller"] == settings["controller"] and control["cross_steps"] == 2
    kinds = log["attention_store"]["by_kind"]
    assert kinds["cross"] > 0 and ("blend" in kinds) == (kind == "shape")
    if kind == "style":  # 'watercolor' after the comma
        assert control["reweight_tokens"] == {"11": 10.0}


@pytest.mark.parametrize("kind", ["style", "shape"])
def test_edit_end_to_end_on_mini_from_the_cli(tmp_path, capsys, kind):
    scene = Scene(color="red", shape="circle", motion="right")
    video = write_video(tmp_path / "clip.mp4", render(scene, frames=4, size=64), fps=8)
    args = ["edit", "--video", str(video), "--model", "mini", "--source-prompt", scene.caption,
            "--frames", "4", "--size", "64", "--inference-steps", "4", "--seed", "0",
            "--output", str(tmp_path / "out")]  # fmt: skip
    if kind == "style":
        args += ["--prompt", scene.edited(color="green").caption, "--cross-replace", "0.5",
                 "--reweight", "green=4", "--attention", "middle"]  # fmt: skip
    else:
        args += ["--prompt", scene.edited(shape="square").caption, "--blend-words", "circle",
                 "--cross-replace", "0.8", "--controller", "replace"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    log = json.loads((tmp_path / "out" / "log.json").read_text())
    assert log["prompt_control"]["controller"] == "replace"  # same word count either way
    assert log["prompt_control"]["cross_layers"] > 0
    assert log["attention_store"]["by_kind"]["cross"] > 0
    assert (kind == "shape") == bool(log["prompt_control"]["blend_layers"])
    written = [p for p in (tmp_path / "out").glob("*.mp4") if "side-by-side" not in p.name]
    assert len(written) == 1 and read_video(written[0]).shape == (4, 64, 64, 3)


@torch.no_grad()
def test_the_cache_keys_the_plan_and_round_trips_the_cross_maps(parts, tmp_path):
    frames = source_frames()

    def key(**change):
        settings = {"cross_replace": 0.8, **change}
        return cache_key(make_pipeline(parts, **settings).cache_material(frames))

    base = key()
    for change in (dict(cross_replace=0.5), dict(cross_frame_min_channels=64),
                   dict(cross_replace={"default": 0.2, "green": [0.0, 0.5]})):  # fmt: skip
        assert key(**change) != base, change  # the inversion records other steps or maps
    # a word window inside the default's steps records the same: int(0.8 * 5) = every step
    assert key(cross_replace={"default": 0.8, "green": [0.0, 0.5]}) == base
    for change in (dict(reweight={"green": 3}), dict(controller="refine"),
                   dict(prompt="a green circle moving right on a blue background")):  # fmt: skip
        assert key(**change) == base, change
    cache = str(tmp_path / "cache")
    settings = dict(cross_replace=0.8, blend_words=("circle",), cache_dir=cache)
    first = make_pipeline(parts, output=str(tmp_path / "a"), **settings)(frames)
    again = make_pipeline(parts, output=str(tmp_path / "b"), **settings)(frames)
    assert not first.cache_hit and again.cache_hit
    assert torch.equal(again.latents, first.latents)
    assert again.log["attention_store"]["by_kind"] == first.log["attention_store"]["by_kind"]
