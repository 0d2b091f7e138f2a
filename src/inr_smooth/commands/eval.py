"""`inr-smooth eval`: the declared metric suite on one video or a manifest of many."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import CLIError, user_errors

DESCRIPTION = """\
Evaluate videos with inr-smooth's declared metric suite (version 1, named in every report):

  clip_text            mean over frames of cos(CLIP text embedding of --prompt, CLIP image
                       embedding of the frame): text alignment, CLIP(T)
  clip_frame           mean cos of the CLIP image embeddings of consecutive frames (i, i+1):
                       CLIP(F) as in the INR paper
  clip_frame_allpairs  the same over all frame pairs i < j (the LOVEU-TGVE convention)
  warp_error           mean |frame i+1 - frame i backward-warped by the optical flow from i+1
                       to i|, pixel values in [0, 1], over the pixels passing the forward-
                       backward check |f_fw + f_bw|^2 < 0.01 (|f_fw|^2 + |f_bw|^2) + 0.5,
                       averaged over consecutive pairs (lower = smoother)
  flow_magnitude       mean optical-flow length in pixels from frame i to i+1: smoothing that
                       freezes motion shows up here as a value near 0

Cosines are raw, in [-1, 1] (papers often print 100 x cosine). Backbone: any transformers
CLIP model (--clip-model hub id or folder, default openai/clip-vit-large-patch14); --no-clip
skips the CLIP metrics. Flow: torchvision RAFT large (weights from torchvision's cache or
--raft-weights; sides >= 128) or OpenCV's weights-free DIS (--flow dis): with --no-clip and
--flow dis, eval runs fully offline on a CPU.

Prints a table; --json writes {"videos": [...], "suite": {definitions, backbone, pairing,
scale}, "clip_backbone", "flow_estimator", "environment"}; --csv writes the rows.

examples:
  inr-smooth eval runs/jeep-inr/samples/a-jeep-car-is-moving-on-the-snow.mp4 \\
      --prompt "a jeep car is moving on the snow" --source car-turn.mp4 --json eval.json
  inr-smooth eval --manifest runs.csv --out eval-results --flow dis --no-clip
      (a CSV / JSON / YAML manifest of rows video, prompt, optional method and source; each
       source is scored once as a reference row; results are appended to OUT/results.jsonl
       as they come, so a rerun resumes; writes table.md, results.csv and chart.png into OUT)
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
    p.add_argument("--out", type=Path, help="folder for the manifest's results (eval-results)")
    p.add_argument("--clip-model", default=None, help="CLIP hub id or local folder")
    p.add_argument("--no-clip", action="store_true", help="skip the CLIP metrics")
    p.add_argument("--flow", choices=("raft", "dis"), default="raft", help="flow (default raft)")
    p.add_argument("--raft-weights", type=Path, help="RAFT .pth state dict (offline)")
    p.add_argument("--raft-small", action="store_true", help="RAFT small instead of large")
    p.add_argument("--frames", type=int, help="evaluate the first N frames")
    p.add_argument("--size", type=int, help="resize frames to this side (multiple of 8)")
    p.add_argument("--json", type=Path, help="write the results as JSON here")
    p.add_argument("--csv", type=Path, help="write the results as CSV here")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> None:
    try:
        _evaluate(args)
    except user_errors() as exc:
        raise CLIError(str(exc)) from None


def _rows(args: argparse.Namespace) -> list[dict[str, str]]:
    """The videos to evaluate (with the source as a reference row), checked for bad flags."""
    from ..metrics.evaluate import read_manifest, with_source_rows

    if bool(args.videos) == bool(args.manifest):
        raise CLIError("give VIDEO arguments or --manifest FILE (one of the two)")
    if args.videos and not args.prompt and not args.no_clip:
        raise CLIError("--prompt is needed for clip_text (or pass --no-clip)")
    if args.manifest and args.source:
        raise CLIError("--source goes with VIDEO arguments; give a manifest a 'source' column")
    if args.frames is not None and args.frames < 2:
        raise CLIError(f"--frames must be at least 2 (metrics use frame pairs), got {args.frames}")
    if args.manifest:
        return with_source_rows(read_manifest(args.manifest))
    rows = [{"video": v, "prompt": args.prompt or ""} for v in args.videos]
    if args.source:
        rows.insert(0, {"video": args.source, "prompt": args.prompt or "", "method": "source"})
    return rows


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


def _evaluate(args: argparse.Namespace) -> None:
    from ..metrics import METRIC_SUITE_VERSION, describe_suite
    from ..metrics.evaluate import evaluate_rows, markdown_table
    from ..video_io import read_video

    rows = _rows(args)

    def read(path: str):
        return read_video(path, num_frames=args.frames, size=args.size)

    for row in rows:  # fail on a bad video before any model loads
        if len(read(row["video"])) < 2:
            raise CLIError(f"expected a video of at least 2 frames, {row['video']} has 1")
    clip, flow = _models(args)
    out = (args.out or Path("eval-results")) if args.manifest else None
    results = evaluate_rows(rows, read, clip, flow,
                            results_path=out / "results.jsonl" if out else None)  # fmt: skip
    backbone = None if clip is None else clip.name
    header = {
        "suite": describe_suite(backbone, repr(flow)),
        "clip_backbone": backbone,
        "flow_estimator": repr(flow),
        "environment": _environment(clip, flow),
    }
    table = markdown_table(results)
    print(f"metric suite v{METRIC_SUITE_VERSION}, CLIP {backbone or 'skipped'}, flow {flow!r}")
    print(f"\n{table}")
    _write_outputs(args, out, results, header, table)


def _environment(clip, flow) -> dict:
    """Package versions and device of the report, with the decoders and flow libraries."""
    import av
    import cv2
    import torchvision

    from ..runlog import environment

    env = environment(getattr(clip or flow, "device", None) or "cpu")
    return {**env, "torchvision": torchvision.__version__, "opencv": cv2.__version__,
            "av": av.__version__}  # fmt: skip


def _write_outputs(args, out: Path | None, results: list[dict], header: dict, table: str) -> None:
    from ..metrics.evaluate import plot_methods, write_csv
    from ..runlog import write_json_atomic

    if out:
        _write_text_atomic(out / "table.md", table)
        write_csv(out / "results.csv", results)
        plot_methods(out / "chart.png", results)
        print(f"wrote {out}/results.jsonl, table.md, results.csv, chart.png")
    if args.json:
        write_json_atomic(args.json, {"videos": results, **header})
        print(f"wrote {args.json}")
    if args.csv:
        write_csv(args.csv, results)
        print(f"wrote {args.csv}")


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
