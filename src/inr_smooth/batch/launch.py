"""Where a worker stands among its peers, and ``--processes N`` (torch only in choose_device).

``accelerate launch`` and ``torchrun`` start one process per GPU with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` in the environment (on several machines through
their own configuration: ``--num_machines``, ``--machine_rank``, ``--main_process_ip``);
``--processes N`` starts N local copies of the command with the same variables. A worker
reads them once, for its GPU (``cuda:LOCAL_RANK``) and its share of the CPU threads, and then
removes them (:func:`detach_from_launcher`): its jobs are independent, so no process group is
formed, and the ``Accelerator`` that tuning creates must not join one and wrap the model in
DistributedDataParallel. Jobs are shared by claiming alone (:mod:`.claims`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass

__all__ = ["CHILD_ENV", "Rank", "choose_device", "detach_from_launcher", "read_rank",
           "spawn_local"]  # fmt: skip

CHILD_ENV = "INR_SMOOTH_BATCH_CHILD"  # set in the processes that --processes starts
# what torchrun / accelerate launch / MPI set and accelerate's Accelerator reads to form a group
LAUNCHER_ENV = (
    "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
    "ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT",
    "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "TORCHELASTIC_MAX_RESTARTS",
    "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_ERROR_FILE", "PMI_RANK", "PMI_SIZE",
    "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
    "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE",
    "MV2_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "MPI_LOCALNRANKS", "ACCELERATE_USE_DEEPSPEED",
    "ACCELERATE_USE_FSDP", "ACCELERATE_TORCH_DEVICE",
)  # fmt: skip


@dataclass(frozen=True)
class Rank:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    child: bool = False  # started by --processes (the parent prints the report)

    @property
    def launched(self) -> bool:
        return self.world_size > 1


def _int(environ, key: str, default: int) -> int:
    value = environ.get(key, "")
    try:
        return int(value) if value != "" else default
    except ValueError:
        raise ValueError(f"environment variable {key} must be an integer, got {value!r}") from None


def read_rank(environ: MutableMapping[str, str] | None = None) -> Rank:
    environ = os.environ if environ is None else environ
    world = _int(environ, "WORLD_SIZE", 1)
    rank = _int(environ, "RANK", 0)
    local = _int(environ, "LOCAL_RANK", rank)
    local_world = _int(environ, "LOCAL_WORLD_SIZE", world)
    if not (0 <= rank < world and 0 <= local < max(local_world, 1)):
        raise ValueError(f"expected 0 <= RANK < WORLD_SIZE and 0 <= LOCAL_RANK < "
                         f"LOCAL_WORLD_SIZE, got RANK={rank}, WORLD_SIZE={world}, "
                         f"LOCAL_RANK={local}, LOCAL_WORLD_SIZE={local_world}")  # fmt: skip
    return Rank(rank, world, local, max(local_world, 1), environ.get(CHILD_ENV) == "1")


def detach_from_launcher(environ: MutableMapping[str, str] | None = None) -> None:
    environ = os.environ if environ is None else environ
    for key in LAUNCHER_ENV:
        environ.pop(key, None)


def choose_device(requested: str, rank: Rank) -> str:
    """``cuda:<LOCAL_RANK modulo the GPUs>`` (made the current device) or ``cpu``."""
    import torch

    if requested == "cpu" or not torch.cuda.is_available():
        if requested not in ("auto", "cpu"):
            raise ValueError(f"--device {requested} was asked for, but torch sees no CUDA GPU")
        return "cpu"
    index = rank.local_rank % torch.cuda.device_count()
    torch.cuda.set_device(index)  # Accelerator(): "cuda" is then this GPU
    return f"cuda:{index}"


def spawn_local(n: int, argv: Sequence[str]) -> list[int]:
    """Run ``python -m inr_smooth <argv>`` in ``n`` processes with ranks 0..n-1; their exit
    codes. Ctrl-C (or SIGTERM) is passed on to every process, which releases its claim."""
    procs = []

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        for i in range(n):
            env = {**os.environ, "RANK": str(i), "WORLD_SIZE": str(n), "LOCAL_RANK": str(i),
                   "LOCAL_WORLD_SIZE": str(n), CHILD_ENV: "1"}  # fmt: skip
            procs.append(subprocess.Popen([sys.executable, "-m", "inr_smooth", *argv], env=env))
        while any(p.poll() is None for p in procs):  # reaps each as it ends (no zombies)
            time.sleep(0.2)
        return [p.returncode for p in procs]
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
