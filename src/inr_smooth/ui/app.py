"""The Gradio layout of ``inr-smooth ui``: inputs and outputs wired to :mod:`.jobs`, nothing more.

Every input of every host (:data:`~.hosts.HOSTS`) is one component, shown while its host is
chosen; a job runs through :func:`~.jobs.run_job` in Gradio's queue, one at a time on the
model (``concurrency_limit=1``), with the pipelines' tqdm bars relayed as progress.
"""

from __future__ import annotations

import html
import logging
import threading
from pathlib import Path
from typing import Any

import gradio as gr

from ..commands import CLIError, user_errors
from .hosts import (
    EDIT_PROMPT,
    GROUPS,
    HOSTS,
    JOBS,
    SOURCE_PROMPT,
    Field,
    Host,
    host_by_key,
    ui_fields,
)
from .jobs import Settings, Source, error_line, form_defaults, preview, run_job
from .samples import SAMPLES, sample_by_caption

__all__ = ["build_app", "launch"]

log = logging.getLogger("inr_smooth.ui")
DEFAULT_JOB = "edit"
SAMPLE, UPLOAD = "sample", "upload"
CSS = """
#preview img, #result-video video { image-rendering: pixelated; }
.status { font-size: 1.05em; padding: 4px 0; }
.status.error { color: #c62828; font-weight: 600; }
"""
SCROLL_TO_RESULTS = "() => document.getElementById('results').scrollIntoView({block: 'start'})"
INTRO = """\
# inr-smooth
Temporally smooth video editing with interframe noise relations (INR Smooth). Pick a synthetic
sample or upload a clip, choose the job and the host, set the prompts and press **Run**: the
output appears beside the source, with its scores and the run folder as a download.
"""


def _status(line: str, error: bool = False) -> str:
    return f'<div class="status{" error" if error else ""}">{html.escape(line)}</div>'


def _component(f: Field, value: Any, visible: bool):
    common = {"label": f.label, "info": f.info or None, "visible": visible,
              "elem_id": f"field-{f.key}"}  # fmt: skip
    if f.kind == "text":
        return gr.Textbox(value=value or "", lines=1, **common)
    if f.kind == "choice":
        return gr.Dropdown(choices=list(f.choices), value=value, **common)
    if f.kind == "slider":
        return gr.Slider(minimum=f.minimum, maximum=f.maximum, step=f.step, value=value, **common)
    precision = 0 if f.kind == "int" else None
    return gr.Number(value=value, precision=precision, minimum=f.minimum, maximum=f.maximum,
                     step=f.step, **common)  # fmt: skip


def _source(kind: str, sample: str | None, upload: str | None) -> Source:
    if kind == UPLOAD:
        if not upload:
            raise ValueError("no clip uploaded (upload a clip, or choose a sample)")
        return Source(upload=upload)
    return Source(sample=sample or SAMPLES[0].caption)


def _names(source_upload: str | None) -> dict[str, str]:
    return {source_upload: Path(source_upload).name} if source_upload else {}


def _line(exc: BaseException, command: str, upload: str | None) -> str:
    if not isinstance(exc, (CLIError, *user_errors())):
        log.exception("inr-smooth ui: the job failed")
    return error_line(exc, command, _names(upload))


class _Handlers:
    """The event handlers: each turns component values into a call of :mod:`.jobs`."""

    def __init__(self, settings: Settings, fields: list[Field]):
        self.settings, self.fields = settings, fields

    def values(self, field_values) -> dict[str, Any]:
        return dict(zip((f.key for f in self.fields), field_values, strict=True))

    def job_changed(self, job: str):
        hosts = [h for h in HOSTS if h.job == job]
        return gr.update(choices=[(h.label, h.key) for h in hosts], value=hosts[0].key)

    def host_changed(self, host_key: str):
        host = host_by_key(host_key)
        defaults = form_defaults(host, self.settings.model)
        keys = {f.key for f in host.fields}
        updates = [gr.update(visible=f.key in keys, **({"value": defaults[f.key]}
                   if f.key in defaults else {})) for f in self.fields]  # fmt: skip
        return [_summary(host), *updates]

    def sample_chosen(self, caption: str, host_key: str, *field_values):
        sample = sample_by_caption(caption)
        values = {**self.values(field_values), SOURCE_PROMPT: sample.caption,
                  EDIT_PROMPT: sample.edit.caption}  # fmt: skip
        status, image = self.preview(SAMPLE, caption, None, host_key, values)
        return SAMPLE, sample.caption, sample.edit.caption, status, image

    def uploaded(self, upload: str | None, host_key: str, *field_values):
        if not upload:
            return SAMPLE, _status(""), None
        status, image = self.preview(UPLOAD, None, upload, host_key, self.values(field_values))
        return UPLOAD, status, image

    def refresh(self, kind, sample, upload, host_key, *field_values):
        return self.preview(kind, sample, upload, host_key, self.values(field_values))

    def preview(self, kind, sample, upload, host_key, values) -> tuple[str, str | None]:
        host = host_by_key(host_key)
        try:
            shown = preview(host, values, _source(kind, sample, upload), self.settings)
        except Exception as exc:
            return _status(_line(exc, host.job, upload), error=True), None
        return _status(f"source: {shown.line}"), str(shown.path)

    # Gradio passes a Progress only to a positional parameter with it as the default
    def run(self, progress=gr.Progress(track_tqdm=True), *inputs):  # noqa: B008
        kind, sample, upload, host_key, *field_values = inputs
        host = host_by_key(host_key)
        try:
            result = run_job(
                host,
                self.values(field_values),
                _source(kind, sample, upload),
                self.settings,
                on_stage=lambda i, n, name: progress((i, n), desc=name, unit="stages"),
            )
        except Exception as exc:
            line = _status(_line(exc, host.job, upload), error=True)
            return line, None, gr.update(visible=False), "", gr.update(visible=False)
        import pandas as pd

        table = pd.DataFrame(result.table.formatted(), columns=result.table.columns)
        notes = "\n".join(f"* {note}" for note in result.table.notes)
        done = f"done in {result.seconds:.1f} s: {result.folder.name} ({host.label})"
        return (_status(done), str(result.video), gr.update(value=table, visible=True), notes,
                gr.update(value=str(result.archive), visible=True))  # fmt: skip


