"""Real weights and real hardware: run with ``--run-slow`` where they exist.

* ``slow``: Stable Diffusion 1.x from ``INR_SMOOTH_SD_PATH`` (a local diffusers folder) or the
  local Hugging Face cache (SD 1.5 or 1.4); CLIP from ``INR_SMOOTH_CLIP_PATH`` or the cache.
  Tune a few steps, generate, edit and evaluate, at a small size so that a CPU copes.
* ``gpu``: the shipped mini model on CUDA, in bf16 / fp16: tuning and editing run and give
  finite videos.

Each test says why it is skipped when what it needs is absent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from inr_smooth.cli import main
from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import read_video, write_video

SD_IDS = ("stable-diffusion-v1-5/stable-diffusion-v1-5", "CompVis/stable-diffusion-v1-4")
CLIP_ID = "openai/clip-vit-large-patch14"


def _cached(repo: str, probe: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, probe)
    return str(Path(found).parents[probe.count("/")]) if isinstance(found, str) else None


@pytest.fixture(scope="module")
def sd_model() -> str:
    path = os.environ.get("INR_SMOOTH_SD_PATH")
    if path:
        return path
    for repo in SD_IDS:
        if _cached(repo, "unet/config.json"):
            return repo  # loads from the cached snapshot, without network
    pytest.skip("no Stable Diffusion weights: set INR_SMOOTH_SD_PATH or fill the HF cache")


@pytest.fixture(scope="module")
def clip_model() -> str:
    path = os.environ.get("INR_SMOOTH_CLIP_PATH") or _cached(CLIP_ID, "config.json")
    if not path:
        pytest.skip(f"no CLIP weights: set INR_SMOOTH_CLIP_PATH or cache {CLIP_ID}")
    return path


@pytest.fixture(scope="module")
def clip_video(tmp_path_factory) -> Path:
    frames = render(Scene(color="red", shape="circle", motion="right"), frames=4, size=256)
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames)


def _run(args: list[str]) -> None:
    assert main(args) == 0


@pytest.mark.slow
def test_stable_diffusion_tune_generate_edit_eval(sd_model, clip_model, clip_video, tmp_path):
    run, edit = tmp_path / "run", tmp_path / "edit"
    small = ["--frames", "4", "--stride", "1", "--size", "256", "--inference-steps", "5"]
    _run(["tune", "--video", str(clip_video), "--prompt", "a red ball rolling",
          "--edit-prompt", "a green ball rolling", "--model", sd_model, "--steps", "3",
          "--output", str(run), *small])  # fmt: skip
    _run(["generate", "--weights", str(run / "weights"), "--prompt", "a blue ball rolling"])
    _run(["edit", "--video", str(clip_video), "--source-prompt", "a red ball rolling",
          "--prompt", "a red ball rolling, van gogh style", "--model", sd_model,
          "--output", str(edit), *small])  # fmt: skip
    (video,) = [p for p in edit.glob("*.mp4") if not p.name.endswith("side-by-side.mp4")]
    assert read_video(video).shape == (4, 256, 256, 3)
    scores = tmp_path / "scores.json"
    _run(["eval", str(video), "--prompt", "van gogh style", "--clip-model", clip_model,
          "--flow", "dis", "--json", str(scores)])  # fmt: skip
    row = json.loads(scores.read_text())["videos"][0]
    assert 0 < row["clip_text"] < 1 and 0 < row["clip_frame"] <= 1


def _cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_tune_and_edit_on_mini(precision, tmp_path):
    _cuda()
    frames = render(Scene(color="red", shape="circle", motion="right"), frames=8, size=64)
    clip = write_video(tmp_path / "clip.gif", frames)
    _run(["tune", "--model", "mini", "--video", str(clip), "--prompt", Scene().caption,
          "--edit-prompt", Scene(color="green").caption, "--device", "cuda",
          "--mixed-precision", precision, "--steps", "10", "--output", str(tmp_path / "t")])
    _run(["edit", "--model", "mini", "--video", str(clip), "--source-prompt", Scene().caption,
          "--prompt", Scene(color="green").caption, "--device", "cuda", "--dtype", precision,
          "--output", str(tmp_path / "e")])  # fmt: skip
    for folder in (tmp_path / "t" / "samples", tmp_path / "e"):
        (gif,) = folder.glob("*.gif")
        video = read_video(gif)
        assert video.shape == (8, 64, 64, 3) and np.ptp(video) > 0
