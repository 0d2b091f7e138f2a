"""`inr-smooth ui`: a local web UI (Gradio) for tuning and editing, with scores and downloads."""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

from . import CLIError, user_errors

UI_DESCRIPTION = """\
Serve a web page for creators: pick a synthetic sample or upload a clip, choose the job (tune +
generate, or a training-free edit) and the host (Tune-A-Video, FateZero), the smoothing and its
weight, the prompts, frames, size, steps and seed (defaults from the model, as the other
commands resolve them), and press Run. The page shows each stage's progress, then the source
and the output side by side, the metric table (exact ground truth for the synthetic samples;
DIS warp error and flow otherwise; CLIP with a CLIP model) and the run folder as a zip.

Jobs run one at a time, in a queue shared by every open tab. Each job's run folder is written
under --workdir (runs/<time>-<host>-<id>/ and its .zip). The page is served on 127.0.0.1 (this
machine only) unless --host says otherwise.

Needs the ui extra: pip install -e ".[ui]"

examples:
  inr-smooth ui                      # the shipped offline model, http://127.0.0.1:7860
  inr-smooth ui --model stable-diffusion-v1-5/stable-diffusion-v1-5 --port 8080
"""

MISSING_EXTRA = 'the web UI needs Gradio, the ui extra: pip install -e ".[ui]"'


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ui",
        help="a web UI in the browser (needs the ui extra)",
        description=UI_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to serve on (127.0.0.1: this machine only)")  # fmt: skip
    p.add_argument("--port", type=int, default=7860, help="port to serve on (7860)")
    p.add_argument("--model", default="mini",
                   help="SD 1.x hub id, local diffusers folder, or 'mini' (mini)")  # fmt: skip
    p.add_argument("--workdir", default="outputs/ui",
                   help="folder of the run folders and uploads (outputs/ui)")  # fmt: skip
    p.add_argument("--clip-model", metavar="NAME",
                   help="CLIP model for the CLIP scores (default: the metric suite's, if it is "
                   "in the local Hugging Face cache; else no CLIP scores)")  # fmt: skip
    p.set_defaults(handler=_run_ui)


def _run_ui(args: argparse.Namespace) -> None:
    from ..model_info import describe_model
    from ..outputs import check_output_dir

    if not 1 <= args.port <= 65535:
        raise CLIError(f"--port must be in 1..65535, got {args.port}")
    if importlib.util.find_spec("gradio") is None:
        raise CLIError(MISSING_EXTRA)
    workdir = Path(args.workdir).expanduser().resolve()
    try:  # the model and the folder are checked before Gradio and torch load
        describe_model(args.model)
        check_output_dir(workdir, what="--workdir")
    except user_errors() as exc:
        raise CLIError(str(exc)) from None
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("GRADIO_TEMP_DIR", str(workdir / "uploads"))
    from ..ui.app import launch
    from ..ui.jobs import Settings
    from ..ui.scoring import ClipSource, find_clip_model

    settings = Settings(model=args.model, workdir=workdir,
                        clip=ClipSource(find_clip_model(args.clip_model)))  # fmt: skip
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"inr-smooth ui: serving on {args.host}: anyone who can reach it can run jobs")
    try:
        launch(settings, host=args.host, port=args.port)
    except OSError as exc:
        raise CLIError(f"cannot serve on {args.host}:{args.port}: {exc}") from None
