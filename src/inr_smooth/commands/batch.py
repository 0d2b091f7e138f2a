"""`inr-smooth batch`: a grid of runs on any number of processes, GPUs and machines."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import CLIError, user_errors

DESCRIPTION = """\
Run a grid of videos x edit prompts x methods x parameters, score every output, and summarise
by method. GRID.yaml (keys: model, videos [path, prompt, optional prompts, name, scene],
prompts, methods, parameters, frames, size, steps, inference_steps, seed, stride, eval,
keep_weights, cache_dir) is checked whole before any job starts: a malformed grid or a missing
video is one line naming the key.

Every job runs through the library's API (tune:* = one tuning of a video, then one video per
edit prompt; edit:* = one training-free edit per prompt), then the metric suite (eval: clip,
flow) and, for videos with a `scene`, the synthetic world's exact ground truth. Results are
appended to OUTPUT/results.jsonl as jobs finish, keyed by a digest of the video's content, the
model and the settings: a rerun skips finished jobs (and failed ones, unless --retry-failed).
OUTPUT/table.md, results.csv and chart.png summarise by method; runs/<job>/ holds each job's
videos; inversion-cache/ the inversions that the edits of one video share.

Processes share the jobs by atomic claim files in OUTPUT/claims/: one process per GPU under
`accelerate launch` or `torchrun` (they set RANK / LOCAL_RANK / WORLD_SIZE; several machines
through accelerate's own flags, with OUTPUT on a shared file system), or --processes N local
ones (GPUs, or CPU processes without one). A process that dies leaves its job to be redone:
at once by the others on its machine (its pid is gone), after --lease seconds from other
machines (its claim is no longer touched), or by the next run.

examples:
  inr-smooth batch grid.yaml --output runs/grid                    # one process (one GPU)
  inr-smooth batch grid.yaml --output runs/grid --processes 4      # four local processes
  accelerate launch --multi_gpu --num_processes 8 -m inr_smooth batch grid.yaml --output runs/grid
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="a grid of runs (videos x prompts x methods x parameters) on many GPUs / machines",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("grid", type=Path, metavar="GRID.yaml", help="the grid file")
    p.add_argument("--output", type=Path, required=True, help="the batch folder (resumable)")
    p.add_argument("--processes", type=int, metavar="N",
                   help="start N local worker processes (without accelerate / torchrun)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: cuda:LOCAL_RANK where there is a GPU, else cpu")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch CPU threads per process (default: the cores / local processes)")
    p.add_argument("--lease", type=float, default=300.0, metavar="SECONDS",
                   help="a claim from another machine untouched this long is stale (300)")
    p.add_argument("--poll", type=float, default=2.0, metavar="SECONDS",
                   help="how often an idle process looks for work left by a dead one (2)")
    p.add_argument("--retry-failed", action="store_true", help="run failed jobs again")
    p.add_argument("--skip-memory-check", action="store_true",
                   help="no up-front memory estimate (else once per shape and process)")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and their state, run none")
    p.set_defaults(handler=_run)


def _check_args(args: argparse.Namespace):
    from ..batch.launch import read_rank

    rank = read_rank()
    if args.processes is not None and args.processes < 1:
        raise CLIError(f"--processes must be at least 1, got {args.processes}")
    if args.processes and rank.launched:
        raise CLIError("--processes starts local processes itself: leave it out under "
                       "accelerate launch / torchrun")  # fmt: skip
    if args.threads is not None and args.threads < 1:
        raise CLIError(f"--threads must be at least 1, got {args.threads}")
    if not (args.lease > 0 and args.poll > 0):
        raise CLIError(f"--lease and --poll must be > 0, got {args.lease}, {args.poll}")
    return rank


def _check_output(output: Path) -> None:
    from ..outputs import OutputError, check_output_dir

    check_output_dir(output, what="batch folder")
    if output.is_dir() and any(output.iterdir()):
        ours = {"results.jsonl", "runs", "claims"}
        if not ours & {p.name for p in output.iterdir()}:
            raise OutputError(f"the batch folder {output} is not empty and holds no batch "
                              "(results.jsonl, runs/): choose another --output")  # fmt: skip


def _plan(args: argparse.Namespace):
    """The grid, its jobs, the batch folder: all checked before any job (or torch) starts."""
    from ..batch import expand, load_grid
    from ..batch.worker import BatchRun

    grid = load_grid(args.grid)
    jobs = expand(grid)
    _check_flow(grid, jobs)
    _check_output(args.output)
    return BatchRun(grid, jobs, args.output.expanduser(), lease_s=args.lease,
                    retry_failed=args.retry_failed, memory_check=not args.skip_memory_check,
                    poll_s=args.poll)  # fmt: skip


def _check_flow(grid, jobs) -> None:
    """RAFT needs frames of at least 128 px and its weights: say so before any job runs."""
    if grid.eval.flow != "raft" or not jobs:
        return
    small = min(job.prepared.config.size for job in jobs)
    if small < 128:
        raise CLIError(f"{grid.path}: eval.flow raft needs frames of at least 128 px, the "
                       f"grid makes {small} px ones: set eval: {{flow: dis}}")  # fmt: skip
    if grid.eval.raft_weights is None:
        from urllib.parse import urlparse

        from ..metrics.raft import cached_raft_file

        path, url = cached_raft_file(True)
        if not path.is_file() and not _reachable(urlparse(url).hostname):
            raise CLIError(f"RAFT's weights are not in {path.parent} and cannot be downloaded: "
                           "set eval: {flow: dis} or eval: {raft_weights: PATH}")  # fmt: skip


def _reachable(host: str | None) -> bool:
    import socket

    try:
        with socket.create_connection((host, 443), timeout=3):
            return True
    except OSError:
        return False


def _run(args: argparse.Namespace) -> None:
    try:
        rank = _check_args(args)
        run = _plan(args)
        if args.dry_run:
            _list(run)
            return
        if not _pending(run):  # all finished (or failed): the report only, no torch
            if not (rank.child or rank.rank):
                _report_only(run)
            return
        if args.processes and args.processes > 1:
            _run_processes(args, run)
            return
        summary = _work(args, run, rank)
    except user_errors() as exc:
        raise CLIError(str(exc)) from None
    if rank.child or rank.rank != 0:
        return
    _finish(run, summary.report, len(summary.ran))


def _work(args: argparse.Namespace, run, rank):
    from ..batch.launch import choose_device, detach_from_launcher
    from ..batch.worker import run_worker

    detach_from_launcher()  # before torch: no process group, no DDP around a job's model
    import torch

    device = choose_device(args.device, rank)
    threads = args.threads or max(1, (os.cpu_count() or 1) // rank.local_world_size)
    torch.set_num_threads(threads)
    import cv2  # DIS flow: the same share of the cores

    cv2.setNumThreads(threads)
    return run_worker(run, rank, device=device, progress=not rank.launched)


def _child_argv(args: argparse.Namespace) -> list[str]:
    argv = ["batch", str(args.grid), "--output", str(args.output), "--device", args.device,
            "--lease", str(args.lease), "--poll", str(args.poll)]  # fmt: skip
    if args.threads:
        argv += ["--threads", str(args.threads)]
    argv += ["--retry-failed"] * args.retry_failed
    argv += ["--skip-memory-check"] * args.skip_memory_check
    return argv


def _pending(run) -> list:
    from ..batch.results import BatchResults
    from ..batch.worker import pending_jobs

    return pending_jobs(run, BatchResults(run.output / "results.jsonl").entries())


def _report_only(run, ran: int | None = 0) -> None:
    from ..batch.results import BatchResults, write_report
    from ..batch.worker import report_title

    entries = BatchResults(run.output / "results.jsonl").entries()
    _finish(run, write_report(run.output, run.jobs, entries, report_title(run)), ran)


def _run_processes(args: argparse.Namespace, run) -> None:
    from ..batch.launch import spawn_local

    codes = spawn_local(args.processes, _child_argv(args))
    bad = [f"process {i} exited with {c}" for i, c in enumerate(codes) if c != 0]
    if bad:
        raise CLIError(f"{'; '.join(bad)}: rerun the same command to finish the grid")
    _report_only(run, None)


def _finish(run, report: str, ran: int | None) -> None:
    from ..batch.results import BatchResults, report_rows

    print(report)
    _, failures = report_rows(run.jobs, BatchResults(run.output / "results.jsonl").entries())
    done = f"ran {ran} of {len(run.jobs)} jobs in this process; " if ran is not None else ""
    print(f"{done}wrote {run.output}/results.jsonl, table.md, results.csv, chart.png")
    if failures:
        raise CLIError(f"{len(failures)} of {len(run.jobs)} jobs failed (listed in "
                       f"{run.output}/table.md): fix the cause and rerun with --retry-failed")


def _list(run) -> None:
    from ..batch.results import BatchResults

    entries = BatchResults(run.output / "results.jsonl").entries()
    ok = {e["key"] for e in entries if e["status"] == "ok"}
    failed = {e["job"] for e in entries if e["status"] == "failed"}
    for job in run.jobs:
        state = ("done" if all(k in ok for k in job.keys.values())
                 else "failed" if job.id in failed else "to run")  # fmt: skip
        print(f"{job.id}  {state:7}  {job.describe()}")
    print(f"{len(run.jobs)} jobs")
