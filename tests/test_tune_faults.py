"""Tuning and generation when things go wrong: nothing lost, nothing half-written, one line."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from inr_smooth.cli import main
from inr_smooth.pipelines import tune_steps
from inr_smooth.pipelines.checkpoints import CheckpointError, find_checkpoint
from inr_smooth.pipelines.tune import TuneConfig, tune
from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import write_video

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPT = "a red circle moving right on a blue background"
EDIT = "a green square moving right on a blue background"


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames = render(Scene(color="red", shape="circle", motion="right"), frames=6, size=16)
    return write_video(tmp_path_factory.mktemp("video") / "clip.gif", frames)


def config(tiny_sd_folder, video, output, **overrides) -> TuneConfig:
    values = dict(video=str(video), prompt=PROMPT, edit_prompts=(EDIT,),
                  model=str(tiny_sd_folder), output=str(output), frames=3, size=16, stride=1,
                  steps=2, learning_rate=1e-3, inference_steps=2, checkpoint_every=0, seed=1)
    return TuneConfig(**{**values, **overrides})  # fmt: skip


def argv(tiny_sd_folder, video, output, *extra) -> list[str]:
    return ["tune", "--video", str(video), "--prompt", PROMPT, "--model", str(tiny_sd_folder),
            "--frames", "3", "--size", "16", "--stride", "1", "--steps", "2",
            "--inference-steps", "2", "--output", str(output), *extra]  # fmt: skip


def one_line_error(capsys, command="tune") -> str:
    """The error line (after any progress bars), checked to be one line without a traceback."""
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"inr-smooth {command}: error: ") and "Traceback" not in err, err
    return last


@pytest.fixture(scope="module")
def tuned(tiny_sd_folder, video, tmp_path_factory):
    """One finished run with a checkpoint at every step (several tests read it)."""
    out = tmp_path_factory.mktemp("tuned") / "run"
    tune(config(tiny_sd_folder, video, out, checkpoint_every=1), progress=False)
    return out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--alpha", "nan"], "alpha, beta >= 0"),
        (["--guidance-scale", "nan"], "guidance_scale must be a finite number"),
        (["--guidance-scale", "inf"], "guidance_scale must be a finite number"),
        (["--lr", "inf"], "learning_rate must be a finite number"),
        (["--smooth-weight", "nan"], "smooth_weight must be a finite number"),
        (["--inference-steps", "0"], "inference_steps must be in 1..1000"),
        (["--use-8bit-adam"], "needs bitsandbytes"),
        (["--size", "20"], "multiple of 8"),
    ],
)
def test_bad_values_are_one_line_and_create_nothing(tiny_sd_folder, video, tmp_path, capsys,
                                                    extra, message):  # fmt: skip
    if "--use-8bit-adam" in extra and __import__("importlib").util.find_spec("bitsandbytes"):
        pytest.skip("bitsandbytes is installed here")
    assert main(argv(tiny_sd_folder, video, tmp_path / "run", *extra)) == 2
    assert message in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_an_unwritable_or_wrong_output_is_refused_before_the_model_loads(
    tiny_sd_folder, video, tmp_path, capsys, monkeypatch
):
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not load")

    monkeypatch.setattr("inr_smooth.pipelines.components.load_parts", no_model)
    (tmp_path / "file").write_text("x")
    assert main(argv(tiny_sd_folder, video, tmp_path / "file")) == 2
    assert "is a file, expected a folder" in one_line_error(capsys)
    assert main(argv(tiny_sd_folder, video, tmp_path / "file" / "run")) == 2
    assert "is a file" in one_line_error(capsys)


def test_a_read_only_output_is_refused(tiny_sd_folder, video, readonly_dir, capsys):
    assert main(argv(tiny_sd_folder, video, readonly_dir / "run")) == 2
    assert "not writable" in one_line_error(capsys)


def test_a_full_disk_is_one_line_and_the_rerun_works(tiny_sd_folder, video, tmp_path, capsys,
                                                     monkeypatch):  # fmt: skip
    real = tune_steps.TuneSession.save_weights

    def disk_full(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.weights_dir))

    monkeypatch.setattr(tune_steps.TuneSession, "save_weights", disk_full)
    out = tmp_path / "run"
    assert main(argv(tiny_sd_folder, video, out)) == 2
    assert f"cannot write {out}/weights: No space left" in one_line_error(capsys)
    assert not out.exists()  # no checkpoint, no weights: nothing is left to block the rerun
    monkeypatch.setattr(tune_steps.TuneSession, "save_weights", real)
    assert main(argv(tiny_sd_folder, video, out)) == 0, capsys.readouterr().err


def test_a_late_failure_leaves_nothing_and_the_same_command_runs(
    tiny_sd_folder, video, tmp_path, capsys, monkeypatch
):
    def broken(self):
        raise ValueError("something late went wrong")

    monkeypatch.setattr(tune_steps.TuneSession, "tune", broken)
    out = tmp_path / "run"
    assert main(argv(tiny_sd_folder, video, out)) == 2
    assert "something late went wrong" in one_line_error(capsys)
    assert not out.exists()


def test_ctrl_c_after_tuning_keeps_the_weights_and_resume_generates(
    tiny_sd_folder, video, tmp_path, capsys, monkeypatch
):
    def interrupted(self, start):
        raise KeyboardInterrupt

    monkeypatch.setattr(tune_steps.TuneSession, "generate", interrupted)
    out = tmp_path / "run"
    assert main(argv(tiny_sd_folder, video, out, "--edit-prompt", EDIT)) == 130
    weights = out / "weights"
    assert {p.name for p in weights.iterdir()} >= {"video_unet.safetensors", "tune.json",
                                                   "inverted_latents.safetensors"}
    assert main(argv(tiny_sd_folder, video, out, "--edit-prompt", EDIT)) == 2
    assert "add --resume" in one_line_error(capsys)
    monkeypatch.undo()

    def no_tuning(self):
        raise AssertionError("tuning had finished: --resume must not tune again")

    monkeypatch.setattr(tune_steps.TuneSession, "tune", no_tuning)
    before = load_file(weights / "video_unet.safetensors")
    assert main(argv(tiny_sd_folder, video, out, "--edit-prompt", EDIT, "--resume")) == 0
    after = load_file(weights / "video_unet.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert sorted(p.suffix for p in (out / "samples").iterdir()) == [".gif", ".mp4", ".mp4"]
    log = json.loads((out / "log.json").read_text())
    assert [step for step, *_ in log["loss"]] == [1, 2]  # the history of the first run


@pytest.mark.parametrize(
    ("change", "key"),
    [({"smooth_weight": 1.0}, "smooth_weight"), ({"learning_rate": 1e-2}, "learning_rate"),
     ({"seed": 2}, "seed"), ({"prompt": "another prompt"}, "prompt"),
     ({"smoothing": "none"}, "smoothing"), ({"frames": 4}, "frames")],
)  # fmt: skip
def test_resume_refuses_other_settings_naming_them(tiny_sd_folder, video, tuned, change, key):
    with pytest.raises(ValueError, match=rf"--resume with other settings .*{key}"):
        tune(config(tiny_sd_folder, video, tuned, steps=3, **change), resume=True,
             progress=False)  # fmt: skip


def test_resume_refuses_another_video(tiny_sd_folder, tuned, tmp_path):
    other = render(Scene(color="blue", shape="square", motion="left",
                         background_color="red"), frames=6, size=16)  # fmt: skip
    path = write_video(tmp_path / "other.gif", other)
    with pytest.raises(ValueError, match=r"video \(other frames\) differ"):
        tune(config(tiny_sd_folder, path, tuned, steps=3), resume=True, progress=False)


def test_resume_falls_back_from_a_cut_checkpoint_and_keeps_the_loss_history(
    tiny_sd_folder, video, tmp_path
):
    out = tmp_path / "run"
    straight = tune(config(tiny_sd_folder, video, tmp_path / "straight", steps=3,
                           edit_prompts=()), progress=False)  # fmt: skip
    tune(config(tiny_sd_folder, video, out, steps=2, checkpoint_every=1, edit_prompts=()),
         progress=False)  # fmt: skip
    import shutil

    shutil.rmtree(out / "weights")  # as if interrupted in step 3 of a longer run
    newest = out / "checkpoint-2" / "trainable.safetensors"
    newest.write_bytes(newest.read_bytes()[:-100])  # cut
    with pytest.warns(UserWarning, match=r"checkpoint-2/trainable.safetensors is cut .* "
                                         r"resuming from checkpoint-1"):  # fmt: skip
        resumed = tune(config(tiny_sd_folder, video, out, steps=3, checkpoint_every=1,
                              edit_prompts=()), resume=True, progress=False)  # fmt: skip
    a = load_file(straight.weights / "video_unet.safetensors")
    b = load_file(resumed.weights / "video_unet.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [step for step, *_ in resumed.log["loss"]] == [1, 2, 3]
    assert not list(out.rglob("*.pkl")) and not list(out.rglob("*.bin"))  # no pickles


def test_every_checkpoint_broken_is_one_line(tiny_sd_folder, video, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-1").mkdir(parents=True)
    (out / "checkpoint-1" / "trainer_state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint .* unreadable"):
        find_checkpoint(out)


def test_ctrl_c_during_tuning_says_so_and_saves_at_the_step_boundary(
    tiny_sd_folder, video, tmp_path, capsys, monkeypatch
):
    from inr_smooth.pipelines import training

    real, calls = training.training_step, []

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "training_step", interrupting)
    out = tmp_path / "run"
    assert main(argv(tiny_sd_folder, video, out)) == 130
    err = capsys.readouterr().err
    assert "stopping after this step" in err and "interrupted" in err
    assert find_checkpoint(out).step == 1


def test_prompts_with_one_file_name_get_distinct_files(tiny_sd_folder, video, tmp_path):
    prompts = ("a green square", "A green square!", "红色的圆", "绿色的方块")
    result = tune(config(tiny_sd_folder, video, tmp_path / "run", steps=1, edit_prompts=prompts),
                  progress=False)  # fmt: skip
    gifs = sorted(p.name for p in result.samples if p.suffix == ".gif")
    assert len(gifs) == 4 and len(set(gifs)) == 4
    assert "a-green-square.gif" in gifs
    assert result.log["samples"]["A green square!"].startswith("a-green-square-")


def test_config_yaml_is_resolved_and_the_log_says_where_values_came_from(tuned):
    import yaml

    resolved = yaml.safe_load((tuned / "config.yaml").read_text())
    assert resolved["smooth_weight"] == 2.0 and resolved["size"] == 16
    log = json.loads((tuned / "log.json").read_text())
    assert log["config_sources"]["size"] == "given"
    assert log["config_sources"]["guidance_scale"] == "default"
    assert log["config_sources"]["smooth_weight"] == "default for inr"


# ----------------------------------------------------------------------------- generate


def gen_argv(weights: Path, *extra) -> list[str]:
    return ["generate", "--weights", str(weights), "--prompt", "a blue circle", *extra]


def test_generate_writes_into_the_run_folder_and_never_overwrites_silently(tuned, capsys):
    samples = tuned / "samples"
    assert main(gen_argv(tuned / "weights")) == 0, capsys.readouterr().err
    assert (samples / "a-blue-circle.gif").is_file()
    assert main(gen_argv(tuned / "weights")) == 2
    assert "a-blue-circle.mp4 exists (pass --overwrite" in one_line_error(capsys, "generate")
    assert main(gen_argv(tuned / "weights", "--overwrite")) == 0


def test_generate_with_other_steps_inverts_the_source_again(tuned, tmp_path, monkeypatch):
    from inr_smooth.pipelines import generate as generate_module

    seen = []
    real = generate_module._reinvert

    def spy(config, record, video_unet, parts, steps, progress):
        seen.append(steps)
        return real(config, record, video_unet, parts, steps, progress)

    monkeypatch.setattr(generate_module, "_reinvert", spy)
    out = tmp_path / "g"
    assert main(gen_argv(tuned / "weights", "--output", str(out))) == 0
    assert seen == []  # the saved latent is for the tuned steps
    assert main(gen_argv(tuned / "weights", "--output", str(out), "--inference-steps", "3",
                         "--overwrite")) == 0  # fmt: skip
    assert seen == [3]


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--guidance-scale", "inf"], "guidance_scale must be a finite number"),
     (["--inference-steps", "0"], "inference_steps must be in 1..1000")],
)  # fmt: skip
def test_generate_bad_values_are_one_line(tuned, tmp_path, capsys, extra, message):
    assert main(gen_argv(tuned / "weights", "--output", str(tmp_path / "g"), *extra)) == 2
    assert message in one_line_error(capsys, "generate")


def test_generate_names_a_broken_run_file(tuned, tmp_path, capsys):
    import shutil

    weights = tmp_path / "weights"
    shutil.copytree(tuned / "weights", weights)
    record = json.loads((weights / "tune.json").read_text())
    del record["frames"]
    (weights / "tune.json").write_text(json.dumps(record))
    assert main(gen_argv(weights, "--output", str(tmp_path / "g"))) == 2
    assert "tune.json lacks frames" in one_line_error(capsys, "generate")
    shutil.copy(tuned / "weights" / "tune.json", weights / "tune.json")
    tensors = weights / "video_unet.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-64])
    assert main(gen_argv(weights, "--output", str(tmp_path / "g"))) == 2
    assert f"cannot load the tuned weights in {weights}" in one_line_error(capsys, "generate")
