"""Video-P2P's editor on tiny components: decoupled guidance, fast mode, control, cache, runs."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
import torch

from edit_helpers import EDIT, SOURCE, source_frames, source_latents
from inr_smooth.cli import main
from inr_smooth.inversion import ddim_sample
from inr_smooth.null_text import sample_with_null_text
from inr_smooth.pipelines.components import encode_prompts, load_parts
from inr_smooth.pipelines.edit import EditConfig, edit
from inr_smooth.pipelines.guidance import embedding_noise_fn, guided_noise_fn
from inr_smooth.pipelines.inversion_cache import cache_key
from inr_smooth.pipelines.p2p_attention import prompt_control_installed
from inr_smooth.pipelines.prompt_to_prompt import LocalBlend
from inr_smooth.pipelines.video_p2p import EMBEDDINGS, VideoP2PPipeline, load_video_p2p_unet
from inr_smooth.pipelines.video_p2p_config import t2s_config, video_p2p_config
from inr_smooth.pipelines.video_p2p_control import VideoP2PControl, plan_video_p2p_control
from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import read_video, write_video
from tiny_models import randomize_

pytestmark = pytest.mark.usefixtures("one_thread")
NO_CONTROL = dict(cross_replace=0.0, self_replace=0.0)


@pytest.fixture(scope="module")
def parts(tiny_sd_folder):
    return load_parts(str(tiny_sd_folder))


def vp2p_config(**overrides) -> EditConfig:
    """3 frames of 16 px, 3 steps, 2 null-text iterations; Video-P2P's defaults set by hand."""
    values = dict(video="", source_prompt=SOURCE, prompt=EDIT, model="tiny", output="",
                  frames=3, size=16, inference_steps=3, editor="video-p2p",
                  attention="first_frame", inversion_weight=0.0, cross_replace=0.2,
                  null_text_iterations=2, seed=0)  # fmt: skip
    return EditConfig(**{**values, **overrides})


def make_vp2p(parts, **overrides) -> VideoP2PPipeline:
    """A pipeline on a fresh copy of the tiny UNet, its temporal attention woken up."""
    config = vp2p_config(**overrides)
    parts = dataclasses.replace(parts, unet=copy.deepcopy(parts.unet))
    video_unet = load_video_p2p_unet(parts, config)
    for name, module in video_unet.named_modules():
        if name.endswith("temporal.attn"):
            randomize_(module, 7, scale=0.1)
    return VideoP2PPipeline(parts, video_unet, config, progress=False)


def _start(pipe):
    latents = source_latents(pipe.parts, source_frames(frames=3))
    trajectory = pipe.invert(latents)
    return trajectory.latents, trajectory.latents[-1]


def _contexts(pipe):
    """Record the prompt embeddings of every UNet call."""
    seen = []
    pipe.video_unet.register_forward_pre_hook(lambda _, args: seen.append(args[2].clone()))
    return seen


@torch.no_grad()
def test_the_edit_row_never_sees_the_optimised_embeddings(parts):
    pipe = make_vp2p(parts, blend_words=("circle",), edit_blend_words=("square",))
    _, start = _start(pipe)
    embeddings = torch.randn(3, 1, 77, 32, generator=torch.Generator().manual_seed(4))
    seen = _contexts(pipe)
    pipe.sample(start, embeddings)
    e = pipe.embeds
    assert len(seen) == 3  # one batched call a step: [u_source, u_edit, c_source, c_edit]
    for i, context in enumerate(seen):
        assert torch.equal(context[0], embeddings[i, 0])  # the step's null-text embedding
        assert torch.equal(context[1], e["empty"][0])  # the edit row: the plain empty prompt
        assert torch.equal(context[2], e["source"][0]) and torch.equal(context[3], e["edit"][0])