def _summary(host: Host) -> str:
    return f"**{host.label}** ({JOBS[host.job].lower()}): {host.summary}."


def _inputs(fields: list[Field], host: Host, values: dict[str, Any]) -> list:
    """One component per field, a row per group (prompts: one per line)."""
    keys = {f.key for f in host.fields}
    components = []
    for group in GROUPS:
        members = [f for f in fields if f.group == group]
        if not members:
            continue
        with gr.Column() if group == "prompts" else gr.Row():
            components += [_component(f, values.get(f.key), f.key in keys) for f in members]
    return components


def build_app(settings: Settings) -> gr.Blocks:
    """The page; :func:`launch` serves it."""
    fields = ui_fields(HOSTS)
    h = _Handlers(settings, fields)
    host = next(x for x in HOSTS if x.job == DEFAULT_JOB)
    defaults = form_defaults(host, settings.model)
    first = SAMPLES[0]
    start = {**defaults, SOURCE_PROMPT: first.caption, EDIT_PROMPT: first.edit.caption}
    with gr.Blocks(title="inr-smooth", analytics_enabled=False) as app:
        gr.Markdown(INTRO + f"\nModel: `{settings.model}`.")
        with gr.Row():
            with gr.Column(scale=1):
                kind = gr.Radio([("synthetic sample", SAMPLE), ("uploaded clip", UPLOAD)],
                                value=SAMPLE, label="source", elem_id="source-kind")  # fmt: skip
                sample = gr.Dropdown([s.caption for s in SAMPLES], value=first.caption,
                                     label="synthetic sample", elem_id="sample")  # fmt: skip
                upload = gr.File(label="or upload a clip (mp4, webm, mov, mkv, avi, gif)",
                                 type="filepath", height=120, elem_id="upload")  # fmt: skip
                shown = gr.Image(label="the frames the job reads", type="filepath",
                                 interactive=False, height=200, elem_id="preview")  # fmt: skip
                checked = gr.HTML(_status(""), elem_id="source-status")
            with gr.Column(scale=1):
                job = gr.Radio([(label, key) for key, label in JOBS.items()], value=host.job,
                               label="job", elem_id="job")  # fmt: skip
                host_pick = gr.Dropdown([(x.label, x.key) for x in HOSTS if x.job == host.job],
                                        value=host.key, label="host", elem_id="host")  # fmt: skip
                summary = gr.Markdown(_summary(host))
                inputs = _inputs(fields, host, start)
                run = gr.Button("Run", variant="primary", elem_id="run")
        with gr.Row(elem_id="results"):
            with gr.Column(scale=1):
                status = gr.HTML(_status(""), elem_id="status")
                video = gr.Video(label="source | output", interactive=False, autoplay=True,
                                 loop=True, elem_id="result-video")  # fmt: skip
            with gr.Column(scale=1):
                table = gr.Dataframe(label="scores", interactive=False, visible=False,
                                     elem_id="metrics")  # fmt: skip
                notes = gr.Markdown(elem_id="notes")
                download = gr.File(label="run folder (zip)", interactive=False, visible=False,
                                   elem_id="download")  # fmt: skip
        source = [kind, sample, upload, host_pick]
        by_key = {f.key: component for f, component in zip(fields, inputs, strict=True)}
        job.change(h.job_changed, job, host_pick)
        host_pick.change(h.host_changed, host_pick, [summary, *inputs]).then(
            h.refresh, [*source, *inputs], [checked, shown]
        )
        prompts = [by_key[SOURCE_PROMPT], by_key[EDIT_PROMPT]]
        sample.input(h.sample_chosen, [sample, host_pick, *inputs],
                     [kind, *prompts, checked, shown])  # fmt: skip
        upload.upload(h.uploaded, [upload, host_pick, *inputs], [kind, checked, shown])
        kind.input(h.refresh, [*source, *inputs], [checked, shown])
        for key in ("frames", "stride", "size"):
            by_key[key].blur(h.refresh, [*source, *inputs], [checked, shown])
        run.click(None, js=SCROLL_TO_RESULTS)
        run.click(h.run, [*source, *inputs], [status, video, table, notes, download],
                  concurrency_limit=1, concurrency_id="model",
                  show_progress_on=[video])  # fmt: skip
        app.load(h.refresh, [*source, *inputs], [checked, shown])
    return app


def _warm_imports() -> None:
    """Import the pipelines (torch, diffusers: seconds) while the page loads, not in the first
    job."""
    try:
        import importlib

        for module in ("edit", "tune"):
            importlib.import_module(f"inr_smooth.pipelines.{module}")
    except Exception:  # a broken install shows up in the job, as one line
        log.debug("warm-up import failed", exc_info=True)


def launch(settings: Settings, *, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the page on ``host:port`` until interrupted."""
    app = build_app(settings)
    app.queue(default_concurrency_limit=1)
    threading.Thread(target=_warm_imports, daemon=True).start()
    app.launch(server_name=host, server_port=port, allowed_paths=[str(settings.workdir)],
               show_error=False, ssr_mode=False, css=CSS, footer_links=[],
               inbrowser=False)  # fmt: skip
