"""A grid expanded into jobs with stable ids, every job's config resolved and checked (no torch).

A job is one call of a host's API: one edit (a video, an edit prompt, a method, one value of
each axis), or one tuning of a video with all of its edit prompts. Its id is a digest of what
its outputs depend on: the method, the resolved config (without paths, device and
bookkeeping: :data:`NOT_IN_ID`), the source video's bytes and the model's files. The same job
has the same id on every machine and in every rerun; a changed setting, video or model gives a
new id. Each output video has a result key: the job id, its prompt and the evaluation
settings, so changing only the evaluation re-scores the outputs without regenerating them.

Jobs are ordered so that processes starting together take different videos (the video is the
innermost loop): their edits' later jobs then find the source's inversion in the cache.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .grid import SETTINGS, Grid, GridError, VideoEntry, scene_from_caption
from .methods import HOSTS, METHODS

__all__ = ["BATCH_VERSION", "NOT_IN_ID", "Job", "eval_material", "expand", "model_identity",
           "truth_scene", "with_run_settings"]

BATCH_VERSION = 1
# config fields that do not change a job's outputs: left out of its id
NOT_IN_ID = frozenset({"video", "output", "model", "device", "cache_dir", "checkpoint_every",
                       "attention_store", "given"})  # fmt: skip
_SMALL_FILE = 4 * 2**20


@dataclass(frozen=True)
class Job:
    id: str
    index: int  # position in the grid's order
    method: str
    host: str
    video: VideoEntry
    prompts: tuple[str, ...]  # the edit prompts of its outputs
    values: dict  # the grid's values for this job (axes and fixed ones), for labels
    label: str  # the method with the values of its axes (seed left out: replicates)
    prepared: Any  # PreparedTune / PreparedEdit / PreparedT2SEdit; output, device: the worker's
    keys: dict  # prompt -> result key

    def describe(self) -> str:
        n = len(self.prompts)
        prompt = repr(self.prompts[0]) if n == 1 else f"({n} prompts)"
        return f"{self.label} {self.video.name} {prompt}"


def _hash(payload: Any, n: int = 20) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def model_identity(model: str) -> dict:
    """A hub id as given; a local folder by its files' relative paths and sizes, small files
    (configs, tokenizer, scheduler) by content: the same on every machine that has the same
    model, wherever it lies (torch-free)."""
    from ..model_info import describe_model

    info = describe_model(model)
    folder = Path(info.source)
    if not folder.is_dir():
        return {"hub": info.source}
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        size = path.stat().st_size
        entry = [str(path.relative_to(folder)), size]
        if size <= _SMALL_FILE:
            entry.append(hashlib.sha256(path.read_bytes()).hexdigest()[:16])
        files.append(entry)
    return {"files": files}


def eval_material(grid: Grid) -> dict:
    """What the scores depend on besides the video: the suite, the flow, the CLIP model."""
    from ..metrics import METRIC_SUITE_VERSION

    e = grid.eval
    if e.flow == "dis":
        flow = "dis:medium"
    else:
        from ..metrics.inputs import file_digest

        flow = f"raft:large:12:{file_digest(e.raft_weights) if e.raft_weights else 'torch.hub'}"
    return {"suite": METRIC_SUITE_VERSION, "flow": flow, "clip": e.clip}


def _axes(grid: Grid, method: str) -> dict[str, list]:
    """field -> values for one method: top-level settings the host has, then the host's
    parameters, then the method's (the later override the earlier); not the fields the
    method ignores (``edit:plain`` and the seed of INR(TF)'s noise)."""
    m = METHODS[method]
    host = HOSTS[m.host]
    axes = {k: v for k, v in grid.settings.items() if k in host.fields()}
    axes.update(grid.parameters.get(host.name, {}))
    axes.update(grid.parameters.get(method, {}))
    return {k: v for k, v in axes.items() if k not in m.ignores}


def _where(grid: Grid, method: str, name: str) -> str:
    host = METHODS[method].host
    for owner in (method, host):
        if name in grid.parameters.get(owner, {}):
            return f"parameters.{owner}.{name}"
    return name if name in SETTINGS else f"method {method}"


def _config(grid: Grid, method: str, video: VideoEntry, prompts, values: dict):
    """The prepared config of one job; a bad value is one GridError naming its key."""
    m = METHODS[method]
    host = HOSTS[m.host]
    settings = {**host.defaults, **values, **m.fixed}
    try:
        config = host.build(video.path, video.prompt, prompts, grid.model, settings)
        return host.prepare(config)
    except (ValueError, FileNotFoundError) as exc:  # ConfigError, ModelLoadError included
        message = str(exc)
        named = [k for k in values if re.search(rf"\b{re.escape(k)}\b", message)]
        key = _where(grid, method, named[0]) if named else f"{video.where} with {method}"
        raise GridError(f"{grid.path}: {key}: {message}") from None


def _label(method: str, axes: dict[str, list], values: dict) -> str:
    shown = [f"{k}={_short(values[k])}" for k, v in axes.items() if len(v) > 1 and k != "seed"]
    return " ".join([method, *shown])


def _short(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def expand(grid: Grid) -> list[Job]:
    """Every job of the grid, in run order, each config prepared (raises GridError)."""
    from ..config import config_to_dict
    from ..metrics.inputs import file_digest

    try:
        model = model_identity(grid.model)
    except (ValueError, FileNotFoundError) as exc:  # ModelLoadError: no such folder, no hub
        raise GridError(f"{grid.path}: model: {exc}") from None
    digests = {v.path: file_digest(v.path) for v in grid.videos}
    scoring = eval_material(grid)
    jobs: list[Job] = []
    seen: set[str] = set()
    for method in grid.methods:
        host = HOSTS[METHODS[method].host]
        axes = _axes(grid, method)
        for combo in itertools.product(*axes.values()):
            values = dict(zip(axes, combo, strict=True))
            rounds = max(len(v.prompts) for v in grid.videos) if host.per_prompt else 1
            for i in range(rounds):
                for video in grid.videos:
                    if host.per_prompt and i >= len(video.prompts):
                        continue
                    prompts = (video.prompts[i],) if host.per_prompt else video.prompts
                    prepared = _config(grid, method, video, prompts, values)
                    config = {k: v for k, v in config_to_dict(prepared.config).items()
                              if k not in NOT_IN_ID}  # fmt: skip
                    job_id = _hash({"batch": BATCH_VERSION, "method": method, "host": host.name,
                                    "config": config, "video": digests[video.path],
                                    "model": model})  # fmt: skip
                    if job_id in seen:  # e.g. an axis value equal to another's default
                        continue
                    seen.add(job_id)
                    keys = {p: _hash({"job": job_id, "prompt": p, "eval": scoring,
                                      "truth": truth_scene(video, p)}, 32) for p in prompts}
                    jobs.append(Job(job_id, len(jobs), method, host.name, video, prompts,
                                    values, _label(method, axes, values), prepared, keys))
    return jobs


def truth_scene(video: VideoEntry, prompt: str) -> dict | None:
    """The scene an output is scored against (None: no ground truth for this video)."""
    if video.scene is None:
        return None
    from ..synthetic import Scene

    return dict(scene_from_caption(prompt, Scene(**video.scene)).__dict__)


def with_run_settings(job: Job, output: Path, device: str, cache_dir: str | None) -> Any:
    """The job's prepared config with the worker's output folder, device and cache."""
    config = replace(job.prepared.config, output=str(output), device=device)
    if "cache_dir" in HOSTS[job.host].fields():
        config = replace(config, cache_dir=cache_dir)
    return replace(job.prepared, config=config)
