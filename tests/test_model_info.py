"""What a model name points at, its native defaults, and failing fast and early without one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from inr_smooth.mini import MINI_MODEL_DIR
from inr_smooth.model_info import DEFAULTS_FILE, ModelLoadError, describe_model
from inr_smooth.pipelines.edit_config import EditConfig, prepare_edit
from inr_smooth.pipelines.tune_config import TuneConfig, prepare_tune


def test_native_sizes_come_from_the_unet_and_vae_configs(tiny_sd_folder):
    mini = describe_model("mini")
    assert (mini.native_size, mini.size_multiple, mini.local) == (64, 16, True)
    assert mini.source == str(MINI_MODEL_DIR)
    tiny = describe_model(str(tiny_sd_folder))
    assert (tiny.native_size, tiny.size_multiple) == (16, 4)  # sample 8 x VAE 2; 2 x 2


def test_mini_commands_take_mini_sized_defaults_and_say_where_they_came_from():
    tune = prepare_tune(TuneConfig(video="clip.gif", prompt="p", model="mini"), {"seed": "flag"})
    c = tune.config
    assert (c.size, c.frames, c.steps, c.learning_rate) == (64, 8, 60, 1e-4)
    # guidance 2 on the mini: benchmarks/results/motion-diagnosis
    assert (c.inference_steps, c.guidance_scale, c.smooth_weight) == (20, 2.0, 2.0)
    assert tune.sources["size"] == "model (native size 64 px)"
    assert tune.sources["steps"] == f"model ({MINI_MODEL_DIR / DEFAULTS_FILE})"
    assert tune.sources["seed"] == "flag"
    edit = prepare_edit(EditConfig(video="v", source_prompt="a", prompt="b", model="mini",
                                   frames=4), {"frames": "flag"})  # fmt: skip
    assert (edit.config.size, edit.config.frames, edit.config.inference_steps) == (64, 4, 20)
    assert edit.sources["frames"] == "flag"


def test_stable_diffusion_folders_keep_the_original_hosts_defaults(tiny_sd_folder):
    c = prepare_tune(TuneConfig(video="v", prompt="p", model=str(tiny_sd_folder))).config
    assert (c.frames, c.steps, c.learning_rate, c.guidance_scale, c.inference_steps) == (
        24, 500, 3e-5, 12.5, 50
    )  # Tune-A-Video's  # fmt: skip
    assert c.size == 16  # the tiny model's native size (SD 1.x: 512)


def test_a_model_defaults_file_is_checked(tiny_sd_folder, tmp_path):
    folder = shutil.copytree(tiny_sd_folder, tmp_path / "model")
    (folder / DEFAULTS_FILE).write_text(json.dumps({"tune": {"not_a_field": 1}}))
    with pytest.raises(ModelLoadError, match=r"unknown tune setting.*not_a_field"):
        prepare_tune(TuneConfig(video="v", prompt="p", model=str(folder)))
    (folder / DEFAULTS_FILE).write_text(json.dumps({"tune": {"frames": "many"}}))
    with pytest.raises(ValueError, match="frames must be int"):
        prepare_tune(TuneConfig(video="v", prompt="p", model=str(folder)))
    (folder / DEFAULTS_FILE).write_text(json.dumps({"tune": {"frames": 5}}))
    assert prepare_tune(TuneConfig(video="v", prompt="p", model=str(folder))).config.frames == 5


def test_a_size_the_model_cannot_take_says_which_would_do():
    with pytest.raises(ValueError, match=r"multiple of 16 px .* got 72: use 64 or 80"):
        prepare_tune(TuneConfig(video="v", prompt="p", model="mini", size=72))


def test_a_cached_hub_model_loads_from_its_snapshot_without_network(tiny_sd_folder, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--someone--tiny-sd"
    shutil.copytree(tiny_sd_folder, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("inr_smooth.model_info.hub_reachable", lambda *a: pytest.fail("network"))
    info = describe_model("someone/tiny-sd")
    assert info.local and info.source == str(repo / "snapshots" / "abc123")


def _run_cli(args: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "inr_smooth", *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)  # fmt: skip
    return done, time.perf_counter() - start


@pytest.mark.parametrize(
    ("env", "why"),
    [({"HF_ENDPOINT": "http://127.0.0.1:9"}, "cannot be reached"),
     ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE is set")],
)  # fmt: skip
def test_an_uncached_hub_id_without_network_fails_at_once_in_one_line(tmp_path, env, why):
    args = ["edit", "--video", "v.mp4", "--source-prompt", "a", "--prompt", "b", "--model",
            "someone/not-cached", "--output", str(tmp_path / "out")]  # fmt: skip
    done, seconds = _run_cli(args, {"HF_HOME": str(tmp_path / "hf"), **env})
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and why in lines[0] and "--model mini" in lines[0], done.stderr
    assert seconds < 15


def test_an_uncached_clip_without_network_fails_at_once_in_one_line(tmp_path):
    from inr_smooth.synthetic import Scene, render
    from inr_smooth.video_io import write_video

    video = write_video(tmp_path / "v.gif", render(Scene(), frames=3, size=32))
    args = ["eval", str(video), "--prompt", "a red circle", "--flow", "dis"]
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    done, seconds = _run_cli(args, env)
    assert done.returncode == 2 and seconds < 15
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot be reached" in lines[0] and "--no-clip" in lines[0]


def test_argument_errors_come_before_torch_is_imported(tmp_path):
    code = (
        "import sys\nfrom inr_smooth.cli import main\n"
        f"rc = [main(a) for a in {[['tune', '--video', 'missing.mp4', '--prompt', 'x', '--model', 'mini', '--output', str(tmp_path / 'r')], ['tune', '--video', 'v', '--prompt', 'x', '--model', 'mini', '--alpha', 'nan'], ['edit', '--video', 'missing.mp4', '--source-prompt', 'a', '--prompt', 'b', '--model', 'mini', '--output', str(tmp_path / 'e')], ['generate', '--weights', str(tmp_path), '--prompt', 'x']]!r}]\n"  # noqa: E501
        "print(rc, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.stdout.strip() == "[2, 2, 2, 2] False", done.stderr


def test_mini_is_a_complete_diffusers_pipeline_folder():
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(MINI_MODEL_DIR), torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle on a blue background", height=64, width=64, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0), output_type="np").images  # fmt: skip
    assert image.shape == (1, 64, 64, 3)
