"""Per-stage wall time and peak memory of a run, written as JSON into the run folder."""

from __future__ import annotations

import platform
import resource
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .outputs import write_json_atomic

__all__ = ["RunLog", "environment", "peak_rss_mb", "write_json_atomic"]


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of resident memory (Linux), if allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (since the last reset, on Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """Versions and device description for reports."""
    import diffusers
    import transformers

    from . import __version__

    device = torch.device(device or "cpu")
    info = {
        "inr_smooth": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["device_name"] = platform.processor() or platform.machine()
        info["cpu_threads"] = torch.get_num_threads()
    return info


class RunLog:
    """Collects stages (time, peak device memory, peak CPU RSS) and scalar series (losses)."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.stages: dict[str, dict[str, float]] = {}
        self.series: dict[str, list[Any]] = {}
        self.info: dict[str, Any] = {"environment": environment(self.device)}

    @contextmanager
    def stage(self, name: str):
        """Time a block and record its peak memory under ``name``."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        rss_reset = _reset_peak_rss()
        start = time.perf_counter()
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
            entry = {"seconds": round(time.perf_counter() - start, 4)}
            entry["peak_cpu_rss_mb" if rss_reset else "peak_cpu_rss_mb_process"] = round(
                peak_rss_mb(), 1
            )
            if cuda:
                entry["peak_device_memory_mb"] = round(
                    torch.cuda.max_memory_allocated(self.device) / 2**20, 1
                )
            self.stages[name] = entry

    def append(self, key: str, value: Any) -> None:
        self.series.setdefault(key, []).append(value)

    def to_dict(self) -> dict[str, Any]:
        return {**self.info, "stages": self.stages, **self.series}

    def write(self, path: Path) -> None:
        write_json_atomic(path, self.to_dict())
