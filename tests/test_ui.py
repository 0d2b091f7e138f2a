"""The web UI's logic without a browser: samples, hosts, configs, jobs, scores, errors, command."""

import dataclasses
import errno
import itertools
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from inr_smooth.cli import main
from inr_smooth.pipelines.edit_config import EditConfig, prepare_edit
from inr_smooth.pipelines.tune_config import TuneConfig, prepare_tune
from inr_smooth.synthetic import BACKGROUNDS, COLORS, MOTIONS, SHAPES, Scene, render
from inr_smooth.ui.hosts import (
    EDIT_PROMPT,
    FATEZERO,
    HOSTS,
    JOBS,
    SOURCE_PROMPT,
    TUNE_A_VIDEO,
    Field,
    Host,
    hosts_for_job,
    ui_fields,
)
from inr_smooth.ui.jobs import (
    STAGES,
    Settings,
    Source,
    error_line,
    form_defaults,
    prepare,
    preview,
    run_job,
    zip_folder,
)
from inr_smooth.ui.samples import SAMPLES, render_sample, scene_from_caption
from inr_smooth.ui.scoring import score_table
from inr_smooth.video_io import VideoError, read_video, write_video

CONFIGS = {"tune": TuneConfig, "edit": EditConfig}


def values_for(host, sample=SAMPLES[0], **changes):
    return {**form_defaults(host, "mini"), SOURCE_PROMPT: sample.caption,
            EDIT_PROMPT: sample.edit.caption, **changes}  # fmt: skip


# ---------------------------------------------------------------- samples
def test_every_caption_of_the_world_reads_back_as_its_scene():
    for color, shape, motion, bg, texture in itertools.product(
        COLORS, SHAPES, MOTIONS, COLORS, BACKGROUNDS
    ):
        if color == bg:
            continue
        scene = Scene(color=color, shape=shape, motion=motion, background_color=bg,
                      background=texture)  # fmt: skip
        assert scene_from_caption(scene.caption) == scene
    like = Scene(radius=0.25, travel=0.3)
    read = scene_from_caption("A green square moving right on a blue background.", like=like)
    assert read == like.edited(color="green", shape="square")


@pytest.mark.parametrize("text", ["a jeep car is moving on the road", "a red circle moving right",
                                  "a red circle moving right on a red background"])  # fmt: skip
def test_other_prompts_name_no_scene(text):
    assert scene_from_caption(text) is None


@pytest.mark.parametrize(("frames", "stride"), [(2, 1), (8, 1), (8, 2), (5, 3)])
def test_a_rendered_sample_reads_as_the_scenes_own_frames(tmp_path, frames, stride):
    """The job reads exactly the frames the ground truth of ``frames`` frames describes."""
    scene = SAMPLES[2].scene
    path = render_sample(scene, tmp_path / "s", frames=frames, stride=stride, size=32)
    assert len(read_video(path)) == (frames - 1) * stride + 1
    np.testing.assert_array_equal(read_video(path, num_frames=frames, stride=stride),
                                  render(scene, frames, 32))  # fmt: skip


def test_samples_are_distinct_and_their_edits_are_captions():
    assert len({s.caption for s in SAMPLES}) == len(SAMPLES)
    for sample in SAMPLES:
        assert scene_from_caption(sample.edit.caption) == sample.edit != sample.scene


# ---------------------------------------------------------------- hosts and configs
def test_each_host_sets_fields_of_its_jobs_config():
    for host in HOSTS:
        known = {f.name for f in dataclasses.fields(CONFIGS[host.job])}
        targets = {f.config_key for f in host.fields} | set(host.fixed)
        assert targets <= known, (host.key, targets - known)
    assert {h.job for h in HOSTS} == set(JOBS)
    assert [h.key for h in hosts_for_job("edit")] == ["fatezero"]


def test_fields_sharing_a_key_must_look_the_same():
    fields = ui_fields()
    assert len({f.key for f in fields}) == len(fields)
    other = Host("x", "X", "edit", "", (Field("frames", "frames!", "int", "frames"),))
    with pytest.raises(ValueError, match="field 'frames' of host 'x' differs"):
        ui_fields((*HOSTS, other))


def test_form_defaults_are_what_the_cli_resolves_for_the_model():
    edit = form_defaults(FATEZERO, "mini")
    cli = prepare_edit(EditConfig(video="v", source_prompt="s", prompt="p", model="mini")).config
    assert edit == {"inversion_weight": 1.0, "frames": cli.frames, "stride": 1, "size": 64,
                    "inference_steps": cli.inference_steps, "guidance_scale": cli.guidance_scale,
                    "seed": 0}  # fmt: skip
    tune = form_defaults(TUNE_A_VIDEO, "mini")
    cli = prepare_tune(TuneConfig(video="v", prompt="p", model="mini")).config
    assert (tune["frames"], tune["size"], tune["steps"]) == (8, 64, 60) == (
        cli.frames, cli.size, cli.steps)  # fmt: skip
    assert tune["smooth_weight"] is None and tune["smoothing"] == "inr"


