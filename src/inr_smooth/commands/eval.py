"""`inr-smooth eval`: the declared metric suite on one video or a manifest of many."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CLIError, user_errors

DESCRIPTION = """\
Evaluate videos with inr-smooth's declared metric suite (version 2, named in every report):

  clip_text            mean over frames of cos(CLIP text embedding of --prompt, CLIP image
                       embedding of the frame): text alignment, CLIP(T)
  clip_frame           mean cos of the CLIP image embeddings of consecutive frames (i, i+1):
                       CLIP(F) as in the INR paper
  clip_frame_allpairs  the same over all frame pairs i < j (the LOVEU-TGVE convention)
  warp_error           mean |frame i+1 - frame i backward-warped by the optical flow from i+1
                       to i|, pixel values in [0, 1], over the pixels whose flow target lies
                       inside frame i (v2: pixels whose flow leaves the frame are left out)
                       and that pass the forward-backward check
                       |f_fw + f_bw|^2 < 0.01 (|f_fw|^2 + |f_bw|^2) + 0.5,
                       averaged over consecutive pairs (lower = smoother)
  flow_magnitude       mean optical-flow length in pixels from frame i to i+1: smoothing that
                       freezes motion shows up here as a value near 0

Cosines are raw, in [-1, 1] (papers often print 100 x cosine). Backbone: any transformers
CLIP model (--clip-model hub id or folder, default openai/clip-vit-large-patch14); --no-clip
skips the CLIP metrics. Flow: torchvision RAFT large (weights from torch.hub's cache, checksum
verified and read as plain tensors, or --raft-weights; sides >= 128) or OpenCV's weights-free
DIS (--flow dis): with --no-clip and --flow dis, eval runs fully offline on a CPU.

