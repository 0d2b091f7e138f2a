"""A worker: claim a job, run it through the library's API, score its outputs, append them.

Every process of a batch runs :func:`run_worker` on the same job list. It loads each model
once (:func:`~inr_smooth.pipelines.components.reuse_loaded_parts`) and each metric model once,
and loops: read ``results.jsonl``; take the first job that is neither finished nor failed nor
held by a live claim; run it; append its rows; release the claim. When every job left is held
by other live workers it waits, so that it can take over a job whose worker dies. A job's
outputs go to ``DIR/runs/<job id>/`` with ``batch-job.json`` once they are complete: a job
whose outputs exist is only scored again (after a change of the evaluation settings).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import shutil
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..outputs import write_json_atomic
from .claims import DEFAULT_LEASE_S, ClaimQueue
from .grid import EvalSettings, Grid
from .jobs import Job, with_run_settings
from .launch import Rank
from .methods import HOSTS
from .results import TRUTH_COLUMNS, BatchResults, write_report

__all__ = ["BatchRun", "WorkerSummary", "report_title", "run_worker"]

JOB_RECORD = "batch-job.json"
# what a memory estimate depends on: checked once per host, device and these per process
SHAPE_FIELDS = ("model", "frames", "size", "attention", "dtype", "mixed_precision")


@dataclass
class BatchRun:
    """What every worker of one batch shares."""

    grid: Grid
    jobs: list[Job]
    output: Path
    lease_s: float = DEFAULT_LEASE_S
    retry_failed: bool = False
    memory_check: bool = True
    poll_s: float = 2.0

    @property
    def cache_dir(self) -> str:
        return self.grid.cache_dir or str(self.output / "inversion-cache")


@dataclass
class WorkerSummary:
    ran: list[str] = field(default_factory=list)  # job ids this process ran (or scored)
    failed: list[str] = field(default_factory=list)
    settled: bool = False  # every job finished or failed when it stopped
    report: str = ""  # table.md's text, when settled


def pending_jobs(run: BatchRun, entries: list[dict], *, since: float | None = None,
                 tried: set[str] = frozenset()) -> list[Job]:  # fmt: skip
    """The jobs still to run: not all of their outputs scored, not tried by this process, and
    not failed (with ``retry_failed``: not failed since ``since``, this process's start)."""
    ok = {e["key"] for e in entries if e["status"] == "ok"}
    failed = {e["job"]: e.get("time", 0) for e in entries if e["status"] == "failed"}
    since = time.time() if since is None else since

    def settled(job: Job) -> bool:
        if all(k in ok for k in job.keys.values()) or job.id in tried:
            return True
        if job.id in failed:
            return not run.retry_failed or failed[job.id] >= since
        return False

    return [job for job in run.jobs if not settled(job)]


class Evaluator:
    """The metric suite's models, loaded on first use and kept for the process."""

    def __init__(self, settings: EvalSettings, device: str):
        self.settings, self.device = settings, device
        self._models = None

    def models(self):
        if self._models is None:
            from ..metrics import DEFAULT_CLIP_MODEL, ClipFeatures, DISFlow, RaftFlow

            s = self.settings
            flow = DISFlow() if s.flow == "dis" else RaftFlow(s.raft_weights, large=True,
                                                              device=self.device)
            clip = None
            if s.clip is not None:
                name = DEFAULT_CLIP_MODEL if s.clip == "default" else s.clip
                clip = ClipFeatures(name, device=self.device)
            self._models = clip, flow
        return self._models

    def scores(self, frames, prompt: str, truth: dict | None) -> dict:
        from ..metrics.evaluate import evaluate_frames

        clip, flow = self.models()
        scores = evaluate_frames(frames, prompt, clip, flow)
        if truth is not None:
            from ..synthetic import Scene, score_object

            found = score_object(frames, Scene(**truth)).__dict__
            scores.update({k: float(found[k]) for k in TRUTH_COLUMNS})
        return scores


def report_title(run: BatchRun) -> str:
    from ..metrics import METRIC_SUITE_VERSION

    e = run.grid.eval
    return (f"inr-smooth batch {run.grid.path.name}: model {run.grid.model}, "
            f"{len(run.grid.videos)} videos, {len(run.jobs)} jobs; mean ± standard error per "
            f"method over videos, prompts and seeds; metric suite v{METRIC_SUITE_VERSION}, "
            f"flow {e.flow}, CLIP {e.clip or 'skipped'}")  # fmt: skip


class _Worker:
    def __init__(self, run: BatchRun, rank: Rank, device: str, progress: bool,
                 say: Callable[[str], None]):  # fmt: skip
        self.run, self.rank, self.device, self.progress, self.say = run, rank, device, progress, say
        self.results = BatchResults(run.output / "results.jsonl")
        self.queue = ClaimQueue(run.output / "claims", lease_s=run.lease_s, rank=rank.rank)
        self.evaluator = Evaluator(run.grid.eval, device)
        self.started = time.time()
        self.tried: set[str] = set()
        self.checked: set[tuple] = set()  # memory checks done in this process
        self.summary = WorkerSummary()

    # ------------------------------------------------------------------ the queue
    def pending(self) -> list[Job]:
        return pending_jobs(self.run, self.results.entries(), since=self.started,
                            tried=self.tried)  # fmt: skip

    def next_claim(self, pending: list[Job]):
        snapshot = self.queue.snapshot()
        for job in pending:
            claim = self.queue.try_claim(job.id, snapshot.get(job.id))
            if claim is not None:
                if job.id in {j.id for j in self.pending()}:  # not finished meanwhile
                    return job, claim
                self.queue.release(claim)
        return None, None

    def loop(self) -> WorkerSummary:
        while True:
            pending = self.pending()
            if not pending:
                self.summary.settled = True
                return self.summary
            job, claim = self.next_claim(pending)
            if job is None:  # all held by live workers: wait to take over a dead one's
                time.sleep(self.run.poll_s)
                continue
            self.tried.add(job.id)
            with self.queue.holding(claim):
                self.run_job(job, len(self.run.jobs) - len(pending) + 1)
            gc.collect()  # the job's models and tensors, before the next one loads

    # ------------------------------------------------------------------ one job
    def run_job(self, job: Job, number: int) -> None:
        prefix = f"[{number}/{len(self.run.jobs)}]"
        if self.rank.launched:
            prefix = f"[rank {self.rank.rank}] {prefix}"
        self.say(f"{prefix} {job.describe()} ...")
        start = time.time()
        try:
            outputs = self.generate(job)
            rows = self.evaluate(job, outputs, time.time() - start)
            if job.host == "tune" and not self.run.grid.keep_weights:
                shutil.rmtree(self.folder(job) / "weights", ignore_errors=True)
            self.results.append(rows)
        except Exception as exc:  # recorded, and the other jobs go on
            error = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            self.results.append([{"status": "failed", "job": job.id, "time": time.time(),
                                  "describe": job.describe(), "method": job.method,
                                  "error": f"{type(exc).__name__}: {error}",
                                  **self.who()}])  # fmt: skip
            self.summary.failed.append(job.id)
            self.say(f"{prefix} failed: {type(exc).__name__}: {error}")
            return
        self.summary.ran.append(job.id)
        self.say(f"{prefix} done in {time.time() - start:.1f} s")

    def folder(self, job: Job) -> Path:
        return self.run.output / "runs" / job.id

    def who(self) -> dict:
        return {"rank": self.rank.rank, "host": socket.gethostname(), "pid": os.getpid(),
                "device": self.device}

    def generate(self, job: Job) -> dict[str, Path]:
        folder = self.folder(job)
        record = folder / JOB_RECORD
        if record.is_file():  # generated before: score again only
            saved = json.loads(record.read_text())["outputs"]
            outputs = {p: folder / rel for p, rel in saved.items()}
            if all(path.is_file() for path in outputs.values()):
                return outputs
        prepared = with_run_settings(job, folder, self.device, self.run.cache_dir)
        c = prepared.config
        shape = (job.host, self.device, *(getattr(c, k, None) for k in SHAPE_FIELDS))
        check = self.run.memory_check and shape not in self.checked
        host = HOSTS[job.host]
        outputs = host.run(prepared, folder, progress=self.progress, memory_check=check)
        self.checked.add(shape)
        write_json_atomic(record, {
            "job": job.id, "method": job.method, "label": job.label, "video": job.video.path,
            "prompts": list(job.prompts), "values": job.values, **self.who(),
            "outputs": {p: str(path.relative_to(folder)) for p, path in outputs.items()},
        })  # fmt: skip
        return outputs

    def evaluate(self, job: Job, outputs: dict[str, Path], seconds: float) -> list[dict]:
        from ..video_io import read_video
        from .jobs import truth_scene

        rows = []
        for prompt, path in outputs.items():
            frames = read_video(path)  # the gif: exact frames
            scores = self.evaluator.scores(frames, prompt, truth_scene(job.video, prompt))
            f, h, w = frames.shape[:3]
            rows.append({
                "status": "ok", "key": job.keys[prompt], "job": job.id, "label": job.label,
                "method": job.method, "name": job.video.name, "video": job.video.path,
                "source_prompt": job.video.prompt, "prompt": prompt, "params": job.values,
                "frames": f, "height": h, "width": w, "seconds": round(seconds, 3),
                "output": str(path.relative_to(self.run.output)), **scores, **self.who(),
            })  # fmt: skip
        return rows


def run_worker(run: BatchRun, rank: Rank, *, device: str = "cpu", progress: bool = False,
               say: Callable[[str], None] | None = None) -> WorkerSummary:  # fmt: skip
    """Run jobs of ``run`` until none is left; write the report when all are settled."""
    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    worker = _Worker(run, rank, device, progress, say)
    reuse = contextlib.nullcontext()
    if any(HOSTS[job.host].loads_parts for job in run.jobs):
        from ..pipelines.components import reuse_loaded_parts

        reuse = reuse_loaded_parts()
    try:
        with reuse:
            summary = worker.loop()
        if summary.settled:
            entries = worker.results.entries()
            ok = {e["key"] for e in entries if e["status"] == "ok"}
            worker.queue.sweep({j.id for j in run.jobs
                                if all(k in ok for k in j.keys.values())})  # fmt: skip
            summary.report = write_report(run.output, run.jobs, entries, report_title(run))
    finally:
        worker.queue.close()
    return summary