@torch.no_grad()
def test_decoupled_and_fast_guidance_match_their_definitions(parts):
    pipe = make_vp2p(parts, **NO_CONTROL)
    _, start = _start(pipe)
    e, fn = pipe.embeds, embedding_noise_fn(pipe.video_unet)
    embeddings = torch.randn(3, 1, 77, 32, generator=torch.Generator().manual_seed(4))
    both = pipe.sample(start, embeddings)
    source = sample_with_null_text(start, fn, pipe.schedule, e["source"], embeddings)
    edited = ddim_sample(start, guided_noise_fn(pipe.video_unet, e["edit"], e["empty"], 7.5),
                         pipe.schedule)  # fmt: skip
    torch.testing.assert_close(both[:1], source, atol=2e-4, rtol=0)
    torch.testing.assert_close(both[1:], edited, atol=2e-4, rtol=0)
    # other embeddings move the source row only
    again = pipe.sample(start, embeddings * 0.5)
    torch.testing.assert_close(again[1:], both[1:], atol=2e-4, rtol=0)
    assert not torch.allclose(again[:1], both[:1], atol=1e-3)
    # fast (Video-P2P's --fast): the source row unguided, [u_edit, c_source, c_edit] a step
    fast = make_vp2p(parts, fast=True, **NO_CONTROL)
    seen = _contexts(fast)
    rows = fast.sample(start, None)
    calls = list(seen)  # the sampling's calls only
    unguided = ddim_sample(start, guided_noise_fn(fast.video_unet, e["source"]), fast.schedule)
    torch.testing.assert_close(rows[:1], unguided, atol=2e-4, rtol=0)
    torch.testing.assert_close(rows[1:], edited, atol=2e-4, rtol=0)
    assert len(calls) == 3
    assert all(c.shape[0] == 3 and torch.equal(c[0], e["empty"][0]) for c in calls)


def _state(pipe, monkeypatch):
    """The processors' state of the next sampling run."""
    made = []
    new = VideoP2PControl.new

    def capture(self, *, fast):
        made.append(new(self, fast=fast))
        return made[-1]

    monkeypatch.setattr(VideoP2PControl, "new", capture)
    return made


@torch.no_grad()
def test_temporal_self_replacement_identity_and_effect(parts):
    pipe = make_vp2p(parts, cross_replace=0.0, self_replace=1.0)
    info = pipe.log.info["prompt_control"]
    assert info["temporal_layers"] == 4 and info["self_steps"] == 3 and info["cross_layers"] == 0
    assert pipe.control.plan.self_layers[0].endswith(".temporal.attn")
    state = pipe.control.new(fast=False)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, 4, 3, 8, 8, generator=g)
    e = pipe.embeds

    def run(edit_latents, installed=True, step=1, edit_prompt="edit"):
        x = torch.cat([z, edit_latents, z, edit_latents])
        context = torch.cat([e["empty"], e["empty"], e["source"], e[edit_prompt]])
        with prompt_control_installed(pipe.video_unet, state if installed else None, "edit"):
            state.step = step
            return pipe.video_unet(x, int(pipe.schedule.timesteps[step]), context).sample

    # an edit row that is the source's: replacing its temporal maps changes nothing
    same = run(z, edit_prompt="source")
    torch.testing.assert_close(same, run(z, installed=False, edit_prompt="source"), atol=1e-5,
                               rtol=0)  # fmt: skip
    other = z + torch.randn(z.shape, generator=g)
    controlled, plain = run(other), run(other, installed=False)
    # the unconditional rows and the source row: their own maps (the source's through the
    # explicit softmax, the others through SDPA: equal to rounding)
    torch.testing.assert_close(controlled[:3], plain[:3], atol=1e-5, rtol=0)
    assert not torch.allclose(controlled[3], plain[3], atol=1e-4)  # the edit row: source's maps
    outside = make_vp2p(parts, cross_replace=0.0, self_replace=0.4)  # sampling step 0 only
    state = outside.control.new(fast=False)
    assert outside.control.plan.self_steps == frozenset({2})
    pipe = outside
    assert torch.equal(run(other, step=1), run(other, installed=False, step=1))


