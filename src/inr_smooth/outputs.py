"""Where runs write: checked before any model loads, written atomically, failures in one line.

Torch-free on purpose, so that commands can check their outputs before the heavy imports.

* :func:`check_output_dir` / :func:`check_output_file` -- the location exists or can be created,
  is writable (probed by creating a file: ``os.access`` says yes on a read-only mount as root),
  and is not a file where a folder is meant (or the reverse). Nothing is created.
* :func:`write_text_atomic` / :func:`write_json_atomic` -- a temporary sibling, then a rename.
* :func:`atomic_folder` -- build a whole folder under a temporary name and rename it into place
  when complete, so that a failure or Ctrl-C leaves either the finished folder or nothing.
* :func:`write_errors` -- turn an ``OSError`` of a write (disk full, read-only, ...) into an
  :class:`OutputError` that names the path.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "WRITE_ERRNOS",
    "OutputError",
    "atomic_folder",
    "check_output_dir",
    "check_output_file",
    "describe_write_error",
    "folder_is_empty",
    "remove_stale_files",
    "write_errors",
    "write_json_atomic",
    "write_text_atomic",
]

# errors of a write that the user fixes by choosing another place or freeing space
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EISDIR,
     errno.ENOTDIR, errno.EFBIG, errno.EEXIST, errno.ENOTEMPTY}
)  # fmt: skip


class OutputError(ValueError):
    """An output location that cannot be written (one line: what and where)."""


def describe_write_error(exc: OSError, path: str | Path | None = None) -> str:
    """``cannot write PATH: REASON`` for an OSError of a write."""
    where = exc.filename or path
    reason = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENOSPC:
        reason += " (free some space or choose another output)"
    return f"cannot write {where}: {reason}"


@contextmanager
def write_errors(path: str | Path | None = None) -> Iterator[None]:
    """Re-raise a write's OSError (disk full, read-only, a folder in the way) as OutputError."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        raise OutputError(describe_write_error(exc, path)) from None


def _existing_ancestor(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists() or parent.is_symlink():
            return parent
    return Path.cwd()


def _probe(folder: Path, what: str, target: Path) -> None:
    """Create and delete a file in ``folder``: the only reliable writability test."""
    try:
        fd, name = tempfile.mkstemp(prefix=".inr-smooth-probe-", dir=folder)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OutputError(f"cannot write the {what} {target}: {folder} is not writable "
                          f"({reason})") from None  # fmt: skip
    os.close(fd)
    os.unlink(name)


def check_output_dir(path: str | Path, *, what: str = "output folder") -> Path:
    """Raise OutputError unless ``path`` is a writable folder or can be created as one."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"the {what} {path} is a file, expected a folder")
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        raise OutputError(f"cannot create the {what} {path}: {ancestor} is a file")
    _probe(ancestor, what, path)
    return path


def check_output_file(path: str | Path, *, what: str = "output file") -> Path:
    """Raise OutputError unless a file can be written at ``path`` (its folder may not exist)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"the {what} {path} is a folder, expected a file name")
    check_output_dir(path.parent, what=f"folder of the {what}")
    return path


def folder_is_empty(path: str | Path) -> bool:
    """True for a missing folder or an empty one."""
    path = Path(path)
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` through a temporary sibling and a rename: never a half-written file."""
    path = Path(path)
    with write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_sibling(path)
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """:func:`write_text_atomic` of indented JSON (``default=str`` for paths and the like)."""
    return write_text_atomic(path, json.dumps(payload, indent=2, default=str) + "\n")


@contextmanager
def atomic_folder(final: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``final``; on success it becomes ``final``.

    ``final`` must be missing or empty, unless ``overwrite`` (then the old folder is moved
    aside and deleted only once the new one is in place). On any exception, Ctrl-C included,
    the temporary folder is removed and ``final`` is left as it was.
    """
    final = Path(final)
    if not overwrite and not folder_is_empty(final):
        raise OutputError(f"{final} exists and is not empty (pass --overwrite to replace it)")
    tmp, old = _tmp_sibling(final), final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with write_errors(final):
            tmp.mkdir(parents=True)
        yield tmp
        with write_errors(final):
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
    except BaseException:
        if old.exists() and not final.exists():
            os.replace(old, final)  # put the earlier folder back
        raise
    finally:
        for leftover in (tmp, old):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            elif leftover.exists():
                leftover.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_files(folder: str | Path, prefix: str) -> list[Path]:
    """Delete ``folder/<prefix><pid>-*`` files whose process is gone (left by a kill -9);
    return what was removed. Files of live processes are left alone."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for path in folder.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed
