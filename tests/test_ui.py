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
    CONTROLVIDEO,
    EDIT_PROMPT,
    FATEZERO,
    HOSTS,
    JOBS,
    SOURCE_PROMPT,
    TUNE_A_VIDEO,
    VIDEO_P2P,
    Field,
    Host,
    hosts_for_job,
    ui_fields,
)
from inr_smooth.ui.jobs import (
    STAGES,
    T2S_STAGE,
    Settings,
    Source,
    error_line,
    form_defaults,
    prepare,
    prepare_t2s,
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
        targets = {f.config_key for f in host.fields if f.key not in host.t2s} | set(host.fixed)
        assert targets <= known, (host.key, targets - known)
        tuned = {f.config_key for f in host.fields if f.key in host.t2s}
        assert tuned <= {f.name for f in dataclasses.fields(TuneConfig)}
    assert {h.job for h in HOSTS} == set(JOBS)
    assert [h.key for h in hosts_for_job("tune")] == ["tune-a-video", "controlvideo"]
    assert [h.key for h in hosts_for_job("edit")] == ["fatezero", "video-p2p"]


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


def test_controlvideo_and_video_p2p_defaults_are_what_the_cli_resolves_for_the_model():
    from inr_smooth.pipelines.video_p2p_config import t2s_config, video_p2p_config

    cli = prepare_tune(TuneConfig(video="v", prompt="p", model="mini", controlnets=("mini-canny",),
                                  controls=("canny",))).config  # fmt: skip
    ui = prepare(CONTROLVIDEO, values_for(CONTROLVIDEO, smooth_weight=None), video="v",
                 model="mini", output="o").config  # fmt: skip
    same = ("controlnets", "controls", "steps", "learning_rate", "attention", "group_norm",
            "trainable", "smooth_weight", "guidance_scale", "inference_steps", "seed")  # fmt: skip
    assert {k: getattr(ui, k) for k in same} == {k: getattr(cli, k) for k in same}
    assert form_defaults(CONTROLVIDEO, "mini")["control"] == "canny"
    cli = video_p2p_config(video="v", source_prompt="s", prompt="p", model="mini").config
    ui = prepare(VIDEO_P2P, values_for(VIDEO_P2P), video="v", model="mini", output="o").config
    same = ("editor", "inversion_weight", "cross_replace", "self_replace", "attention",
            "guidance_scale", "inference_steps", "frames", "size")  # fmt: skip
    assert {k: getattr(ui, k) for k in same} == {k: getattr(cli, k) for k in same}
    # T2S: Video-P2P's settings; mini's recommended steps and learning rate, as bench quality
    t2s = prepare_t2s(VIDEO_P2P, values_for(VIDEO_P2P), ui, output="t").config
    reference = prepare_tune(t2s_config(video="v", prompt=ui.source_prompt, model="mini",
                                        output="t", steps=60, learning_rate=1e-4)).config
    same = ("trainable", "attention", "group_norm", "resize", "seed", "steps", "learning_rate")
    assert {k: getattr(t2s, k) for k in same} == {k: getattr(reference, k) for k in same}
    assert form_defaults(VIDEO_P2P, "mini")["t2s_steps"] == 60
    assert prepare_t2s(VIDEO_P2P, values_for(VIDEO_P2P, t2s_steps=0), ui, output="t") is None
    assert prepare_t2s(FATEZERO, values_for(FATEZERO), ui, output="t") is None


@pytest.mark.parametrize(
    ("model", "values", "expected"),
    [("mini", {"control": "depth"}, ("mini-depth",)),
     ("sd", {"control": "pose"}, ("lllyasviel/sd-controlnet-openpose",)),
     ("mini", {"control": "canny", "controlnet": " my/net "}, ("my/net",))],
)  # fmt: skip
def test_controlvideo_picks_the_controlnet_of_the_maps_for_the_model(model, values, expected):
    config = CONTROLVIDEO.config_values({**values_for(CONTROLVIDEO), **values}, model)
    assert config["controlnets"] == expected and config["controls"] == (values["control"],)


def test_controlvideo_on_mini_names_the_maps_it_has_nets_for():
    with pytest.raises(ValueError, match="mini ships ControlNets for canny and depth maps only"):
        prepare(CONTROLVIDEO, values_for(CONTROLVIDEO, control="hed"), video="v", model="mini",
                output="o")  # fmt: skip


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


def test_a_controlvideo_job_is_the_clis_tune_with_a_controlnet(tmp_path, one_thread):
    sample = SAMPLES[0]
    values = values_for(CONTROLVIDEO, frames=3, steps=2, inference_steps=2)
    result = run_job(CONTROLVIDEO, values, Source(sample=sample.caption),
                     Settings(workdir=tmp_path / "ui"))  # fmt: skip
    assert (result.folder / "tune" / "weights" / "controlvideo.json").is_file()
    assert main(["tune", "--model", "mini", "--controlnet", "mini-canny", "--control", "canny",
                 "--video", str(result.folder / "source"), "--prompt", sample.caption,
                 "--edit-prompt", sample.edit.caption, "--frames", "3", "--steps", "2",
                 "--inference-steps", "2", "--output", str(tmp_path / "cli")]) == 0  # fmt: skip
    np.testing.assert_array_equal(read_video(result.output),
                                  read_video(tmp_path / "cli" / "samples" / result.output.name))


def test_a_video_p2p_job_tunes_t2s_then_edits_as_the_api_does(tmp_path, one_thread):
    """T2S into <run>/t2s, then the Video-P2P edit on its weights: the same video as the API's
    two stages (tune(t2s_config(...)), edit(video_p2p_config(weights=...)))."""
    from inr_smooth.pipelines.edit import edit
    from inr_smooth.pipelines.tune import tune
    from inr_smooth.pipelines.video_p2p_config import t2s_config, video_p2p_config

    sample = SAMPLES[0]
    values = values_for(VIDEO_P2P, frames=3, t2s_steps=2, inference_steps=2,
                        blend_words=sample.scene.shape, edit_blend_words=sample.edit.shape)
    stages = []
    result = run_job(VIDEO_P2P, values, Source(sample=sample.caption),
                     Settings(workdir=tmp_path / "ui"),
                     on_stage=lambda *stage: stages.append(stage[2]))  # fmt: skip
    assert stages == [*STAGES[:2], T2S_STAGE, *STAGES[2:]]
    assert (result.folder / "t2s" / "weights" / "tune.json").is_file()
    source = str(result.folder / "source")
    tune(t2s_config(video=source, prompt=sample.caption, model="mini", smoothing="none", frames=3,
                    steps=2, learning_rate=1e-4, checkpoint_every=0, output=str(tmp_path / "t2s")),
         progress=False)  # fmt: skip
    api = edit(video_p2p_config(
        video=source, source_prompt=sample.caption, prompt=sample.edit.caption, model="mini",
        weights=str(tmp_path / "t2s" / "weights"), frames=3, inference_steps=2,
        blend_words=(sample.scene.shape,), edit_blend_words=(sample.edit.shape,),
        output=str(tmp_path / "api")), progress=False)  # fmt: skip
    gif = next(p for p in api.files if p.suffix == ".gif")
    np.testing.assert_array_equal(read_video(result.output), read_video(gif))
    without = run_job(VIDEO_P2P, {**values, "t2s_steps": 0}, Source(sample=sample.caption),
                      Settings(workdir=tmp_path / "ui"))  # fmt: skip
    assert not (without.folder / "t2s").exists()


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
