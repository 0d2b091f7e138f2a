"""`inr-smooth eval`: the declared metric suite on one video or a manifest of many."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import CLIError, user_errors

DESCRIPTION = """\
Evaluate videos with inr-smooth's declared metric suite (version in every report):

  clip_text            mean over frames of cos(CLIP text embedding of --prompt, CLIP image
                       embedding of the frame): text alignment, CLIP(T)
  clip_frame           mean cos of CLIP image embeddings of consecutive frames: CLIP(F) as
                       in the INR paper
  clip_frame_allpairs  the same over all frame pairs (the LOVEU-TGVE convention)
  warp_error           mean |frame i+1 - frame i warped by the optical flow from i+1 to i|,
                       pixels in [0, 1], on pixels passing a forward-backward flow check
  flow_magnitude       mean optical-flow length in pixels: smoothing that freezes motion
                       shows up here

Cosines are raw, in [-1, 1] (papers often print 100 x). The CLIP backbone is any transformers
CLIP model (--clip-model, default openai/clip-vit-large-patch14); --no-clip skips the CLIP
metrics. Flow: torchvision RAFT large (weights from torchvision's cache or --raft-weights) or
OpenCV's weights-free DIS (--flow dis, fully offline on a CPU).

examples:
  inr-smooth eval runs/jeep-inr/samples/a-jeep-car-is-moving-on-the-snow.mp4 \\
      --prompt "a jeep car is moving on the snow" --source car-turn.mp4
  inr-smooth eval --manifest runs.csv --out eval-results --flow dis --no-clip
      (manifest columns: video, prompt, optional method and source; results are appended to
       OUT/results.jsonl as they come, so a rerun resumes; writes table.md, results.csv and
       chart.png into OUT)
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
    p.add_argument("--manifest", type=Path, help="CSV/JSON/YAML rows of video, prompt[, method]")
    p.add_argument("--out", type=Path, help="folder for the manifest's results (eval-results)")
    p.add_argument("--clip-model", default=None, help="CLIP hub id or local folder")
    p.add_argument("--no-clip", action="store_true", help="skip the CLIP metrics")
    p.add_argument("--flow", choices=("raft", "dis"), default="raft", help="flow estimator")
    p.add_argument("--raft-weights", type=Path, help="RAFT .pth state dict (offline)")
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


def _evaluate(args: argparse.Namespace) -> None:
    from ..metrics import DEFAULT_CLIP_MODEL, METRIC_SUITE, ClipFeatures, DISFlow, RaftFlow
    from ..metrics.evaluate import (
        evaluate_rows,
        markdown_table,
        plot_methods,
        read_manifest,
        write_csv,
    )
    from ..runlog import environment, write_json_atomic
    from ..video_io import read_video

    if bool(args.videos) == bool(args.manifest):
        raise CLIError("give VIDEO arguments or --manifest FILE (one of the two)")
    if args.videos and not args.prompt and not args.no_clip:
        raise CLIError("--prompt is needed for clip_text (or pass --no-clip)")
    if args.manifest:
        rows = read_manifest(args.manifest)
    else:
        rows = [{"video": v, "prompt": args.prompt or ""} for v in args.videos]
        if args.source:
            rows.insert(0, {"video": args.source, "prompt": args.prompt or "", "method": "source"})

    def read(path: str):
        return read_video(path, num_frames=args.frames, size=args.size)

    for row in rows:  # fail on a bad video before any model loads
        read(row["video"])
    flow = DISFlow() if args.flow == "dis" else RaftFlow(args.raft_weights, device=args.device)
    clip = None if args.no_clip else ClipFeatures(args.clip_model or DEFAULT_CLIP_MODEL,
                                                  device=args.device)  # fmt: skip
    out = None
    if args.manifest:
        out = args.out or Path("eval-results")
    results = evaluate_rows(rows, read, clip, flow,
                            results_path=out / "results.jsonl" if out else None)  # fmt: skip
    header = {
        "suite": METRIC_SUITE,
        "clip_backbone": None if clip is None else clip.name,
        "flow_estimator": repr(flow),
        "environment": environment(getattr(clip, "device", None) or "cpu"),
    }
    table = markdown_table(results)
    print(
        f"metric suite v{METRIC_SUITE['version']}, CLIP {header['clip_backbone'] or 'skipped'}, "
        f"flow {header['flow_estimator']}\n\n{table}"
    )
    if out:
        (out / "table.md").write_text(table)
        write_csv(out / "results.csv", results)
        plot_methods(out / "chart.png", results)
        print(f"wrote {out}/results.jsonl, table.md, results.csv, chart.png")
    if args.json:
        write_json_atomic(args.json, {"videos": results, **header})
        print(f"wrote {args.json}")
    if args.csv:
        write_csv(args.csv, results)
        print(f"wrote {args.csv}")