Videos are read whole unless --frames N (the first N) or --size S (S x S, centre crop) say
otherwise; a --source (or a manifest's source) is read like the videos it is compared with:
at their frame count and size. Rows name each video by its file name, with parent folders
where two videos share one. Each row records the frames and size it was evaluated at.

Prints a table; --json writes {"videos": [...], "suite": {definitions, backbone, pairing,
scale}, "clip_backbone", "flow_estimator", "environment"}; --csv writes the rows. Outputs are
checked before any model loads, and written whole (no partial files).

examples:
  inr-smooth eval runs/jeep-inr/samples/a-jeep-car-is-moving-on-the-snow.mp4 \\
      --prompt "a jeep car is moving on the snow" --source car-turn.mp4 --json eval.json
  inr-smooth eval --manifest runs.csv --out eval-results --flow dis --no-clip
      (a CSV / JSON / YAML manifest of rows video, prompt, optional method and source; each
       source is scored once as a reference row; results are appended to OUT/results.jsonl
       as they come, keyed by the video's content and the settings, so a rerun resumes and
       re-evaluates what changed; writes table.md, results.csv and chart.png into OUT)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="CLIP text alignment, CLIP frame consistency, optical-flow warp error",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("videos", nargs="*", metavar="VIDEO", help="videos to evaluate")
    p.add_argument("--prompt", help="text the videos should show (for clip_text)")
    p.add_argument("--source", help="source video: evaluated too, as a reference row")
    p.add_argument("--manifest", type=Path, help="CSV/JSON/YAML: video, prompt[, method, source]")
    p.add_argument("--out", type=Path,
                   help="folder for results.jsonl, table.md, results.csv, chart.png (default "
                        "with --manifest: eval-results)")  # fmt: skip
    p.add_argument("--clip-model", default=None, help="CLIP hub id or local folder")
    p.add_argument("--no-clip", action="store_true", help="skip the CLIP metrics")
    p.add_argument("--flow", choices=("raft", "dis"), default="raft", help="flow (default raft)")
    p.add_argument("--raft-weights", type=Path, help="RAFT .pth state dict (offline)")
    p.add_argument("--raft-small", action="store_true", help="RAFT small instead of large")
    p.add_argument("--frames", type=int,
                   help="evaluate the first N frames (default: all; a source: as many as the "
                        "videos it is compared with)")  # fmt: skip
    p.add_argument("--size", type=int,
                   help="resize frames to S x S, centre crop (multiple of 8; default: as "
                        "stored; a source: the videos' size)")  # fmt: skip
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--csv", type=Path, help="write the results as CSV here")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> None:
    plan = _check(args)  # torch-free: bad flags, missing videos, unwritable outputs
    try:
        _evaluate(args, plan)
    except user_errors() as exc:
        raise CLIError(str(exc)) from None


class _Plan:
    """What the flags ask for, checked: rows, which rows are references, where results go."""

    def __init__(self, rows, references, out, settings):
        self.rows, self.references, self.out, self.settings = rows, references, out, settings


def _check(args: argparse.Namespace) -> _Plan:
    """Every check that needs no model and no torch (one line each)."""
    from ..metrics import METRIC_SUITE_VERSION
    from ..outputs import OutputError, check_output_dir, check_output_file

    try:
        rows, references = _rows(args)
        if args.size is not None and (args.size < 8 or args.size % 8):
            raise CLIError(f"--size must be a positive multiple of 8, got {args.size}")
        for row in rows:
            if not Path(row["video"]).expanduser().exists():
                raise CLIError(f"video not found: {row['video']}")
        if args.raft_weights is not None and not args.raft_weights.expanduser().is_file():
            raise CLIError(f"RAFT weights not found: {args.raft_weights}")
        if not args.no_clip and args.clip_model:
            from ..metrics.inputs import check_clip_name

            check_clip_name(args.clip_model)
        out = args.out or (Path("eval-results") if args.manifest else None)
        if out is not None:
            check_output_dir(out, what="--out folder")
        for path, what in ((args.json, "--json file"), (args.csv, "--csv file")):
            if path is not None:
                check_output_file(path, what=what)
    except (OutputError, ValueError, FileNotFoundError) as exc:
        raise CLIError(str(exc)) from None
    settings = {"flow": _flow_id(args), "suite": METRIC_SUITE_VERSION,
                "clip": None if args.no_clip else (args.clip_model or "default")}  # fmt: skip
    return _Plan(rows, references, out, settings)


def _rows(args: argparse.Namespace) -> tuple[list[dict[str, str]], dict[int, list[int]]]:
    """The rows to evaluate, and for each reference (source) row the rows compared with it."""
    from ..metrics.inputs import read_manifest, with_source_rows

    if bool(args.videos) == bool(args.manifest):
        raise CLIError("give VIDEO arguments or --manifest FILE (one of the two)")
    if args.videos and not args.prompt and not args.no_clip:
        raise CLIError("--prompt is needed for clip_text (or pass --no-clip)")
    if args.manifest and args.source:
        raise CLIError("--source goes with VIDEO arguments; give a manifest a 'source' column")
    if args.frames is not None and args.frames < 2:
        raise CLIError(f"--frames must be at least 2 (metrics use frame pairs), got {args.frames}")
    if args.manifest:
        rows = with_source_rows(read_manifest(args.manifest))
        sources = {i: r["video"] for i, r in enumerate(rows) if r.get("method") == "source"
                   and "source" not in r}  # fmt: skip
        references = {i: [j for j, r in enumerate(rows) if r.get("source") == video]
                      for i, video in sources.items()}  # fmt: skip
        return rows, {i: js for i, js in references.items() if js}
    rows = [{"video": v, "prompt": args.prompt or ""} for v in args.videos]
    if not args.source:
        return rows, {}
    source = {"video": args.source, "prompt": args.prompt or "", "method": "source"}
    return [source, *rows], {0: list(range(1, len(rows) + 1))}


def _flow_id(args: argparse.Namespace) -> str:
    """The flow estimator as the result keys name it (the weights file's digest included)."""
    if args.flow == "dis":
        return "dis:medium"
    from ..metrics.inputs import file_digest

    size = "small" if args.raft_small else "large"
    weights = file_digest(args.raft_weights) if args.raft_weights else "torch.hub"
    return f"raft:{size}:12:{weights}"


def _models(args: argparse.Namespace):
    """``(clip or None, flow estimator)`` as the flags ask."""
    from ..metrics import DEFAULT_CLIP_MODEL, ClipFeatures, DISFlow, RaftFlow

    if args.flow == "dis":
        flow = DISFlow()
    else:
        flow = RaftFlow(args.raft_weights, large=not args.raft_small, device=args.device)
    if args.no_clip:
        return None, flow
    return ClipFeatures(args.clip_model or DEFAULT_CLIP_MODEL, device=args.device), flow


def _evaluate(args: argparse.Namespace, plan: _Plan) -> None:
    import sys

    from ..metrics import METRIC_SUITE_VERSION, describe_suite
    from ..metrics.evaluate import ResultsLog, evaluate_jobs, markdown_table, plan_jobs
    from ..video_io import read_video

    def read(path: str, frames: int | None, size: tuple[int, int] | None):
        return read_video(path, num_frames=frames, size=size)

    log = ResultsLog(plan.out / "results.jsonl") if plan.out else None
    done = log.read() if log else {}
    jobs = plan_jobs(plan.rows, plan.references, read, frames=args.frames, size=args.size,
                     settings=plan.settings, done=done)  # fmt: skip
    _note_mixed_references(plan, jobs)
    if log:
        dropped = log.keep_only({job.key for job in jobs})
        if dropped:
            print(f"{log.path}: dropped {dropped} earlier result(s) of other video contents, "
                  "settings or rows (or cut by a crash)", file=sys.stderr)  # fmt: skip
    clip, flow = _models(args) if any(j.cached is None for j in jobs) else (None, None)
    results = evaluate_jobs(jobs, read, clip, flow, log=log)
    backbone = None if args.no_clip else (clip.name if clip else args.clip_model or "default")
    flow_name = repr(flow) if flow is not None else plan.settings["flow"]
    header = {
        "suite": describe_suite(backbone, flow_name),
        "clip_backbone": backbone,
        "flow_estimator": flow_name,
        "environment": _environment(clip, flow),
    }
    table = markdown_table(results)
    print(f"metric suite v{METRIC_SUITE_VERSION}, CLIP {backbone or 'skipped'}, flow {flow_name}")
    print(f"\n{table}")
    title = f"metric suite v{METRIC_SUITE_VERSION}, flow {flow_name}: mean per method"
    _write_outputs(args, plan.out, results, header, table, title)


def _note_mixed_references(plan: _Plan, jobs) -> None:
    """Say so when a source's compared videos differ in frames or size (it is read like the
    first of them)."""
    import sys

    for i, compared in plan.references.items():
        shapes = {jobs[j].shape for j in compared}
        if len(shapes) > 1:
            f, h, w = jobs[i].shape
            print(f"note: {jobs[i].row['name']} is read as {f} frames of {w}x{h}, like "
                  f"{jobs[compared[0]].row['name']}; the videos compared with it differ "
                  "(pass --frames/--size to choose)", file=sys.stderr)  # fmt: skip


def _environment(clip, flow) -> dict:
    """Package versions and device of the report, with the decoders and flow libraries."""
    import av
    import cv2
    import torchvision

    from ..runlog import environment

    env = environment(getattr(clip or flow, "device", None) or "cpu")
    return {**env, "torchvision": torchvision.__version__, "opencv": cv2.__version__,
            "av": av.__version__}  # fmt: skip


def _write_outputs(args, out: Path | None, results: list[dict], header: dict, table: str,
                   title: str) -> None:  # fmt: skip
    """Every output file, each written whole; a failure is one line naming the path."""
    from ..metrics.evaluate import plot_methods, write_csv
    from ..outputs import write_json_atomic, write_text_atomic

    if out:
        write_text_atomic(out / "table.md", table)
        write_csv(out / "results.csv", results)
        plot_methods(out / "chart.png", results, title)
        print(f"wrote {out}/results.jsonl, table.md, results.csv, chart.png")
    if args.json:
        write_json_atomic(args.json, {"videos": results, **header})
        print(f"wrote {args.json}")
    if args.csv:
        write_csv(args.csv, results)
        print(f"wrote {args.csv}")
