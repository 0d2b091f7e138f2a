"""inr-smooth-mini: the shipped model loads like Stable Diffusion and draws what it is told.

The training script and the `mini` name are tested in test_mini_train.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from inr_smooth.demo import DEMO_SCENE, DEMO_TARGET
from inr_smooth.mini import MINI_MODEL_DIR, resolve_model
from inr_smooth.mini.evaluate import sample_images, score_image
from inr_smooth.pipelines.components import decode_video, encode_video, load_parts
from inr_smooth.synthetic import COLORS, Scene, random_scene, render
from inr_smooth.video_io import tensor_to_video, video_to_tensor


@pytest.fixture(scope="module")
def mini():
    return load_parts(resolve_model("mini"))


def test_the_shipped_model_is_a_stable_diffusion_folder(mini):
    assert mini.vae_scale_factor == 4 and len(mini.tokenizer) == 49408
    assert mini.unet.config.cross_attention_dim == mini.text_encoder.config.hidden_size
    assert mini.scheduler.config.beta_schedule == "scaled_linear"
    assert mini.scheduler.config.prediction_type == "epsilon"
    files = [p for p in MINI_MODEL_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 40 * 2**20
    assert not [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    record = json.loads((MINI_MODEL_DIR / "training.json").read_text())
    assert record["unet_loss"][-1][1] < 0.5 * record["unet_loss"][0][1]
    assert record["command"].startswith("python -m inr_smooth.mini.train")


@torch.no_grad()
def test_the_autoencoder_reconstructs_rendered_frames(mini):
    clip = render(Scene(color="yellow", shape="triangle", motion="up", background="striped"), 4)
    latents = encode_video(mini.vae, video_to_tensor(clip)[None])
    assert latents.shape == (1, 4, 4, 16, 16)
    assert 0.5 < float(latents.std()) < 2  # scaling_factor puts latents near unit variance
    back = tensor_to_video(decode_video(mini.vae, latents))
    assert np.abs(back.astype(float) - clip).mean() < 6  # of 255


@torch.no_grad()
def test_the_autoencoder_keeps_the_object_colour(mini):
    """The object is a tenth of the frame; a VAE trained without weighting it blurred it into
    the background (red on blue came back orange). Every colour, on two backgrounds."""
    for color in COLORS:
        for background in [b for b in ("blue", "white", "black") if b != color][:2]:
            scene = Scene(color=color, shape="square", background_color=background)
            clip = render(scene, 3)
            latents = encode_video(mini.vae, video_to_tensor(clip)[None])
            back = tensor_to_video(decode_video(mini.vae, latents)).reshape(clip.shape)
            for frame in back:
                assert score_image(frame, scene).color_ok, scene.caption


def test_score_image_gives_rendered_frames_full_marks():
    rng = np.random.default_rng(3)
    for _ in range(8):
        scene = random_scene(rng)
        frame = render(scene, 5)[int(rng.integers(5))]
        score = score_image(frame, scene)
        assert score.background_ok and score.color_ok and score.shape_ok, (scene, score)
        assert score.shape_iou > 0.8 and score.path_error < 0.03, (scene, score)
    wrong = score_image(render(Scene(color="green", shape="square"), 1)[0], Scene())
    assert not wrong.color_ok and wrong.path_error > 1


def test_samples_show_the_asked_for_colour_shape_and_background(mini):
    """The demo's source and edit-target captions, 4 samples each, scored exactly."""
    scenes = [DEMO_SCENE, DEMO_TARGET]
    images = sample_images(mini, [s.caption for s in scenes], samples=4, num_inference_steps=15)
    assert images.shape == (2, 4, 64, 64, 3) and images.dtype == np.uint8
    scores = [
        score_image(img, scene)
        for scene, batch in zip(scenes, images, strict=True)
        for img in batch
    ]
    assert np.mean([s.background_ok for s in scores]) >= 0.75
    assert np.mean([s.color_ok for s in scores]) >= 0.75
    assert np.mean([s.shape_ok for s in scores]) >= 0.5


def test_evaluate_command_writes_scores_and_a_grid(tmp_path, capsys):
    from PIL import Image

    from inr_smooth.mini.evaluate import main

    out, png = tmp_path / "scores.json", tmp_path / "grid.png"
    assert main(["--samples", "1", "--steps", "4", "--json", str(out), "--png", str(png)]) == 0
    result = json.loads(out.read_text())
    assert set(result["summary"]) == {"seen", "held_out"}
    assert result["summary"]["held_out"]["images"] == 4  # two scenes per held-out pair
    assert len(result["captions"]) == 18 and "seen" in json.loads(capsys.readouterr().out)
    assert Image.open(png).size == (64, 18 * 64)


def test_evaluate_command_reports_bad_input_in_one_line(tmp_path, capsys):
    import shutil

    from inr_smooth.mini.evaluate import main

    with pytest.raises(SystemExit) as exc:
        main(["--model", str(tmp_path / "missing")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "model folder not found" in err[-1] and "Traceback" not in "".join(err)

    folder = shutil.copytree(MINI_MODEL_DIR, tmp_path / "copy")
    (folder / "training.json").unlink()
    with pytest.raises(SystemExit) as exc:
        main(["--model", str(folder)])
    assert exc.value.code == 2
    assert "--holdout" in capsys.readouterr().err.strip().splitlines()[-1]