def test_form_values_become_the_config_the_cli_would_build():
    values = values_for(TUNE_A_VIDEO, frames=4.0, smooth_weight=None, seed=7)
    config = prepare(TUNE_A_VIDEO, values, video="v.gif", model="mini", output="out").config
    assert config.prompt == SAMPLES[0].caption
    assert config.edit_prompts == (SAMPLES[0].edit.caption,)
    assert (config.frames, config.seed, config.smooth_weight) == (4, 7, 2.0)
    assert config.checkpoint_every == 0
    edit = prepare(FATEZERO, values_for(FATEZERO, inversion_weight=0), video="v.gif",
                   model="mini", output="out").config  # fmt: skip
    assert (edit.prompt, edit.inversion_weight) == (SAMPLES[0].edit.caption, 0.0)


@pytest.mark.parametrize(
    ("host", "changes", "message"),
    [(FATEZERO, {"frames": 1}, "frames must be at least 2"),
     (FATEZERO, {"inversion_weight": 1.5}, r"inversion_weight \(gamma\) must be in \[0, 1\]"),
     (FATEZERO, {EDIT_PROMPT: "  "}, "--prompt required"),
     (TUNE_A_VIDEO, {"size": 60}, "size must be a positive multiple of 8"),
     (TUNE_A_VIDEO, {"frames": 2.5}, "frames must be int")],
)  # fmt: skip
def test_bad_form_values_fail_with_the_clis_message(host, changes, message):
    with pytest.raises(ValueError, match=message):
        prepare(host, values_for(host, **changes), video="v.gif", model="mini", output="o")


# ---------------------------------------------------------------- errors
def test_errors_are_the_clis_one_line():
    assert error_line(ValueError("bad\n value"), "edit") == "inr-smooth edit: error: bad value"
    line = error_line(VideoError("expected a video file, got /tmp/gradio/ab12/notes.txt"),
                      "tune", {"/tmp/gradio/ab12/notes.txt": "notes.txt"})  # fmt: skip
    assert line == "inr-smooth tune: error: expected a video file, got notes.txt"
    disk = OSError(errno.ENOSPC, "No space left on device", "/x/y")
    assert error_line(disk, "edit").startswith("inr-smooth edit: error: cannot write /x/y")
    bug = error_line(KeyError("k"), "edit")
    assert bug.startswith("inr-smooth edit: internal error: KeyError: 'k'") and "\n" not in bug


# ---------------------------------------------------------------- sources and previews
def test_preview_shows_the_frames_the_job_reads(tmp_path):
    settings = Settings(workdir=tmp_path)
    shown = preview(TUNE_A_VIDEO, values_for(TUNE_A_VIDEO, frames=3), Source(sample=SAMPLES[1]
                    .caption), settings)  # fmt: skip
    enlarged = render(SAMPLES[1].scene, 3, 64).repeat(3, axis=1).repeat(3, axis=2)
    np.testing.assert_array_equal(read_video(shown.path), enlarged)
    assert shown.line == f"3 frames of 64×64 px from {SAMPLES[1].caption}"
    clip = write_video(tmp_path / "clip.gif", render(Scene(), 10, 96))
    shown = preview(FATEZERO, values_for(FATEZERO), Source(upload=str(clip)), settings)
    assert read_video(shown.path).shape == (8, 192, 192, 3)
    assert shown.line == "8 frames of 64×64 px from clip.gif"


