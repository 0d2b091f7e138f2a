"""The tuning loop: resume equivalence, Ctrl-C checkpoints, trainable-only checkpoints."""

import os
import signal
from types import SimpleNamespace

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from inr_smooth.pipelines.trainer import LoopSettings, latest_checkpoint, run_tuning_loop
from inr_smooth.pipelines.training import training_step


class StandIn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.frozen = torch.nn.Conv3d(4, 4, 1)
        self.tuned = torch.nn.Conv3d(4, 4, 3, padding=1)
        self.frozen.requires_grad_(False)

    def forward(self, sample, timestep, encoder_hidden_states):
        return SimpleNamespace(sample=self.tuned(self.frozen(sample)))


SCHEDULER = DDPMScheduler(num_train_timesteps=1000)
LATENTS = torch.randn(1, 4, 4, 6, 6, generator=torch.Generator().manual_seed(1))
EMBEDS = torch.zeros(1, 2, 8)


def step_fn(model, generator):
    return training_step(model, LATENTS, EMBEDS, SCHEDULER, smoothing="inr", generator=generator)


def settings(steps, every=0):
    return LoopSettings(steps=steps, learning_rate=1e-2, checkpoint_every=every, seed=7)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    straight = run_tuning_loop(StandIn(), step_fn, settings(6), tmp_path / "a", progress=False)
    run_tuning_loop(StandIn(), step_fn, settings(3, every=3), tmp_path / "b", progress=False)
    assert latest_checkpoint(tmp_path / "b").name == "checkpoint-3"
    resumed = run_tuning_loop(
        StandIn(), step_fn, settings(6), tmp_path / "b", resume=True, progress=False
    )
    for (name, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_only_trainable_parameters_change_and_are_checkpointed(tmp_path):
    before = {k: v.clone() for k, v in StandIn().state_dict().items()}
    model = run_tuning_loop(StandIn(), step_fn, settings(2, every=2), tmp_path, progress=False)
    after = model.state_dict()
    assert torch.equal(after["frozen.weight"], before["frozen.weight"])
    assert not torch.equal(after["tuned.weight"], before["tuned.weight"])
    saved = load_file(tmp_path / "checkpoint-2" / "trainable.safetensors")
    assert sorted(saved) == ["tuned.bias", "tuned.weight"]
    assert torch.equal(saved["tuned.weight"], after["tuned.weight"])


def test_ctrl_c_saves_a_loadable_checkpoint_at_a_step_boundary(tmp_path):
    calls = []

    def interrupting_step(model, generator):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step
        return step_fn(model, generator)

    with pytest.raises(KeyboardInterrupt):
        run_tuning_loop(StandIn(), interrupting_step, settings(10), tmp_path, progress=False)
    assert len(calls) == 2  # the second step was completed, then the loop stopped
    assert latest_checkpoint(tmp_path).name == "checkpoint-2"
    assert not list(tmp_path.glob("*.tmp"))
    straight = run_tuning_loop(StandIn(), step_fn, settings(4), tmp_path / "x", progress=False)
    resumed = run_tuning_loop(
        StandIn(), step_fn, settings(4), tmp_path, resume=True, progress=False
    )
    assert torch.equal(straight.tuned.weight, resumed.tuned.weight)


def test_old_checkpoints_are_pruned(tmp_path):
    run_tuning_loop(StandIn(), step_fn, settings(4, every=1), tmp_path, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-3", "checkpoint-4"]


def test_validation_callback_runs_every_n_steps(tmp_path):
    seen = []
    run_tuning_loop(
        StandIn(),
        step_fn,
        settings(4),
        tmp_path,
        validate_every=2,
        validate=lambda step, model: seen.append((step, model.training)),
        progress=False,
    )
    assert seen == [(2, False), (4, False)]


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint-N folder"):
        run_tuning_loop(StandIn(), step_fn, settings(2), tmp_path, resume=True, progress=False)
    frozen = StandIn().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        run_tuning_loop(frozen, step_fn, settings(2), tmp_path, progress=False)


def test_cast_frozen_stores_only_frozen_weights_in_low_precision():
    from inr_smooth.pipelines.trainer import cast_frozen_

    model = cast_frozen_(StandIn(), torch.bfloat16)
    assert {p.dtype for p in model.frozen.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.tuned.parameters()} == {torch.float32}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = step_fn(model, torch.Generator().manual_seed(0))
    out.loss.backward()
    assert all(
        p.grad is not None and p.grad.dtype == torch.float32 for p in model.tuned.parameters()
    )
