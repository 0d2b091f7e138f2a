"""A JSON-lines file of results keyed by what they depend on, appended as they come.

Torch-free: ``eval`` keeps its per-video results in one (``results.jsonl``) and ``bench
quality`` / ``quality-sweep`` their finished clips, so that a rerun of a stopped command
continues where it stopped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .outputs import write_errors, write_text_atomic

__all__ = ["ResultsLog"]


class ResultsLog:
    """One JSON result per line, appended as they come, so that a rerun resumes.

    Results are looked up by their ``key``; :meth:`keep_only` drops the ones no current job
    has (other content or settings, a line cut by a crash). A failed append leaves the file
    as it was (or no file), never an empty or half-written one.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _entries(self) -> tuple[list[dict], int]:
        if not self.path.is_file():
            return [], 0
        entries, bad = [], 0
        for line in self.path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: computed again
                bad += 1
                continue
            if isinstance(entry, dict) and entry.get("key"):
                entries.append(entry)
            else:
                bad += 1  # a result of an older version, without a key
        return entries, bad

    def read(self) -> dict[str, dict]:
        return {entry["key"]: entry for entry in self._entries()[0]}

    def keep_only(self, keys: set[str]) -> int:
        """Rewrite the file with only the results whose key is in ``keys``; return how many
        lines were dropped."""
        entries, bad = self._entries()
        kept = [e for e in entries if e["key"] in keys]
        dropped = bad + len(entries) - len(kept)
        if dropped and kept:
            write_text_atomic(self.path, "".join(json.dumps(e) + "\n" for e in kept))
        elif dropped:
            with write_errors(self.path):
                self.path.unlink()
        return dropped

    def append(self, result: dict) -> None:
        line = json.dumps(result) + "\n"
        existed = self.path.is_file()
        size = self.path.stat().st_size if existed else 0
        try:
            with write_errors(self.path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a") as handle:
                    handle.write(line)
                    handle.flush()
                    os.fsync(handle.fileno())
        except BaseException:  # disk full, Ctrl-C: no half line, no empty file
            self._undo(existed, size)
            raise

    def _undo(self, existed: bool, size: int) -> None:
        try:
            if existed:
                os.truncate(self.path, size)
            else:
                self.path.unlink(missing_ok=True)
        except OSError:
            pass
