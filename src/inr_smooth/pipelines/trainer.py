"""The tuning loop: accelerate, checkpoints of the trainable weights only, resume, Ctrl-C.

Checkpoints (:mod:`.checkpoints`) hold the trained tensors, the optimizer and schedule state
and the loop's RNG state, as safetensors and JSON (no pickles), and appear atomically.
Resuming restores all of it, so that a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .checkpoints import (
    Checkpoint,
    find_checkpoint,
    latest_checkpoint,
    prune,
    restore,
    save_checkpoint,
    trainable_state_dict,
)
from .training import StepOutput

__all__ = [
    "LoopSettings",
    "cast_frozen_",
    "latest_checkpoint",
    "run_tuning_loop",
    "trainable_state_dict",
]


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
        tqdm.write("stopping after this step to save a checkpoint (Ctrl-C again to stop now, "
                   "without one)", file=sys.stderr)  # fmt: skip

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
    resume: bool | Checkpoint = False,
    on_step: Callable[[int, StepOutput], None] | None = None,
    validate_every: int = 0,
    validate: Callback | None = None,
    checkpoint_extra: Callable[[], dict] | None = None,
    progress: bool = True,
) -> torch.nn.Module:
    """Optimise ``model``'s trainable parameters with ``step_fn`` for ``settings.steps`` steps.

    ``step_fn(model, generator)`` returns a :class:`StepOutput`; the generator is the loop's
    only source of randomness and is saved in checkpoints. ``resume`` is True (the newest
    complete checkpoint in ``output_dir``) or a :class:`~.checkpoints.Checkpoint`;
    ``checkpoint_extra()`` returns what each checkpoint stores besides the loop's own state.
    On Ctrl-C the loop stops at the next step boundary, writes a checkpoint of the completed
    steps and re-raises ``KeyboardInterrupt`` (a second Ctrl-C stops at once, without one).

    Returns the unwrapped model.
    """
    accelerator = accelerator or Accelerator()
    output_dir = Path(output_dir)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (check the trainable patterns)")
    checkpoint = find_checkpoint(output_dir) if resume is True else resume or None
    if resume is True and checkpoint is None:
        raise FileNotFoundError(f"--resume: no checkpoint-N folder in {output_dir}")
    optimizer = _make_optimizer(params, settings)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # constant
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    generator = torch.Generator(accelerator.device).manual_seed(settings.seed)
    state = {"generator": generator, "lr_scheduler": lr_scheduler, "scaler": accelerator.scaler}
    step = 0
    if checkpoint is not None:
        step = restore(checkpoint, accelerator.unwrap_model(model), optimizer, **state)

    def save() -> Path:
        extra = checkpoint_extra() if checkpoint_extra is not None else {}
        path = save_checkpoint(output_dir, step, accelerator.unwrap_model(model), optimizer,
                               extra=extra, **state)  # fmt: skip
        prune(output_dir, settings.keep_checkpoints, path)
        return path

    model.train()
    bar = tqdm(total=settings.steps, initial=step, desc="tuning",
               disable=not progress or not accelerator.is_local_main_process)  # fmt: skip
    try:
        with _sigint_at_step_boundary() as stop:
            while step < settings.steps:
                out = step_fn(model, generator)
                accelerator.backward(out.loss)
                if accelerator.sync_gradients and settings.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update(1)
                bar.set_postfix(
                    loss=f"{float(out.loss.detach()):.4f}",
                    diffusion=f"{float(out.diffusion_loss):.4f}",
                    smooth=f"{float(out.smoothing_loss):.4f}",
                )
                if on_step is not None:
                    on_step(step, out)
                if stop.requested:
                    path = save()
                    tqdm.write(f"saved {path}; continue with --resume", file=sys.stderr)
                    raise KeyboardInterrupt
                if settings.checkpoint_every and step % settings.checkpoint_every == 0:
                    save()
                if validate is not None and validate_every and step % validate_every == 0:
                    model.eval()
                    validate(step, accelerator.unwrap_model(model))
                    model.train()
    finally:
        bar.close()
    model.eval()
    return accelerator.unwrap_model(model)