@torch.no_grad()
def test_local_blend_keeps_the_source_outside_the_united_mask(parts, monkeypatch):
    """The tiny model's attention is near uniform (its mask would cover everything): the blend
    layers' maps are tilted towards the left half, where the blend word then lives."""
    pipe = make_vp2p(parts, inference_steps=5, blend_words=("circle",),
                     edit_blend_words=("square",), **NO_CONTROL)  # fmt: skip
    info = pipe.log.info["prompt_control"]
    assert info["blend_tokens"] == [[3], [3]] and info["blend_layers"]
    _, start = _start(pipe)
    made, seen = _state(pipe, monkeypatch), []
    add = LocalBlend.add

    def tilted(self, probs, size):  # (p, f, heads, h w, 77)
        left = (torch.arange(size[1]) < size[1] // 2).float().repeat(size[0]) * 0.99 + 0.01
        seen.append(size)
        add(self, probs * left[:, None], size)

    monkeypatch.setattr(LocalBlend, "add", tilted)
    both = pipe.sample(start, torch.zeros(5, 1, 77, 32))
    blend = made[0].local_blend
    assert blend.start == 1  # int(0.2 * 5): blended after sampling steps 1..4
    assert len(seen) == 5 * len(info["blend_layers"])  # every step, every 16x16 layer
    mask = blend.mask(tuple(both.shape[-2:])).bool()  # (2, f, h, w): the last step's
    w = both.shape[-1]
    assert torch.equal(mask[1] & mask[0], mask[0])  # united with the source's
    assert mask[:, :, :, : w // 2 + 1].all() and not mask[:, :, :, w // 2 + 1 :].any()  # 3x3 pool
    outside = ~mask[1]
    assert torch.equal(both[1][:, outside], both[0][:, outside])
    assert not torch.allclose(both[1][:, ~outside], both[0][:, ~outside])


def test_the_cache_round_trips_the_embeddings_bit_for_bit(parts, tmp_path):
    frames = source_frames(frames=3)
    cache = str(tmp_path / "cache")
    first = make_vp2p(parts, cache_dir=cache, output=str(tmp_path / "a"))(frames)
    again = make_vp2p(parts, cache_dir=cache, output=str(tmp_path / "b"))(frames)
    assert not first.cache_hit and again.cache_hit
    assert first.null_text.shape == (3, 1, 77, 32) and torch.equal(again.null_text, first.null_text)
    assert torch.equal(again.latents, first.latents)
    assert torch.equal(again.reconstruction, first.reconstruction)
    assert again.log["null_text"]["from_cache"] and "null_text" not in again.log["stages"]
    assert first.log["null_text"]["iterations"] == [2, 2, 2]

    def key(**change):
        return cache_key(make_vp2p(parts, **change).cache_material(frames))

    base = key()
    for change in (dict(fast=True), dict(null_text_iterations=3), dict(guidance_scale=5.0),
                   dict(inversion_weight=0.5)):  # the start the embeddings are optimised from
        assert key(**change) != base, change
    for change in (dict(prompt="a red square moving right on a blue background"),
                   dict(reweight={"green": 2}), dict(self_replace=0.9)):  # fmt: skip
        assert key(**change) == base, change
    # fast: no embeddings; gamma only moves the start, redone from the cached z_(K-1)
    assert key(fast=True, inversion_weight=0.5) == key(fast=True)


def test_video_p2p_end_to_end_with_t2s_weights_on_the_tiny_model(tiny_sd_folder, tmp_path):
    video = write_video(tmp_path / "clip.gif", source_frames(frames=3), fps=8)
    from inr_smooth.pipelines.tune import tune

    tuned = tune(t2s_config(video=str(video), prompt=SOURCE, model=str(tiny_sd_folder),
                            output=str(tmp_path / "t2s"), smoothing="none", frames=3, size=16,
                            steps=1, checkpoint_every=0, inference_steps=2,
                            gradient_checkpointing=False), progress=False)  # fmt: skip
    prepared = video_p2p_config(weights=str(tuned.weights), prompt=EDIT, inference_steps=2,
                                null_text_iterations=1, output=str(tmp_path / "out"),
                                blend_words=("circle",), edit_blend_words=("square",))  # fmt: skip
    c = prepared.config
    assert (c.video, c.source_prompt, c.model, c.frames, c.size) == (
        str(video), SOURCE, str(tiny_sd_folder), 3, 16)  # from the run's tune.json
    assert prepared.sources["video"] == "tuned weights (tune.json)"
    result = edit(prepared, progress=False)
    names = [p.name for p in result.files]
    assert names[0].endswith(".mp4") and names[-1].endswith("-reconstruction.mp4")
    assert all(p.is_file() for p in result.files)
    assert read_video(result.files[-1]).shape == (3, 16, 16, 3)
    log = json.loads((result.output / "log.json").read_text())
    assert {"load", "encode", "inversion", "null_text", "sampling", "decode"} <= set(log["stages"])
    assert log["null_text"]["embedding_shape"] == [2, 1, 77, 32]
    assert log["config_sources"]["inversion_weight"] == "Video-P2P default"


def test_video_p2p_end_to_end_on_mini_from_the_cli(tmp_path, capsys):
    scene = Scene(color="red", shape="circle", motion="right")
    video = write_video(tmp_path / "clip.gif", render(scene, frames=2, size=32), fps=8)
    base = ["edit", "--editor", "video-p2p", "--model", "mini", "--video", str(video),
            "--source-prompt", scene.caption, "--prompt", scene.edited(shape="square").caption,
            "--frames", "2", "--size", "32", "--inference-steps", "2",
            "--blend-words", "circle", "--edit-blend-words", "square"]  # fmt: skip
    for extra in (["--null-text-iterations", "1"], ["--fast"]):
        out = tmp_path / f"out{len(extra)}"
        assert main([*base, *extra, "--output", str(out)]) == 0, capsys.readouterr().err
        log = json.loads((out / "log.json").read_text())
        assert log["config"]["inversion_weight"] == 0.5
        assert log["config"]["attention"] == "first_frame"
        assert ("null_text" in log["stages"]) == (extra != ["--fast"])
        written = sorted(p.name for p in out.glob("*.mp4"))
        assert len(written) == 3 and any(n.endswith("-reconstruction.mp4") for n in written)
    assert "wrote" in capsys.readouterr().out


def test_without_temporal_attention_only_the_cross_attention_is_controlled(parts):
    config = vp2p_config(inference_steps=10)  # cross steps int(0.2 * 11) = 2 (3 steps: none)
    from inr_smooth.models import inflate_unet

    unet = inflate_unet(copy.deepcopy(parts.unet), attention="first_frame",
                        temporal_attention=False)  # fmt: skip
    control, info = plan_video_p2p_control(unet, parts.tokenizer, config)
    assert info["temporal_layers"] == 0 and "no temporal attention" in info["note"]
    assert control.plan.cross_layers and not control.plan.self_layers
    assert EMBEDDINGS == "null_text_embeddings"
    assert plan_video_p2p_control(unet, parts.tokenizer, vp2p_config(**NO_CONTROL))[0] is None
    assert encode_prompts(parts, [""]).shape == (1, 77, 32)


def test_the_t2s_preset_is_video_p2ps_tuning_on_the_tune_pipeline(tiny_sd_folder):
    """configs/tune/video-p2p-rabbit.yaml: rabbit-jump-tune.yaml's values, T2S_TUNE's; its
    trainable set on the inflated UNet is the queries of attn1 and attn2 and the temporal
    attention, not the temporal norm."""
    from pathlib import Path

    from inr_smooth.config import load_config
    from inr_smooth.models import inflate_unet, set_trainable
    from inr_smooth.pipelines.tune_config import TuneConfig
    from inr_smooth.pipelines.video_p2p_config import T2S_TUNE

    preset = Path(__file__).parents[1] / "configs" / "tune" / "video-p2p-rabbit.yaml"
    config = load_config(TuneConfig, preset, video="clip.mp4")
    assert {k: getattr(config, k) for k in T2S_TUNE} == {**T2S_TUNE, "trainable": tuple(
        T2S_TUNE["trainable"])}  # fmt: skip
    assert (config.frames, config.size, config.learning_rate, config.steps, config.seed) == (
        8, 512, 3e-5, 500, 33)
    assert t2s_config(video="clip.mp4", prompt="a rabbit").trainable == config.trainable
    unet = inflate_unet(load_parts(str(tiny_sd_folder)).unet, attention="first_frame")
    names = set_trainable(unet, config.trainable)
    assert names and all(".attn1.to_q." in n or ".attn2.to_q." in n or ".temporal.attn." in n
                         for n in names)  # fmt: skip
    assert any(".temporal.attn.to_out." in n for n in names)
    assert not any(".temporal.norm." in n for n in names)


def test_bench_edit_covers_video_p2ps_editor(tmp_path, capsys):
    out = tmp_path / "edit.json"
    code = main(["bench", "edit", "--editor", "video-p2p", "--frames", "2", "--size", "16",
                 "--inference-steps", "2", "--repeats", "1", "--warmup", "0",
                 "--modes", "plain", "inr-final", "--json", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["settings"]["editor"] == "video-p2p"
    cases = {c["mode"]: c for c in report["cases"]}
    assert all(c["null_text_s"] > 0 and c["sampling_s"] > 0 for c in cases.values())
    assert "null-text (s)" in capsys.readouterr().out
    code = main(["bench", "edit", "--fast", "--frames", "2", "--size", "16"])
    assert code == 2 and "video-p2p only" in capsys.readouterr().err


def test_quality_methods_tune_t2s_once_and_edit_with_and_without_inr(tiny_sd_folder):
    from inr_smooth.quality import VIDEO_P2P_METHODS, QualitySettings, random_cases, run_case

    settings = QualitySettings(model=str(tiny_sd_folder), frames=3, size=16, tune_steps=1,
                               inference_steps=2)  # fmt: skip
    ((scene, target),) = random_cases(1, seed=3)
    result = run_case(scene, target, settings, methods=VIDEO_P2P_METHODS)
    assert list(result) == ["source", *VIDEO_P2P_METHODS]
    for method in VIDEO_P2P_METHODS:
        assert result[method]["video"].shape == (3, 16, 16, 3)
        assert set(result[method]["scores"]) >= {"color_accuracy", "warp_error"}
    assert not torch.equal(torch.as_tensor(result["edit:video-p2p"]["video"]),
                           torch.as_tensor(result["edit:video-p2p+inr"]["video"]))  # fmt: skip


def test_the_schedule_is_video_p2ps_own_ddim_scheduler():
    """run_videop2p.py's DDIMScheduler(0.00085, 0.012, scaled_linear, clip_sample=False,
    set_alpha_to_one=False): steps_offset 0, timesteps 980 ... 0; the levels below each."""
    from diffusers import DDIMScheduler

    from inr_smooth.pipelines.video_p2p import video_p2p_schedule
    from inr_smooth.tiny import SD_SCHEDULER_CONFIG

    theirs = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                           clip_sample=False, set_alpha_to_one=False)  # fmt: skip
    theirs.set_timesteps(50)
    ours = video_p2p_schedule(SD_SCHEDULER_CONFIG, 50)
    assert SD_SCHEDULER_CONFIG["steps_offset"] == 1  # SD's own config: 981 ... 1
    assert sorted(ours.timesteps.tolist(), reverse=True) == theirs.timesteps.tolist()
    abar = theirs.alphas_cumprod.double()
    for k, t in enumerate(ours.timesteps.tolist()):
        assert float(ours.alphas_cumprod[k]) == float(abar[t])
        below = t - 20  # prev_step / next_step: the level one step below, abar_0 under 0
        assert float(ours.alphas_cumprod_prev[k]) == float(abar[below] if below >= 0 else abar[0])
