"""Jobs claimed from a queue folder with atomic claim files (no torch, no scheduler).

Any number of worker processes, on one machine or several sharing the output folder, take
jobs from the same list by claiming them:

* A claim is the file ``DIR/claims/<job>.<attempt>.json`` holding who took the job (host,
  boot id, pid, the pid's start time, rank, when). It is written whole under a temporary name
  and hard-linked to its final name, which fails if the name exists, so exactly one process
  wins an attempt (``O_CREAT | O_EXCL`` where a file system has no hard links).
* A job's current claim is its highest attempt. It is **live** while its process runs: on the
  same host (same host name and boot id) while that pid is alive with the start time recorded
  (a reused pid is not the claimant); from another host while its file's modification time,
  which the claimant touches every ``lease / 4`` seconds, is within ``lease`` seconds of the
  shared file system's clock. Otherwise it is **stale**: the claimant died (kill -9, a lost
  machine) and the job is taken over with the next attempt number (again: one winner).
* The owner deletes its claim when the job has finished, failed (both recorded in
  ``results.jsonl``) or was interrupted; so a claim file only outlives its job after a crash.

Processes in different PID namespaces of one host (containers) must have distinct host names,
or they would judge each other's claims by pids they cannot see.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..outputs import write_errors

__all__ = ["DEFAULT_LEASE_S", "Claim", "ClaimQueue", "process_start"]

DEFAULT_LEASE_S = 300.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux ``/proc``), None
    where it is not known; "" when no such process runs (none, or a zombie: a killed child
    that its parent has not reaped yet still has its pid)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ""
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name: field 3 on
    return "" if fields[0] in ("Z", "X") else fields[19]  # state; start time (field 22)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Claim:
    job: str
    attempt: int
    path: Path
    owner: dict  # host, boot, pid, pid_start, rank, started


class ClaimQueue:
    """The claims of one output folder, seen from this process."""

    def __init__(self, folder: str | Path, *, lease_s: float = DEFAULT_LEASE_S, rank: int = 0):
        self.folder = Path(folder)
        self.lease_s = float(lease_s)
        self.me = {"host": socket.gethostname(), "boot": _boot_id(), "pid": os.getpid(),
                   "pid_start": process_start(os.getpid()), "rank": rank}  # fmt: skip
        with write_errors(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ reading
    def snapshot(self) -> dict[str, list[tuple[int, Path]]]:
        """job -> its claim files as (attempt, path), highest attempt first."""
        claims: dict[str, list[tuple[int, Path]]] = {}
        for path in self.folder.glob("*.json"):
            job, _, attempt = path.stem.rpartition(".")
            if job and attempt.isdigit():
                claims.setdefault(job, []).append((int(attempt), path))
        for entries in claims.values():
            entries.sort(reverse=True)
        return claims

    def fs_now(self) -> float:
        """The shared file system's clock: the modification time of a file touched now."""
        clock = self.folder / f".clock-{self.me['host']}-{self.me['pid']}"
        with write_errors(clock):
            clock.touch()
            return clock.stat().st_mtime

    def is_live(self, path: Path, now: float) -> bool:
        try:
            owner = json.loads(path.read_text())
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            return False  # released meanwhile
        except (OSError, ValueError):  # being written (O_EXCL fallback): trust the lease
            try:
                return now - path.stat().st_mtime < self.lease_s
            except OSError:
                return False
        if owner.get("host") == self.me["host"] and owner.get("boot") == self.me["boot"]:
            pid = int(owner.get("pid", -1))
            if pid <= 0 or not _pid_alive(pid):
                return False
            start = process_start(pid)
            return start is None or (start != "" and owner.get("pid_start") in (None, start))
        return now - mtime < self.lease_s

    # ------------------------------------------------------------------ claiming
    def try_claim(self, job: str, current: list[tuple[int, Path]] | None) -> Claim | None:
        """Claim ``job``, whose claim files were ``current`` (from :meth:`snapshot`): None
        when another process holds it or wins the race for it."""
        attempt = 0
        if current:
            top, path = current[0]
            if self.is_live(path, self.fs_now()):
                return None
            attempt = top + 1
        owner = {**self.me, "started": time.time()}
        path = self.folder / f"{job}.{attempt}.json"
        if not self._create(path, json.dumps(owner)):
            return None
        for _, old in current or ():
            with contextlib.suppress(OSError):
                old.unlink()
        return Claim(job, attempt, path, owner)

    def _create(self, path: Path, text: str) -> bool:
        tmp = path.with_name(f".{path.name}.{self.me['pid']}.tmp")
        with write_errors(path):
            tmp.write_text(text)
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            except OSError as exc:  # no hard links here: O_EXCL
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                    raise
                return self._create_exclusive(path, text)
            finally:
                tmp.unlink(missing_ok=True)

    @staticmethod
    def _create_exclusive(path: Path, text: str) -> bool:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        return True

    def release(self, claim: Claim) -> None:
        with contextlib.suppress(OSError):
            claim.path.unlink()

    @contextlib.contextmanager
    def holding(self, claim: Claim) -> Iterator[None]:
        """Touch the claim every ``lease / 4`` seconds while the block runs (the heartbeat
        that keeps it live for other hosts); release it when the block ends, however."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease_s / 4):
                with contextlib.suppress(OSError):
                    os.utime(claim.path)

        thread = threading.Thread(target=beat, name=f"claim-{claim.job}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.release(claim)

    def sweep(self, finished: set[str]) -> None:
        """Remove the claims of finished jobs that no live process holds (a claimant killed
        between recording its results and releasing its claim)."""
        now = self.fs_now()
        for job, entries in self.snapshot().items():
            if job in finished:
                for _, path in entries:
                    if not self.is_live(path, now):
                        with contextlib.suppress(OSError):
                            path.unlink()

    def close(self) -> None:
        """Remove this process's clock file."""
        with contextlib.suppress(OSError):
            (self.folder / f".clock-{self.me['host']}-{self.me['pid']}").unlink()
