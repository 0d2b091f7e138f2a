"""The Gradio layout of the web UI without a browser: its events and handlers (needs the ui
extra; the browser test is test_ui_browser.py)."""

import pytest

pytest.importorskip("gradio", reason="the ui extra (Gradio) is not installed")

from inr_smooth.ui.app import UPLOAD, _Handlers, build_app
from inr_smooth.ui.hosts import FATEZERO, HOSTS, TUNE_A_VIDEO, ui_fields
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
