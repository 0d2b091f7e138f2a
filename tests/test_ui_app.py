"""The Gradio layout of the web UI without a browser: its events and handlers (needs the ui
extra; the browser test is test_ui_browser.py)."""

import pytest

pytest.importorskip("gradio", reason="the ui extra (Gradio) is not installed")

from inr_smooth.ui.app import UPLOAD, _Handlers, build_app
from inr_smooth.ui.hosts import CONTROLVIDEO, FATEZERO, HOSTS, TUNE_A_VIDEO, VIDEO_P2P, ui_fields
from inr_smooth.ui.jobs import Settings, form_defaults


@pytest.fixture
def handlers(tmp_path):
    return _Handlers(Settings(workdir=tmp_path), ui_fields(HOSTS))


def test_jobs_run_one_at_a_time_on_the_model(tmp_path):
    app = build_app(Settings(workdir=tmp_path))
    runs = [f for f in app.fns.values() if f.name == "run"]
    assert [(f.concurrency_limit, f.concurrency_id) for f in runs] == [(1, "model")]


def test_choosing_a_host_shows_its_fields_with_the_models_defaults(handlers):
    summary, *updates = handlers.host_changed(TUNE_A_VIDEO.key)
    assert summary.startswith("**Tune-A-Video**")
    shown = {f.key: u for f, u in zip(handlers.fields, updates, strict=True)}
    assert shown["steps"]["visible"] and shown["steps"]["value"] == 60
    assert not shown["inversion_weight"]["visible"]
    assert shown["stride"]["value"] == 1  # mini recommends stride 1
    _, *updates = handlers.host_changed(FATEZERO.key)
    shown = {f.key: u for f, u in zip(handlers.fields, updates, strict=True)}
    assert not shown["steps"]["visible"] and shown["stride"]["value"] == 1
    assert not shown["cross_replace"]["visible"] and not shown["t2s_steps"]["visible"]


def test_each_job_offers_its_hosts_and_they_show_their_own_controls(handlers):
    assert handlers.job_changed("tune")["choices"] == [("Tune-A-Video", "tune-a-video"),
                                                       ("ControlVideo", "controlvideo")]
    assert handlers.job_changed("edit")["choices"] == [("FateZero", "fatezero"),
                                                       ("Video-P2P", "video-p2p")]
    _, *updates = handlers.host_changed(CONTROLVIDEO.key)
    shown = {f.key: u for f, u in zip(handlers.fields, updates, strict=True)}
    assert shown["control"]["visible"] and shown["control"]["value"] == "canny"
    assert shown["controlnet"]["visible"] and shown["steps"]["value"] == 60
    _, *updates = handlers.host_changed(VIDEO_P2P.key)
    shown = {f.key: u for f, u in zip(handlers.fields, updates, strict=True)}
    assert shown["t2s_steps"]["value"] == 60 and shown["cross_replace"]["value"] == 0.2
    assert shown["inversion_weight"]["value"] == 0.5 and shown["blend_words"]["visible"]
    assert not shown["steps"]["visible"] and not shown["control"]["visible"]


def test_a_bad_upload_shows_one_error_line(handlers, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    values = [form_defaults(FATEZERO, "mini").get(f.key, "x") for f in handlers.fields]
    kind, status, image = handlers.uploaded(str(text), FATEZERO.key, *values)
    assert (kind, image) == (UPLOAD, None)
    assert status == ('<div class="status error">inr-smooth edit: error: expected a video file '
                      '(.mp4, .webm, .mov, .mkv, .avi, .gif), got notes.txt</div>')  # fmt: skip
    no_progress = lambda *args, **kwargs: None  # noqa: E731
    line, video, table, notes, download = handlers.run(no_progress, UPLOAD, None, str(text),
                                                       FATEZERO.key, *values)  # fmt: skip
    assert line == status and video is None and notes == ""
    assert not table["visible"] and not download["visible"]
