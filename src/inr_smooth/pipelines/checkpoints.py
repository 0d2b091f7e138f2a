"""Tuning checkpoints without pickles: safetensors for tensors, JSON for the rest, digests.

A checkpoint ``checkpoint-N/`` holds

* ``trainable.safetensors`` -- the trained tensors only (not the frozen base model);
* ``optimizer.safetensors`` -- the optimizer's state tensors (``state/<param>/<name>``);
* ``trainer_state.json`` -- the step, the loop's RNG state, the optimizer's other state and
  parameter groups, the learning-rate scheduler's and gradient scaler's state, whatever the
  caller adds (the resolved run config, the loss history), and the SHA-256 of both tensor
  files.

It is written to a temporary folder and renamed, so a ``checkpoint-N`` folder is complete when
it appears. :func:`find_checkpoint` verifies the newest one (files, digests, JSON) and falls
back to the previous complete checkpoint, with a warning, when a file was cut or altered.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..outputs import write_errors

if TYPE_CHECKING:  # torch is imported where tensors are read or written, not to verify
    import torch
    from torch import Tensor

__all__ = [
    "CHECKPOINT_PREFIX",
    "Checkpoint",
    "CheckpointError",
    "checkpoint_folders",
    "find_checkpoint",
    "latest_checkpoint",
    "save_checkpoint",
    "trainable_state_dict",
]

CHECKPOINT_PREFIX = "checkpoint-"
TRAINABLE, OPTIMIZER, STATE = "trainable.safetensors", "optimizer.safetensors", "trainer_state.json"
FORMAT = "inr_smooth.checkpoint/2"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (one line naming the folder)."""


class Checkpoint:
    """A verified checkpoint folder and its ``trainer_state.json``."""

    def __init__(self, path: Path, state: dict):
        self.path = path
        self.state = state

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def extra(self) -> dict:
        return self.state.get("extra", {})

    def trainable(self) -> dict[str, Tensor]:
        from safetensors.torch import load_file

        return load_file(self.path / TRAINABLE)

    def optimizer_state(self) -> dict:
        from safetensors.torch import load_file

        return _unflatten(load_file(self.path / OPTIMIZER), self.state["optimizer"])


def trainable_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """The parameters that require gradients, detached and contiguous, on the CPU."""
    return {
        name: p.detach().to("cpu").contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def checkpoint_folders(output_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders in ``output_dir``, newest (highest N) first."""
    found = []
    for path in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(CHECKPOINT_PREFIX) :]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return [path for _, path in sorted(found, reverse=True)]


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint folder with the highest step in ``output_dir``, if any (unverified)."""
    folders = checkpoint_folders(output_dir)
    return folders[0] if folders else None


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _flatten(optimizer_state: dict) -> tuple[dict[str, Tensor], dict]:
    """Split an optimizer ``state_dict`` into tensors and a JSON-able rest."""
    import torch

    tensors, scalars = {}, {}
    for index, entries in optimizer_state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{index}/{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"scalars": scalars, "param_groups": optimizer_state["param_groups"]}


def _unflatten(tensors: dict[str, Tensor], rest: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split("/", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entries in rest["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    return {"state": state, "param_groups": rest["param_groups"]}


def save_checkpoint(output_dir: Path, step: int, model, optimizer, *, generator,
                    lr_scheduler=None, scaler=None, extra: dict | None = None) -> Path:  # fmt: skip
    """Write ``checkpoint-<step>`` atomically (see the module docstring); return it."""
    from safetensors.torch import save_file

    final = Path(output_dir) / f"{CHECKPOINT_PREFIX}{step}"
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with write_errors(final):
            tmp.mkdir(parents=True)
            save_file(trainable_state_dict(model), tmp / TRAINABLE)
            tensors, rest = _flatten(optimizer.state_dict())
            save_file(tensors, tmp / OPTIMIZER)
            state = {
                "format": FORMAT, "step": step, "rng": generator.get_state().tolist(),
                "optimizer": rest,
                "lr_scheduler": _jsonable_scheduler(lr_scheduler),
                "scaler": scaler.state_dict() if scaler is not None else None,
                "extra": extra or {},
                "files": {name: _digest(tmp / name) for name in (TRAINABLE, OPTIMIZER)},
            }  # fmt: skip
            (tmp / STATE).write_text(json.dumps(state))
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _jsonable_scheduler(lr_scheduler) -> dict | None:
    # LambdaLR stores its functions as None: the caller rebuilds the same schedule
    return None if lr_scheduler is None else lr_scheduler.state_dict()


def _verify(path: Path) -> Checkpoint:
    """The checkpoint at ``path``, or CheckpointError saying what is wrong with it."""
    try:
        state = json.loads((path / STATE).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path / STATE} is unreadable ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an inr-smooth checkpoint of format {FORMAT!r}")
    for name, digest in state.get("files", {}).items():
        if not (path / name).is_file():
            raise CheckpointError(f"{path / name} is missing")
        if _digest(path / name) != digest:
            raise CheckpointError(f"{path / name} is cut or altered (checksum mismatch)")
    return Checkpoint(path, state)


def find_checkpoint(output_dir: Path) -> Checkpoint | None:
    """The newest complete checkpoint in ``output_dir``; a newer broken one is skipped with a
    warning that names it. None when there is none at all; CheckpointError when every
    checkpoint is broken."""
    folders = checkpoint_folders(output_dir)
    problems = []
    for path in folders:
        try:
            found = _verify(path)
        except CheckpointError as exc:
            problems.append(str(exc))
            continue
        for problem in problems:
            warnings.warn(f"{problem}: resuming from {path.name} instead", stacklevel=2)
        return found
    if problems:
        raise CheckpointError(f"no usable checkpoint in {output_dir}: {'; '.join(problems)}")
    return None


def restore(checkpoint: Checkpoint, model, optimizer, *, generator, lr_scheduler=None,
            scaler=None) -> int:  # fmt: skip
    """Load a verified checkpoint into the model, optimizer, RNG and schedules; its step."""
    import torch

    tensors = checkpoint.trainable()
    params = dict(model.named_parameters())
    unexpected = sorted(set(tensors) - {n for n, p in params.items() if p.requires_grad})
    if unexpected:
        raise CheckpointError(
            f"{checkpoint.path} holds tensors this model does not train: {unexpected[:3]}"
        )
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)
    optimizer.load_state_dict(checkpoint.optimizer_state())
    generator.set_state(torch.tensor(checkpoint.state["rng"], dtype=torch.uint8))
    if lr_scheduler is not None and checkpoint.state.get("lr_scheduler"):
        lr_scheduler.load_state_dict(checkpoint.state["lr_scheduler"])
    if scaler is not None and checkpoint.state.get("scaler"):
        scaler.load_state_dict(checkpoint.state["scaler"])
    return checkpoint.step


def prune(output_dir: Path, keep: int, newest: Path) -> None:
    """Delete all but the ``keep`` newest checkpoints (``newest`` always stays)."""
    older = [p for p in checkpoint_folders(output_dir) if p != newest]
    for stale in older[max(keep - 1, 0) :]:
        shutil.rmtree(stale, ignore_errors=True)
