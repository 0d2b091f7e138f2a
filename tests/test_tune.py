"""One-shot tuning and generation end to end on a tiny SD folder: API, CLI, resume, presets."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from inr_smooth.cli import main
from inr_smooth.config import load_config
from inr_smooth.models import inflate_unet, set_trainable
from inr_smooth.pipelines.training import training_step
from inr_smooth.pipelines.tune import TuneConfig, tune
from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import write_video
from tiny_models import tiny_unet2d

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tune"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames = render(Scene(color="red", shape="circle", motion="right"), frames=8, size=32)
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=8)


def small_config(tiny_sd_folder, video, output, **overrides) -> TuneConfig:
    values = dict(
        video=str(video), prompt="a red circle moving right on a blue background",
        edit_prompts=("a green square moving right on a blue background",),
        model=str(tiny_sd_folder), output=str(output), frames=4, size=16, stride=1, steps=3,
        learning_rate=1e-3, inference_steps=2, checkpoint_every=0, seed=1,
    )  # fmt: skip
    return TuneConfig(**{**values, **overrides})


def test_tune_writes_the_run_folder_and_generate_reads_it(tiny_sd_folder, video, tmp_path):
    result = tune(small_config(tiny_sd_folder, video, tmp_path / "run"), progress=False)
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} == {"config.yaml", "log.json", "weights", "samples"}
    log = json.loads((run / "log.json").read_text())
    assert [entry[0] for entry in log["loss"]] == [1, 2, 3]
    assert all(np.isfinite(entry[1:]).all() for entry in log["loss"])
    assert {"load", "tuning", "inversion", "generation"} <= set(log["stages"])
    assert log["config"]["smoothing"] == "inr"
    weights = {p.name for p in result.weights.iterdir()}
    assert weights == {
        "video_unet.safetensors", "video_unet.json", "tune.json", "inverted_latents.safetensors"
    }  # fmt: skip
    name = "a-green-square-moving-right-on-a-blue-background"
    samples = sorted(p.name for p in (run / "samples").iterdir())
    assert samples == sorted([f"{name}.mp4", f"{name}.gif", f"{name}-side-by-side.mp4"])
    latents = load_file(result.weights / "inverted_latents.safetensors")["latents"]
    assert latents.shape == (1, 4, 4, 8, 8)  # tiny VAE: 1/2 of 16 px

    out = tmp_path / "gen"
    code = main(["generate", "--weights", str(result.weights), "--prompt", "a blue circle",
                 "--output", str(out), "--source", str(video)])  # fmt: skip
    assert code == 0
    assert {p.name for p in out.iterdir()} == {
        "a-blue-circle.mp4", "a-blue-circle.gif", "a-blue-circle-side-by-side.mp4"
    }  # fmt: skip


def test_resumed_tuning_equals_an_uninterrupted_run(tiny_sd_folder, video, tmp_path):
    config = small_config(tiny_sd_folder, video, tmp_path / "a", steps=4, edit_prompts=())
    straight = tune(config, progress=False)
    first = small_config(tiny_sd_folder, video, tmp_path / "b", steps=2, checkpoint_every=2)
    tune(first, progress=False)
    assert (tmp_path / "b" / "checkpoint-2").is_dir()
    resumed = tune(
        small_config(tiny_sd_folder, video, tmp_path / "b", steps=4, edit_prompts=()),
        resume=True,
        progress=False,
    )
    a = load_file(straight.weights / "video_unet.safetensors")
    b = load_file(resumed.weights / "video_unet.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_a_few_steps_on_a_fixed_batch_lower_the_loss_and_touch_only_trainable_weights():
    video_unet = inflate_unet(tiny_unet2d(), attention="sparse_causal")
    set_trainable(video_unet)
    before = copy.deepcopy(video_unet.state_dict())
    g = torch.Generator().manual_seed(0)
    latents, noise = (
        torch.randn(1, 4, 4, 8, 8, generator=g),
        torch.randn(1, 4, 4, 8, 8, generator=g),
    )
    embeds, timesteps = torch.randn(1, 5, 32, generator=g), torch.tensor([500])
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    params = [p for p in video_unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for _ in range(8):
        out = training_step(video_unet, latents, embeds, scheduler, smoothing="inr",
                            noise=noise, timesteps=timesteps)  # fmt: skip
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.8 * losses[0]
    assert all(b < a for a, b in itertools.pairwise(losses))
    trainable = {n for n, p in video_unet.named_parameters() if p.requires_grad}
    for name, value in video_unet.state_dict().items():
        assert torch.equal(value, before[name]) != (name in trainable), name


def test_cli_tune_end_to_end_with_a_preset(tiny_sd_folder, video, tmp_path, capsys):
    preset = tmp_path / "p.yaml"
    preset.write_text("prompt: a red circle\nedit_prompts: [a red square]\nsmoothing: none\n")
    out = tmp_path / "run"
    code = main(["tune", "--config", str(preset), "--video", str(video), "--model",
                 str(tiny_sd_folder), "--frames", "3", "--size", "16", "--steps", "1",
                 "--inference-steps", "1", "--output", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    config = (out / "config.yaml").read_text()
    assert "smoothing: none" in config and "frames: 3" in config
    assert (out / "samples" / "a-red-square-side-by-side.mp4").is_file()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a, t: a.update(video=str(t / "missing.mp4")), "missing.mp4"),
        (lambda a, t: a.update(model=str(t)), "not a diffusers Stable Diffusion folder"),
        (lambda a, t: a.update(size="20"), "multiple of 8"),
        (lambda a, t: a.update(frames="50"), "frames"),
        (lambda a, t: a.update(smoothing="inr", smooth_weight="-1"), "smooth_weight"),
    ],
)
def test_cli_tune_bad_input_is_one_line_and_leaves_nothing(
    tiny_sd_folder, video, tmp_path, capsys, change, message
):
    args = {"video": str(video), "prompt": "a red circle", "model": str(tiny_sd_folder),
            "size": "16", "frames": "4", "steps": "1"}  # fmt: skip
    change(args, tmp_path)
    out = tmp_path / "run"
    argv = ["tune", "--output", str(out)]
    for key, value in args.items():
        argv += [f"--{key.replace('_', '-')}", value]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("inr-smooth tune: error: ") and "\n" not in err
    assert message in err
    assert not out.exists()


def test_cli_tune_refuses_a_used_output_folder(tiny_sd_folder, video, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "something").write_text("x")
    code = main(["tune", "--video", str(video), "--prompt", "p", "--model", str(tiny_sd_folder),
                 "--output", str(tmp_path / "run")])  # fmt: skip
    assert code == 2
    assert "exists and is not empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    "preset", sorted(set(CONFIGS.glob("*.yaml")) - set(CONFIGS.glob("controlvideo-*.yaml"))
                     - set(CONFIGS.glob("video-p2p-*.yaml"))),
    ids=lambda p: p.stem,
)  # ControlVideo's presets: tests/test_controlvideo.py; Video-P2P's: tests/test_video_p2p.py
def test_presets_are_valid_tune_configs(preset):
    config = load_config(TuneConfig, preset, video="clip.mp4")
    assert config.prompt and config.edit_prompts
    assert config.smoothing == "inr" and config.weight == 2.0