def test_a_bad_upload_fails_before_anything_loads(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    with pytest.raises(VideoError, match=r"expected a video file \(.*\), got notes.txt"):
        preview(FATEZERO, values_for(FATEZERO), Source(upload=str(text)),
                Settings(workdir=tmp_path))  # fmt: skip
    with pytest.raises(ValueError, match="expected a sample or an uploaded clip"):
        Source()


def test_a_failed_job_leaves_no_run_folder(tmp_path):
    clip = write_video(tmp_path / "short.gif", render(Scene(), 4, 64))
    with pytest.raises(VideoError, match="too few frames"):
        run_job(FATEZERO, values_for(FATEZERO), Source(upload=str(clip)),
                Settings(workdir=tmp_path / "ui"))  # fmt: skip
    assert list((tmp_path / "ui" / "runs").iterdir()) == []


# ---------------------------------------------------------------- jobs through the library
def test_an_edit_job_is_the_clis_edit(tmp_path, one_thread):
    """The UI calls the library as the CLI does: the same values give the same video."""
    sample = SAMPLES[0]
    values = values_for(FATEZERO, inference_steps=2)
    stages = []
    result = run_job(FATEZERO, values, Source(sample=sample.caption),
                     Settings(workdir=tmp_path / "ui"),
                     on_stage=lambda *stage: stages.append(stage))  # fmt: skip
    assert stages == [(i, len(STAGES), name) for i, name in enumerate(STAGES)]
    assert main(["edit", "--model", "mini", "--video", str(result.folder / "source"),
                 "--source-prompt", sample.caption, "--prompt", sample.edit.caption,
                 "--inference-steps", "2", "--output", str(tmp_path / "cli")]) == 0  # fmt: skip
    np.testing.assert_array_equal(read_video(result.output),
                                  read_video(tmp_path / "cli" / result.output.name))  # fmt: skip
    assert result.video.name.endswith("-side-by-side.mp4") and result.video.is_file()
    # exact ground truth: the source against its scene, the output against the edited one
    assert result.table.columns == ["metric", "source", "output"]
    assert result.table.rows[0][:2] == ["colour acc. ↑", 1.0]
    assert result.table.scores["source"]["shape_iou"] == 1.0
    assert "exact ground truth" in result.table.notes[0]
    stored = json.loads((result.folder / "metrics.json").read_text())
    assert stored["host"] == "fatezero" and stored["started"] <= stored["finished"]
    assert stored["scores"] == json.loads(json.dumps(result.table.scores))
    with zipfile.ZipFile(result.archive) as zf:
        names = set(zf.namelist())
    top = result.folder.name
    assert {f"{top}/metrics.json", f"{top}/source/00000.png", f"{top}/edit/log.json",
            f"{top}/edit/{result.output.name}"} <= names  # fmt: skip


def test_a_tune_job_writes_weights_and_scores_an_upload_by_flow(tmp_path, one_thread):
    clip = write_video(tmp_path / "clip.gif", render(Scene(color="yellow"), 3, 64))
    values = values_for(TUNE_A_VIDEO, frames=3, stride=1, steps=2, inference_steps=2)
    result = run_job(TUNE_A_VIDEO, values, Source(upload=str(clip)),
                     Settings(workdir=tmp_path / "ui"))  # fmt: skip
    assert (result.folder / "tune" / "weights" / "tune.json").is_file()
    assert not list((result.folder / "tune").glob("checkpoint-*"))
    assert read_video(result.output).shape == (3, 64, 64, 3)
    assert [row[0] for row in result.table.rows] == ["warp err. (DIS) ↓", "flow (px)"]
    assert "no ground truth" in result.table.notes[0]


# ---------------------------------------------------------------- scores
def test_scores_with_a_clip_model(tmp_path):
    from inr_smooth.metrics import ClipFeatures
    from tiny_clip import save_tiny_clip

    clip = ClipFeatures(save_tiny_clip(tmp_path / "clip"), device="cpu")
    video = render(Scene(), 4, 32)
    table = score_table(video, video[::-1].copy(), source_prompt="a", edit_prompt="b", clip=clip)
    metrics = [row[0] for row in table.rows]
    assert metrics == ["warp err. (DIS) ↓", "flow (px)", "CLIP text ↑", "CLIP frame ↑"]
    for name in ("source", "output"):
        assert -1 <= table.scores[name]["clip_text"] <= 1
    assert table.formatted()[2][0] == "CLIP text ↑" and "CLIP:" in table.notes[1]


def test_zip_holds_the_folder(tmp_path):
    (tmp_path / "run" / "a").mkdir(parents=True)
    (tmp_path / "run" / "a" / "x.txt").write_text("x")
    archive = zip_folder(tmp_path / "run")
    with zipfile.ZipFile(archive) as zf:
        assert zf.namelist() == ["run/a/x.txt"] and zf.read("run/a/x.txt") == b"x"


# ---------------------------------------------------------------- the command
def test_ui_command_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert main(["ui", "--port", "0"]) == 2
    assert capsys.readouterr().err == "inr-smooth ui: error: --port must be in 1..65535, got 0\n"
    assert main(["ui", "--model", str(tmp_path / "none")]) == 2
    assert "model folder not found" in capsys.readouterr().err
    real = __import__("importlib.util").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec",
                        lambda name, *a: None if name == "gradio" else real(name, *a))  # fmt: skip
    assert main(["ui"]) == 2
    assert capsys.readouterr().err == (
        'inr-smooth ui: error: the web UI needs Gradio, the ui extra: pip install -e ".[ui]"\n'
    )


def test_ui_command_checks_before_heavy_imports(tmp_path):
    code = ("import sys; from inr_smooth.cli import main; "
            f"code = main(['ui', '--model', {str(tmp_path / 'none')!r}]); "
            "assert code == 2, code; "
            "heavy = [m for m in ('torch', 'gradio', 'diffusers') if m in sys.modules]; "
            "assert not heavy, heavy")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
