"""`inr-smooth batch` running a tiny grid on inr-smooth-mini with two CPU processes: both
share the jobs, one is killed mid-job and the other takes its job over, then that one is
killed too and a rerun runs only the unfinished jobs; the scores are those of one process.
And the model reuse that every worker relies on.

Worker processes pay ~10 s of imports each on this machine, so one two-process run does all
of it, while the one-process run goes on in this process meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
import yaml

from inr_smooth.cli import main
from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import write_video

RED = Scene()
YELLOW = Scene(color="yellow", shape="square", motion="left", background_color="purple")
SCORES = ("color_accuracy", "shape_iou", "color_flicker", "motion_ratio", "trajectory_error",
          "warp_error", "flow_magnitude")  # fmt: skip
FLAGS = ["--threads", "1", "--skip-memory-check", "--poll", "0.1"]
N_JOBS = 6  # 2 tunings, 2 plain edits, 2 INR edits


def _grid(folder):
    for name, scene in (("red.gif", RED), ("yellow.gif", YELLOW)):
        write_video(folder / name, render(scene, 3, 64))
    videos = [{"path": name, "prompt": scene.caption, "scene": dict(scene.__dict__),
               "prompts": [scene.edited(color="green", shape="triangle").caption]}
              for name, scene in (("red.gif", RED), ("yellow.gif", YELLOW))]  # fmt: skip
    grid = {"model": "mini", "videos": videos, "methods": ["tune:inr", "edit:plain", "edit:inr"],
            "parameters": {"tune": {"learning_rate": 1e-4, "gradient_checkpointing": False}},
            "frames": 3, "stride": 1, "steps": 1, "inference_steps": 2, "seed": 0,
            "eval": {"clip": False, "flow": "dis"}}  # fmt: skip
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def _lines(folder):
    path = folder / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _claims(folder):
    """{rank: (pid, job)} of the claim files now in ``folder``."""
    held = {}
    for path in (folder / "claims").glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):  # released meanwhile
            owner = json.loads(path.read_text())
            held[owner["rank"]] = (owner["pid"], path.name.split(".")[0])
    return held


def _wait(what, condition, proc):
    deadline = time.time() + 180
    while time.time() < deadline:
        found = condition()
        if found:
            return found
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    raise AssertionError(f"gave up waiting for {what}: {proc.poll()=}")


def _catch_in_a_job(rank, folder, *, kill: bool, not_before: str | None = None):
    """Stop the process of ``rank`` while it holds the claim of a job that it has not recorded
    (and, with ``not_before``, only once that job is recorded), then SIGKILL it (``kill``) or
    leave it stopped: (pid, job), or None when it holds none now. Stopped first, so that it
    cannot record the job or claim the next one between the check and the kill."""
    held = _claims(folder).get(rank)
    if held is None or (not_before and not_before not in {e["job"] for e in _lines(folder)}):
        return None
    pid, _ = held
    os.kill(pid, signal.SIGSTOP)
    held = _claims(folder).get(rank)
    if held and held[0] == pid and held[1] not in {e["job"] for e in _lines(folder)}:
        if kill:
            os.kill(pid, signal.SIGKILL)
        return held
    os.kill(pid, signal.SIGCONT)
    return None


def _kill_twice(proc, folder, seen: dict):
    """Hold rank 0 stopped in its first job while rank 1 finishes a job and is killed in its
    next one; then, once rank 0 has taken that job over and finished it, kill rank 0 in its
    next job. (Claims name their rank. Holding rank 0 keeps the order fixed: unheld, rank 0
    could run every edit while rank 1 tunes, and take over the grid's last job.)"""
    try:
        def rank1_killed():
            if any(e["rank"] == 1 for e in _lines(folder)):
                return _catch_in_a_job(1, folder, kill=True)
            return None

        held, _ = _wait("rank 0 to start a job",
                        lambda: _catch_in_a_job(0, folder, kill=False), proc)  # fmt: skip
        try:
            pid1, seen["taken_over"] = _wait("rank 1 to finish a job", rank1_killed, proc)
        finally:
            os.kill(held, signal.SIGCONT)
        pid0, _ = _wait("rank 0 to take the job over",
                        lambda: _catch_in_a_job(0, folder, kill=True,
                                                not_before=seen["taken_over"]), proc)  # fmt: skip
        pids = {0: pid0, 1: pid1}
        seen["output"] = proc.communicate(timeout=60)[0]
        seen["returncode"] = proc.returncode
        seen["finished"] = [e["key"] for e in _lines(folder)]
        seen["pids"] = pids
    except BaseException as exc:
        seen["error"] = exc
        proc.kill()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    folder = tmp_path_factory.mktemp("batch")
    grid = _grid(folder)
    started = time.time()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    two = subprocess.Popen(
        [sys.executable, "-m", "inr_smooth", "batch", str(grid), "--output",
         str(folder / "two"), "--processes", "2", *FLAGS],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen: dict = {}
    killer = threading.Thread(target=_kill_twice, args=(two, folder / "two", seen))
    killer.start()
    assert main(["batch", str(grid), "--output", str(folder / "one"), *FLAGS]) == 0
    killer.join()
    if "error" in seen:
        raise seen["error"]
    assert main(["batch", str(grid), "--output", str(folder / "two"), *FLAGS]) == 0
    print(f"batch runs: {time.time() - started:.1f} s")
    return folder, seen


def _scores(folder):
    return {e["key"]: {k: e[k] for k in SCORES} for e in _lines(folder)}


def test_one_process_runs_the_grid_and_reports_by_method(runs):
    folder, _ = runs
    one = _lines(folder / "one")
    assert len(one) == N_JOBS and all(e["status"] == "ok" for e in one)  # one video per job
    assert len(list((folder / "one" / "runs").glob("*/batch-job.json"))) == N_JOBS
    assert not list((folder / "one" / "runs").glob("*/weights"))  # tuned weights dropped
    assert not list((folder / "one" / "claims").glob("*.json"))  # all released
    table = (folder / "one" / "table.md").read_text()
    for row in ("| tune:inr | 2 |", "| edit:plain | 2 |", "| edit:inr | 2 |"):
        assert row in table
    assert (folder / "one" / "chart.png").stat().st_size > 0
    csv = (folder / "one" / "results.csv").read_text().splitlines()
    assert len(csv) == 1 + N_JOBS and csv[0].startswith("key,job,label,method")
    cached = list((folder / "one" / "inversion-cache").glob("*.safetensors"))
    assert len(cached) == 2  # one inversion per source clip, shared by its two edits


def test_two_processes_share_the_jobs_and_one_takes_over_a_killed_ones_job(runs):
    folder, seen = runs
    assert seen["returncode"] == 2 and "rerun the same command" in seen["output"]
    before = [e for e in _lines(folder / "two")][: len(seen["finished"])]
    assert {e["rank"] for e in before} == {0, 1}  # both processes ran jobs
    taken = [e for e in before if e["job"] == seen["taken_over"]]
    assert [e["pid"] for e in taken] == [seen["pids"][0]]  # rank 0 redid rank 1's job


def test_after_the_kills_the_rerun_runs_only_the_unfinished_jobs_once(runs):
    folder, seen = runs
    lines = _lines(folder / "two")
    done = len(seen["finished"])
    assert 0 < done < N_JOBS, "the processes were not killed mid-grid"
    rerun = lines[done:]
    assert {e["pid"] for e in rerun} == {os.getpid()}  # the rest ran here, in the rerun
    assert len(lines) == N_JOBS and len({e["key"] for e in lines}) == N_JOBS  # each once
    assert _scores(folder / "two") == _scores(folder / "one")  # bit for bit
    assert not list((folder / "two" / "claims").glob("*.json"))  # the stale one taken over


def test_a_second_rerun_runs_nothing_and_needs_no_model(runs, capsys):
    folder, _ = runs
    before = (folder / "one" / "results.jsonl").read_text()
    assert main(["batch", str(folder / "grid.yaml"), "--output", str(folder / "one")]) == 0
    assert f"ran 0 of {N_JOBS} jobs" in capsys.readouterr().out
    assert (folder / "one" / "results.jsonl").read_text() == before


# ---------------------------------------------------------------------- model reuse
def test_reused_parts_share_the_frozen_models_and_copy_the_unet(tiny_sd_folder, one_thread):
    from inr_smooth.models import inflate_unet
    from inr_smooth.pipelines.components import load_parts, reuse_loaded_parts

    fresh = load_parts(str(tiny_sd_folder))
    with reuse_loaded_parts():
        a = load_parts(str(tiny_sd_folder))
        inflate_unet(a.unet)  # in place: the next job must not see it
        with torch.no_grad():
            next(a.unet.parameters()).add_(1.0)
        b = load_parts(str(tiny_sd_folder))
    assert a.text_encoder is b.text_encoder and a.vae is b.vae and a.tokenizer is b.tokenizer
    assert a.unet is not b.unet and a.scheduler is not b.scheduler
    expected = fresh.unet.state_dict()
    assert b.unet.state_dict().keys() == expected.keys()
    assert all(torch.equal(b.unet.state_dict()[k], v) for k, v in expected.items())
    c = load_parts(str(tiny_sd_folder))  # outside the block: loaded again
    assert c.text_encoder is not a.text_encoder


def test_an_edit_with_reused_parts_is_bit_identical(tiny_sd_folder, tmp_path, one_thread):
    from inr_smooth.pipelines.components import reuse_loaded_parts
    from inr_smooth.pipelines.edit import EditConfig, edit

    write_video(tmp_path / "clip.gif", render(RED, 3, 16))

    def run(name):
        config = EditConfig(video=str(tmp_path / "clip.gif"), source_prompt=RED.caption,
                            prompt="a green square", model=str(tiny_sd_folder),
                            output=str(tmp_path / name), frames=3, inference_steps=2)
        return edit(config, progress=False, memory_check=False).latents

    plain = run("plain")
    with reuse_loaded_parts():
        first, second = run("first"), run("second")
    assert torch.equal(first, plain) and torch.equal(second, plain)
