"""The tuning loop: accelerate, checkpoints of the trainable weights only, resume, Ctrl-C.

A checkpoint ``checkpoint-N/`` holds ``trainable.safetensors`` (the trained tensors only,
not the frozen base model), the optimizer and learning-rate scheduler state written by
accelerate, and ``trainer_state.json`` (step, RNG state). It is written to a temporary folder
and renamed, so an interruption never leaves a half-written checkpoint. Resuming restores
all of it, so that a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from .training import StepOutput

__all__ = [
    "LoopSettings",
    "cast_frozen_",
    "latest_checkpoint",
    "run_tuning_loop",
    "trainable_state_dict",
]

CHECKPOINT_PREFIX = "checkpoint-"


@dataclass(frozen=True)
class LoopSettings:
    steps: int
    learning_rate: float = 3e-5
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    use_8bit_adam: bool = False
    checkpoint_every: int = 100  # 0: only on interruption
    keep_checkpoints: int = 2
    seed: int = 33


def cast_frozen_(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Store the frozen parameters in ``dtype`` (bf16/fp16 under autocast), in place.

    Trainable parameters stay float32 for the optimizer. Under autocast the frozen weights
    were cast to the low precision at every use anyway (and again in each gradient-checkpoint
    recompute); stored that way they take half the memory and skip those copies.
    """
    for param in model.parameters():
        if not param.requires_grad:
            param.data = param.data.to(dtype)
    return model


def trainable_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """The parameters that require gradients, detached and contiguous, on the CPU."""
    return {
        name: p.detach().to("cpu").contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint folder with the highest step in ``output_dir``, if any."""
    found = []
    for path in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(CHECKPOINT_PREFIX) :]
        if path.is_dir() and suffix.isdigit():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


def _make_optimizer(params, settings: LoopSettings):
    kwargs = {
        "lr": settings.learning_rate,
        "betas": settings.adam_betas,
        "weight_decay": settings.adam_weight_decay,
        "eps": settings.adam_epsilon,
    }
    if settings.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ValueError("use_8bit_adam needs bitsandbytes: pip install bitsandbytes") from None
        return bnb.optim.AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


class _Checkpointer:
    """accelerate hooks that save/load only the trainable tensors, plus our own state."""

    def __init__(self, accelerator: Accelerator, model: torch.nn.Module, generator):
        self.accelerator = accelerator
        self.model = model
        self.generator = generator
        self.step = 0
        accelerator.register_save_state_pre_hook(self._save_hook)
        accelerator.register_load_state_pre_hook(self._load_hook)

    def _save_hook(self, models, weights, output_dir):
        save_file(
            trainable_state_dict(self.accelerator.unwrap_model(self.model)),
            os.path.join(output_dir, "trainable.safetensors"),
        )
        state = {"step": self.step, "rng": self.generator.get_state().tolist()}
        Path(output_dir, "trainer_state.json").write_text(json.dumps(state))
        weights.clear()  # accelerate must not write the frozen base model

    def _load_hook(self, models, input_dir):
        tensors = load_file(os.path.join(input_dir, "trainable.safetensors"))
        model = self.accelerator.unwrap_model(self.model)
        params = dict(model.named_parameters())
        unexpected = sorted(set(tensors) - set(params))
        if unexpected:
            raise ValueError(f"checkpoint {input_dir} holds unknown tensors: {unexpected[:5]}")
        with torch.no_grad():
            for name, value in tensors.items():
                params[name].copy_(value)
        state = json.loads(Path(input_dir, "trainer_state.json").read_text())
        self.step = int(state["step"])
        self.generator.set_state(torch.tensor(state["rng"], dtype=torch.uint8))
        models.clear()  # loaded above; accelerate must not look for full model weights

    def save(self, output_dir: Path, keep: int) -> Path:
        final = Path(output_dir) / f"{CHECKPOINT_PREFIX}{self.step}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        self.accelerator.save_state(str(tmp))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        older = sorted(
            (
                p
                for p in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*")
                if p != final and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
            ),
            key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]),
        )
        for stale in older[: max(len(older) - (keep - 1), 0)]:
            shutil.rmtree(stale, ignore_errors=True)
        return final


class _StopFlag:
    requested = False


@contextmanager
def _sigint_at_step_boundary() -> Iterator[_StopFlag]:
    """Turn the first Ctrl-C into a flag the loop checks between steps (so a checkpoint is
    never taken of half-updated weights); a second Ctrl-C interrupts at once."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        flag.requested = True
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


StepFn = Callable[[torch.nn.Module, torch.Generator], StepOutput]
Callback = Callable[[int, torch.nn.Module], None]


def run_tuning_loop(
    model: torch.nn.Module,
    step_fn: StepFn,
    settings: LoopSettings,
    output_dir: Path,
    *,
    accelerator: Accelerator | None = None,
    resume: bool = False,
    on_step: Callable[[int, StepOutput], None] | None = None,
    validate_every: int = 0,
    validate: Callback | None = None,
    progress: bool = True,
) -> torch.nn.Module:
    """Optimise ``model``'s trainable parameters with ``step_fn`` for ``settings.steps`` steps.

    ``step_fn(model, generator)`` returns a :class:`StepOutput`; the generator is the loop's
    only source of randomness and is saved in checkpoints. On Ctrl-C a checkpoint of the
    completed steps is written and ``KeyboardInterrupt`` is re-raised.

    Returns the unwrapped model.
    """
    accelerator = accelerator or Accelerator()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (check the trainable patterns)")
    optimizer = _make_optimizer(params, settings)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # constant
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    generator = torch.Generator(accelerator.device).manual_seed(settings.seed)
    checkpointer = _Checkpointer(accelerator, model, generator)
    if resume:
        found = latest_checkpoint(output_dir)
        if found is None:
            raise FileNotFoundError(f"--resume: no {CHECKPOINT_PREFIX}N folder in {output_dir}")
        accelerator.load_state(str(found))
    model.train()
    bar = tqdm(
        total=settings.steps,
        initial=checkpointer.step,
        desc="tuning",
        disable=not progress or not accelerator.is_local_main_process,
    )
    try:
        with _sigint_at_step_boundary() as stop:
            while checkpointer.step < settings.steps:
                out = step_fn(model, generator)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and settings.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                checkpointer.step += 1
                step = checkpointer.step
                bar.update(1)
                bar.set_postfix(
                    loss=f"{float(out.loss.detach()):.4f}",
                    diffusion=f"{float(out.diffusion_loss):.4f}",
                    smooth=f"{float(out.smoothing_loss):.4f}",
                )
                if on_step is not None:
                    on_step(step, out)
                if stop.requested:
                    raise KeyboardInterrupt
                if settings.checkpoint_every and step % settings.checkpoint_every == 0:
                    checkpointer.save(output_dir, settings.keep_checkpoints)
                if validate is not None and validate_every and step % validate_every == 0:
                    model.eval()
                    validate(step, accelerator.unwrap_model(model))
                    model.train()
    except KeyboardInterrupt:
        bar.close()
        if checkpointer.step > 0:
            path = checkpointer.save(output_dir, settings.keep_checkpoints)
            tqdm.write(f"interrupted: saved {path}; continue with --resume")
        raise
    bar.close()
    model.eval()
    return accelerator.unwrap_model(model)
