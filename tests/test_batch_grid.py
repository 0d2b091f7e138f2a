"""`inr-smooth batch` without running a job: the grid file, job ids, claims, results.jsonl."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from inr_smooth.batch import GridError, expand, load_grid
from inr_smooth.batch.claims import ClaimQueue
from inr_smooth.batch.results import BatchResults
from inr_smooth.cli import main
from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import write_video

RED = Scene()
YELLOW = Scene(color="yellow", shape="square", motion="left", background_color="purple")


def write_grid(folder, **changes):
    """Two synthetic clips and a grid of them; ``changes`` replace (None: remove) keys."""
    for name, scene in (("red.gif", RED), ("yellow.gif", YELLOW)):
        if not (folder / name).exists():
            write_video(folder / name, render(scene, 3, 64))
    grid = {
        "model": "mini",
        "videos": [
            {"path": "red.gif", "prompt": RED.caption, "scene": dict(RED.__dict__)},
            {"path": "yellow.gif", "prompt": YELLOW.caption,
             "prompts": [YELLOW.edited(color="green").caption]},
        ],
        "prompts": [RED.edited(color="green").caption, RED.edited(shape="diamond").caption],
        "methods": ["tune:inr", "edit:plain", "edit:inr"],
        "parameters": {"edit:inr": {"gamma": [0.5, 1.0]}, "tune": {"learning_rate": "1e-4"}},
        "frames": 3, "stride": 1, "steps": 1, "inference_steps": 2, "seed": 0,
        "eval": {"clip": False, "flow": "dis"},
    }  # fmt: skip
    for key, value in changes.items():
        if value is None:
            grid.pop(key)
        else:
            grid[key] = value
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def test_a_grid_expands_into_jobs_in_order_with_labels_and_checked_configs(tmp_path):
    jobs = expand(load_grid(write_grid(tmp_path)))
    # tune: one job per video with all its prompts; edit: one per prompt; videos innermost
    assert [(j.method, j.video.name, len(j.prompts)) for j in jobs[:2]] == [
        ("tune:inr", "red.gif", 2), ("tune:inr", "yellow.gif", 1)]  # fmt: skip
    edits = [(j.label, j.video.name, j.prompts[0]) for j in jobs[2:5]]
    assert edits == [("edit:plain", "red.gif", RED.edited(color="green").caption),
                     ("edit:plain", "yellow.gif", YELLOW.edited(color="green").caption),
                     ("edit:plain", "red.gif", RED.edited(shape="diamond").caption)]
    assert [j.label for j in jobs[5:]] == ["edit:inr inversion_weight=0.5"] * 3 + [
        "edit:inr inversion_weight=1.0"] * 3  # fmt: skip
    assert len(jobs) == 11 and len({j.id for j in jobs}) == 11
    c = jobs[0].prepared.config
    assert (c.smoothing, c.learning_rate, c.frames, c.steps, c.checkpoint_every) == (
        "inr", 1e-4, 3, 1, 0)  # the batch's own default: no checkpoints  # fmt: skip
    assert jobs[2].prepared.config.inversion_weight == 0.0  # edit:plain fixes gamma
    assert jobs[8].prepared.config.inversion_weight == 1.0 and c.size == 64  # mini's native
    assert sum(len(j.keys) for j in jobs) == 12  # one result per output video


def test_job_ids_follow_content_and_settings_not_paths(tmp_path):
    (tmp_path / "a").mkdir()
    first = expand(load_grid(write_grid(tmp_path / "a")))
    other = tmp_path / "b"
    other.mkdir()
    shutil.copy(tmp_path / "a" / "red.gif", other / "red.gif")
    shutil.copy(tmp_path / "a" / "yellow.gif", other / "yellow.gif")
    moved = expand(load_grid(write_grid(other)))
    assert [j.id for j in moved] == [j.id for j in first]  # same bytes elsewhere: same jobs
    assert [j.keys for j in moved] == [j.keys for j in first]
    changed = expand(load_grid(write_grid(other, steps=2)))
    tune_ids = {j.id for j in first if j.host == "tune"}
    assert not tune_ids & {j.id for j in changed}  # the tune jobs are new ...
    assert {j.id for j in first if j.host == "edit"} <= {j.id for j in changed}  # edits: not
    scored = expand(load_grid(write_grid(other, eval={"clip": False, "flow": "raft"})))
    assert [j.id for j in scored] == [j.id for j in first]  # another evaluation: same jobs,
    assert scored[0].keys != first[0].keys  # ... scored again


def test_a_seed_axis_multiplies_only_the_methods_that_use_a_seed(tmp_path):
    jobs = expand(load_grid(write_grid(tmp_path, seed=[0, 1])))
    count = {m: sum(j.method == m for j in jobs) for m in ("tune:inr", "edit:plain", "edit:inr")}
    assert count == {"tune:inr": 4, "edit:plain": 3, "edit:inr": 12}  # gamma 0: no noise seed
    assert {j.prepared.config.seed for j in jobs if j.method == "edit:inr"} == {0, 1}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"methodz": ["edit:inr"]}, "grid.yaml: methodz: unknown key"),
        ({"model": None}, "grid.yaml: model: required"),
        ({"model": "./no-such-model"}, "grid.yaml: model: model folder not found"),
        ({"methods": ["edit:inr", "edit:magic"]}, "methods[1]: unknown method 'edit:magic'"),
        ({"videos": [{"path": "red.gif"}]}, "videos[0].prompt: required"),
        ({"videos": [{"path": "red.gif", "prompt": "x", "fps": 3}]}, "videos[0].fps: unknown key"),
        ({"prompts": None}, "videos[0].prompts: no edit prompts"),
        ({"parameters": {"edit:plain": {"gamma": 0.5}}},
         "parameters.edit:plain.gamma: edit:plain fixes inversion_weight = 0.0"),
        ({"parameters": {"edit:plain": {"seed": [1, 2]}}},
         "parameters.edit:plain.seed: the outputs of edit:plain do not depend on it"),
        ({"parameters": {"edit:inr": {"gama": 0.5}}}, "parameters.edit:inr.gama: not a EditConfig"),
        ({"parameters": {"tune:none": {"steps": 2}}}, "parameters.tune:none: not a method or host"),
        ({"parameters": {"edit": {"output": "x"}}}, "parameters.edit.output: set by the batch"),
        ({"parameters": {"edit:inr": {"gamma": [0.5, 2.0]}}},
         "parameters.edit:inr.inversion_weight: inversion_weight (gamma) must be in [0, 1]"),
        ({"frames": 1}, "grid.yaml: frames: frames must be at least 2, got 1"),
        ({"eval": {"flow": "farneback"}}, "eval.flow: expected raft or dis"),
        ({"videos": [{"path": "red.gif", "prompt": RED.caption, "scene": {"color": "pink"}}]},
         "videos[0].scene: color must be one of"),
        ({"videos": [{"path": "red.gif", "prompt": RED.caption, "prompts": ["a cat"],
                      "scene": dict(RED.__dict__)}]},
         "videos[0].prompts[0]: 'a cat' is not a caption of the synthetic world"),
    ],
)
def test_a_malformed_grid_is_one_line_naming_the_key(tmp_path, changes, message):
    with pytest.raises(GridError) as info:
        expand(load_grid(write_grid(tmp_path, **changes)))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_missing_video_or_a_bad_grid_fails_at_the_cli_before_any_job(tmp_path, capsys):
    grid = write_grid(tmp_path)
    (tmp_path / "yellow.gif").unlink()
    out = tmp_path / "out"
    assert main(["batch", str(grid), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("inr-smooth batch: error: ") and "\n" not in err
    assert "videos[1].path: video not found: " in err and not out.exists()
    (tmp_path / "grid.yaml").write_text("model: mini\nvideos: [\n")
    assert main(["batch", str(grid), "--output", str(out)]) == 2
    assert "grid.yaml: not valid YAML at line" in capsys.readouterr().err and not out.exists()
    (out / "mine").mkdir(parents=True)
    assert main(["batch", str(write_grid(tmp_path)), "--output", str(out)]) == 2
    assert "not empty and holds no batch" in capsys.readouterr().err


def test_the_dry_run_lists_the_jobs_without_torch(tmp_path):
    grid = write_grid(tmp_path)
    code = ("import sys; from inr_smooth.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, "batch", str(grid), "--output",
                           str(tmp_path / "out"), "--dry-run"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "11 jobs" and all(" to run " in line for line in lines[:-1])


# ---------------------------------------------------------------------- claims
def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_one_process_wins_a_claim_and_a_dead_claimants_job_is_taken_over(tmp_path):
    first, second = ClaimQueue(tmp_path, rank=0), ClaimQueue(tmp_path, rank=1)
    claim = first.try_claim("job", None)
    assert claim is not None and claim.path.name == "job.0.json"
    assert second.try_claim("job", None) is None  # the name exists: the link fails
    assert second.try_claim("job", second.snapshot()["job"]) is None  # live: this pid runs
    # a claimant that died on this host: its pid is gone, the next attempt takes over
    owner = json.loads(claim.path.read_text())
    claim.path.write_text(json.dumps({**owner, "pid": _dead_pid()}))
    taken = second.try_claim("job", second.snapshot()["job"])
    assert taken is not None and taken.attempt == 1 and not claim.path.exists()
    # a reused pid (alive, started at another time) is not the claimant either
    taken.path.write_text(json.dumps({**owner, "pid_start": "1"}))
    assert first.try_claim("job", first.snapshot()["job"]).attempt == 2
    # two processes that both saw attempt 2 as stale: one wins attempt 3
    stale = first.snapshot()["job"]
    stale[0][1].write_text(json.dumps({**owner, "pid": _dead_pid()}))
    assert first.try_claim("job", stale).attempt == 3 and second.try_claim("job", stale) is None


def test_a_killed_child_not_yet_reaped_is_no_claimant(tmp_path):
    """A zombie keeps its pid until its parent reaps it (``--processes`` waits on another
    child): its claim must be stale all the same."""
    from inr_smooth.batch.claims import process_start

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    queue = ClaimQueue(tmp_path)
    owner = {**queue.me, "pid": child.pid, "pid_start": process_start(child.pid)}
    (tmp_path / "job.0.json").write_text(json.dumps(owner))
    assert queue.try_claim("job", queue.snapshot()["job"]) is None  # alive: live
    child.kill()
    deadline = time.time() + 10
    while process_start(child.pid) != "" and time.time() < deadline:
        time.sleep(0.01)
    assert os.path.exists(f"/proc/{child.pid}")  # a zombie: not reaped yet
    assert queue.try_claim("job", queue.snapshot()["job"]).attempt == 1
    child.wait()


def test_claims_of_other_hosts_live_while_their_lease_is_renewed(tmp_path):
    queue = ClaimQueue(tmp_path, lease_s=60)
    path = tmp_path / "job.0.json"
    path.write_text(json.dumps({"host": "elsewhere", "boot": "x", "pid": 1}))
    assert queue.try_claim("job", queue.snapshot()["job"]) is None  # touched just now
    old = time.time() - 120
    os.utime(path, (old, old))
    assert queue.try_claim("job", queue.snapshot()["job"]).attempt == 1  # lease expired
    claim = queue.snapshot()["job"][0]
    heart = ClaimQueue(tmp_path, lease_s=0.2)
    held = heart.try_claim("other", None)
    before = held.path.stat().st_mtime
    with heart.holding(held):
        time.sleep(0.3)
        assert held.path.stat().st_mtime > before  # the heartbeat touched it
    assert not held.path.exists() and claim[1].exists()  # released at the end of the block


# ---------------------------------------------------------------------- results.jsonl
def _append_many(path, worker):
    results = BatchResults(path)
    for i in range(100):
        results.append([{"status": "ok", "key": f"{worker}-{i}", "pad": "x" * 5000}])


def test_appends_of_concurrent_processes_and_after_a_cut_line_stay_whole(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"status": "ok", "key": "cut')  # a writer killed mid-line
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(path, w)) for w in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    entries = BatchResults(path).entries()
    assert len(entries) == 200 and len({e["key"] for e in entries}) == 200
    assert len(path.read_text().splitlines()) == 201  # the cut line alone, then whole lines


# ---------------------------------------------------------------------- a host of our own
@dataclasses.dataclass(frozen=True)
class FakeConfig:
    video: str = ""
    source_prompt: str = ""
    prompt: str = ""
    model: str = ""
    output: str = ""
    device: str = "cpu"
    fail: bool = False
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class FakePrepared:
    config: FakeConfig


def _fake_run(prepared, output, *, progress, memory_check):
    """Render the edit prompt's scene (no model): a host in the registry's terms."""
    from inr_smooth.batch.grid import scene_from_caption

    c = prepared.config
    if c.fail:
        raise RuntimeError("this job fails on purpose")
    output.mkdir(parents=True, exist_ok=True)
    path = write_video(output / "out.gif", render(scene_from_caption(c.prompt, RED), 3, 32))
    return {c.prompt: path}


@pytest.fixture
def fake_methods():
    from inr_smooth.batch import methods
    from inr_smooth.config import config_from_dict

    def build(video, source_prompt, prompts, model, values):
        return config_from_dict(FakeConfig, {**values, "video": video, "model": model,
                                             "source_prompt": source_prompt, "prompt": prompts[0]})

    host = methods.Host("fake", FakeConfig, build, FakePrepared, _fake_run, per_prompt=True,
                        loads_parts=False)
    methods.register_host(host)
    methods.register_method(methods.Method("fake:ok", "fake"))
    methods.register_method(methods.Method("fake:bad", "fake", {"fail": True}))
    yield
    for name in ("fake:ok", "fake:bad"):
        methods.METHODS.pop(name)
    methods.HOSTS.pop("fake")


def test_a_registered_host_runs_failures_are_recorded_and_retried_on_asking(
    tmp_path, capsys, fake_methods
):
    grid = write_grid(tmp_path, methods=["fake:ok", "fake:bad"], parameters={}, steps=None,
                      frames=None, stride=None, inference_steps=None)  # fmt: skip
    out = tmp_path / "out"
    assert main(["batch", str(grid), "--output", str(out), "--threads", "1"]) == 2
    captured = capsys.readouterr()
    assert "3 of 6 jobs failed" in captured.err and "--retry-failed" in captured.err
    lines = BatchResults(out / "results.jsonl").entries()
    ok = [e for e in lines if e["status"] == "ok"]
    assert len(ok) == 3 and {e["method"] for e in ok} == {"fake:ok"}
    # an exact rendering of the edited scene is scored as perfect by the ground truth
    red = [e for e in ok if e["name"] == "red.gif"]
    assert all(e["color_accuracy"] == 1 and e["shape_iou"] == 1 for e in red)
    assert ["color_accuracy" in e for e in ok if e["name"] == "yellow.gif"] == [False]
    table = (out / "table.md").read_text()
    assert "| fake:ok | 3 |" in table and "3 failed job(s)" in table
    assert "RuntimeError: this job fails on purpose" in table
    # a rerun skips finished and failed jobs; --retry-failed runs the failed ones again
    assert main(["batch", str(grid), "--output", str(out), "--threads", "1"]) == 2
    assert len(BatchResults(out / "results.jsonl").entries()) == 6
    assert main(["batch", str(grid), "--output", str(out), "--threads", "1",
                 "--retry-failed"]) == 2  # fmt: skip
    entries = BatchResults(out / "results.jsonl").entries()
    assert len(entries) == 9 and sum(e["status"] == "failed" for e in entries) == 6


def test_raft_on_frames_it_cannot_take_fails_before_any_job(tmp_path, capsys):
    from inr_smooth.cli import main
    from inr_smooth.synthetic import Scene, render
    from inr_smooth.video_io import write_video

    video = write_video(tmp_path / "clip.gif", render(Scene(), frames=4, size=64))
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"model: mini\nvideos:\n  - path: {video}\n    prompt: {Scene().caption}\n"
                    "prompts: [a green circle]\nmethods: [tune:controlvideo]\n")  # fmt: skip
    assert main(["batch", str(grid), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "eval.flow raft needs frames of at least 128 px" in err and "flow: dis" in err
    assert not (tmp_path / "out").exists()
