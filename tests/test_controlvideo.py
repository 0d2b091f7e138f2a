"""ControlVideo end to end on the tiny SD folder with a tiny ControlNet built from config:
tuning, saved weights, generation from them, the CLI, and bad control input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from safetensors.torch import load_file

from inr_smooth.cli import main
from inr_smooth.control import ControlError, canny, control_maps
from inr_smooth.control.world import edge_maps
from inr_smooth.pipelines.controlvideo import CONTROLVIDEO_DEFAULTS, controlvideo_config
from inr_smooth.pipelines.tune import tune
from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import read_video, write_video
from tiny_models import randomize_

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "tune"
PROMPT = "a red circle moving right on a blue background"
EDIT = "a green square moving right on a blue background"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames = render(Scene(color="red", shape="circle", motion="right"), frames=8, size=32)
    return write_video(tmp_path_factory.mktemp("video") / "clip.gif", frames, fps=8)


@pytest.fixture(scope="module")
def tiny_controlnet_folder(tiny_sd_folder, tmp_path_factory):
    """A ControlNet of the tiny SD UNet (16 px maps for its 8 px latents), zero convs woken."""
    unet = UNet2DConditionModel.from_pretrained(tiny_sd_folder, subfolder="unet")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    for module in (*net.controlnet_down_blocks, net.controlnet_mid_block,
                   net.controlnet_cond_embedding.conv_out):  # fmt: skip
        randomize_(module, 3, scale=0.2)
    folder = tmp_path_factory.mktemp("controlnet") / "tiny-canny"
    net.save_pretrained(folder)
    return folder


def small(tiny_sd_folder, video, controlnet, output, **overrides):
    values = dict(
        video=str(video), prompt=PROMPT, edit_prompts=(EDIT,), model=str(tiny_sd_folder),
        output=str(output), controlnets=(str(controlnet),), controls=("canny",), frames=4,
        size=16, stride=1, steps=2, learning_rate=1e-3, inference_steps=2, checkpoint_every=0,
        smoothing="inr",
    )  # fmt: skip
    return controlvideo_config(**{**values, **overrides})


def test_controlvideo_defaults_are_controlvideos(tiny_sd_folder, tiny_controlnet_folder, video):
    from inr_smooth.pipelines.tune_config import TuneConfig, prepare_tune

    prepared = prepare_tune(TuneConfig(video=str(video), prompt="p", model=str(tiny_sd_folder),
                                       controlnets=("x",), controls=("canny",)))  # fmt: skip
    config = prepared.config
    assert config.frames == 8 and config.steps == 300 and config.learning_rate == 3e-5
    assert prepared.sources["steps"] == prepared.sources["attention"] == "ControlVideo default"
    assert prepared.sources["smooth_weight"] == "default for ControlVideo"
    assert config.attention == "keyframe" and config.guidance_scale == 12.0
    assert config.trainable == CONTROLVIDEO_DEFAULTS["trainable"]
    assert config.weight == 0.2  # INR's lambda on ControlVideo
    assert config.stride == 1  # 8 frames of an 8-frame clip: spread over it
    assert controlvideo_config(video=str(video), prompt="p", controlnets=("x",),
                               controls=("canny",), smooth_weight=1.0).weight == 1.0


def test_tune_saves_the_controlnets_and_generate_restores_them(
    tiny_sd_folder, video, tiny_controlnet_folder, tmp_path
):
    result = tune(small(tiny_sd_folder, video, tiny_controlnet_folder, tmp_path / "run"),
                  progress=False)  # fmt: skip
    weights = result.weights
    names = {p.name for p in weights.iterdir()}
    assert {"controlvideo.json", "controlnet-0.safetensors", "control-0.safetensors"} <= names
    record = json.loads((weights / "controlvideo.json").read_text())
    assert record["controlnets"][0]["control"] == "canny"
    assert record["inversion_prompt"] == PROMPT
    # the ControlNet's attn1.to_out was tuned (and only it)
    tuned = load_file(weights / "controlnet-0.safetensors")
    assert tuned and all(".attn1.to_out." in k for k in tuned)
    base = ControlNetModel.from_pretrained(tiny_controlnet_folder).state_dict()
    assert any(not torch.equal(v, base[k]) for k, v in tuned.items())
    # the saved maps are the Canny maps of the tuned frames
    frames = read_video(video, num_frames=4, size=16)
    maps = load_file(weights / "control-0.safetensors")["maps"].numpy()
    assert np.array_equal(maps, canny(frames))
    # generate from the weights reproduces the run's own sample: the ControlNet came back
    out = tmp_path / "gen"
    assert main(["generate", "--weights", str(weights), "--prompt", EDIT, "--output", str(out),
                 "--device", "cpu"]) == 0  # fmt: skip
    name = "a-green-square-moving-right-on-a-blue-background.gif"
    ours = read_video(out / name)
    assert np.array_equal(ours, read_video(result.output / "samples" / name))
    (weights / "controlvideo.json").unlink()  # without its ControlNet: another video
    main(["generate", "--weights", str(weights), "--prompt", EDIT, "--output",
          str(tmp_path / "gen2"), "--device", "cpu"])  # fmt: skip
    assert not np.array_equal(ours, read_video(tmp_path / "gen2" / name))


def test_cli_tune_with_a_controlnet(tiny_sd_folder, video, tiny_controlnet_folder, tmp_path,
                                    capsys):  # fmt: skip
    out = tmp_path / "run"
    code = main(["tune", "--video", str(video), "--prompt", PROMPT, "--model",
                 str(tiny_sd_folder), "--controlnet", str(tiny_controlnet_folder), "--control",
                 "canny", "--control-scale", "0.5", "--frames", "3", "--size", "16", "--steps",
                 "1", "--inference-steps", "1", "--edit-prompt", EDIT, "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    config = (out / "config.yaml").read_text()
    assert "attention: keyframe" in config and "guidance_scale: 12.0" in config
    assert "- attn1.to_out" in config and "frames: 3" in config and "steps: 1" in config
    assert json.loads((out / "weights" / "controlvideo.json").read_text())["controlnets"][0][
        "scale"] == 0.5  # fmt: skip


def _maps_folder(folder, maps):
    from PIL import Image

    folder.mkdir()
    for i, m in enumerate(maps):
        Image.fromarray(m).save(folder / f"{i:03d}.png")
    return folder


def _dilate(mask):
    """3x3 binary dilation of ``bool (h, w)``."""
    pad = np.pad(mask, 1)
    h, w = mask.shape
    return np.any([pad[i : i + h, j : j + w] for i in range(3) for j in range(3)], axis=0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda t: _maps_folder(t / "few", np.zeros((3, 32, 32, 3), np.uint8)),
         "expected 4 maps (one per tuned frame) or 8"),
        (lambda t: _maps_folder(t / "small", np.zeros((8, 24, 24, 3), np.uint8)),
         "expected maps of 16x16 (the tuned frames') or 32x32"),
        (lambda t: (t / "bad.mp4").write_bytes(b"not a video" * 100) and t / "bad.mp4",
         "bad.mp4"),
        (lambda t: t / "missing", "control maps not found"),
        (lambda t: "hed", "pass precomputed maps"),
    ],
)  # fmt: skip
def test_bad_control_input_is_one_line_and_leaves_nothing(
    tiny_sd_folder, video, tiny_controlnet_folder, tmp_path, capsys, make, message
):
    control = make(tmp_path)
    out = tmp_path / "run"
    code = main(["tune", "--video", str(video), "--prompt", PROMPT, "--model",
                 str(tiny_sd_folder), "--controlnet", str(tiny_controlnet_folder), "--control",
                 str(control), "--frames", "4", "--size", "16", "--steps", "1", "--output",
                 str(out)])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("inr-smooth tune: error: ") and "\n" not in err
    assert message in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--control", "canny"], "--control needs --controlnet"),
        (["--controlnet", "CN", "--control", "canny", "--control", "canny"], "one --control per"),
        (["--controlnet", "CN", "--control", "canny", "--control-guidance-end", "0"],
         "start < end"),
        (["--controlnet", "CN-MINI", "--control", "canny"], "does not fit this model"),
    ],
)  # fmt: skip
def test_bad_controlnet_flags_are_one_line(tiny_sd_folder, video, tiny_controlnet_folder,
                                           tmp_path, capsys, args, message):  # fmt: skip
    args = [str(tiny_controlnet_folder) if a == "CN" else a for a in args]
    args = ["mini-canny" if a == "CN-MINI" else a for a in args]
    code = main(["tune", "--video", str(video), "--prompt", PROMPT, "--model",
                 str(tiny_sd_folder), "--frames", "4", "--size", "16", "--output",
                 str(tmp_path / "run"), *args])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after transformers' load bars
    assert code == 2 and err.startswith("inr-smooth tune: error: ") and message in err, err


def test_precomputed_maps_per_source_frame_are_picked_like_the_frames(tmp_path, video):
    source = read_video(video)
    scene = Scene(color="red", shape="circle", motion="right")
    folder = _maps_folder(tmp_path / "maps", edge_maps(scene, 8, 32))
    frames = read_video(video, num_frames=3, start=1, stride=2, size=16)
    maps = control_maps(str(folder), frames, source=video, start=1, stride=2)
    expected = read_video(folder, num_frames=3, start=1, stride=2, size=16)
    assert maps.shape == frames.shape and np.array_equal(maps, expected)
    assert source.shape[0] == 8
    with pytest.raises(ControlError, match="found 8"):
        control_maps(str(folder), frames, source=None)


def test_builtin_canny_is_opencvs_with_controlvideos_thresholds_and_matches_world_edges():
    import cv2

    scene = Scene(color="yellow", shape="square", background="striped",
                  background_color="green")  # fmt: skip
    frames = render(scene, 4, 64)
    ours = canny(frames)
    for f, m in zip(frames, ours, strict=True):
        assert np.array_equal(m[..., 0], cv2.Canny(f, 100, 100))
        assert np.array_equal(m[..., 0], m[..., 2])
    exact = edge_maps(scene, 4, 64)[..., 0] > 0
    near = np.stack([_dilate(e) for e in exact])
    assert ((ours[..., 0] > 0) & ~near).sum() == 0  # every Canny edge within 1 px of the truth


def test_the_controlvideo_preset_is_the_papers_example():
    import yaml

    preset = CONFIGS / "controlvideo-dancing-jeans.yaml"
    data = yaml.safe_load(preset.read_text())
    config = controlvideo_config(set(data), video="dance.mp4", **data)
    assert config.edit_prompts == ("a person wearing blue jeans is dancing",)
    assert config.controls == ("pose",) and config.weight == 0.2
    assert config.frames == 8 and config.steps == 300 and config.guidance_scale == 12.0
