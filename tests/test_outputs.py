"""Output locations: checked before work starts, written atomically, failures in one line."""

from __future__ import annotations

import errno
import json
import os

import pytest

from inr_smooth.outputs import (
    OutputError,
    atomic_folder,
    check_output_dir,
    check_output_file,
    remove_stale_files,
    write_errors,
    write_json_atomic,
    write_text_atomic,
)


def test_a_creatable_folder_passes_and_nothing_is_created(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_output_dir(target) == target
    assert not (tmp_path / "a").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_file_where_a_folder_is_meant_and_the_reverse(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="is a file, expected a folder"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(OutputError, match="is a file"):
        check_output_dir(tmp_path / "f" / "sub")
    with pytest.raises(OutputError, match="is a folder, expected a file name"):
        check_output_file(tmp_path)


def test_a_read_only_folder_is_refused_before_any_work(readonly_dir):
    with pytest.raises(OutputError, match="not writable"):
        check_output_dir(readonly_dir / "run")
    with pytest.raises(OutputError, match="not writable"):
        check_output_file(readonly_dir / "scores.json")


def test_a_full_disk_is_one_line_naming_the_path_and_leaves_nothing(full_dir):
    with pytest.raises(OutputError, match=rf"cannot write {full_dir}/big.json: No space left"):
        write_json_atomic(full_dir / "big.json", {"x": "y" * 200_000})
    assert list(full_dir.iterdir()) == []


def test_write_errors_converts_only_write_errnos(tmp_path):
    with pytest.raises(OutputError, match="cannot write /x/y: Read-only file system"), \
            write_errors():
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/x/y")
    with pytest.raises(OSError) as exc, write_errors():
        raise OSError(errno.EIO, "I/O error", "/x")
    assert not isinstance(exc.value, OutputError)


def test_atomic_writes_replace_and_leave_no_temporary_file(tmp_path):
    write_text_atomic(tmp_path / "t.txt", "one")
    write_json_atomic(tmp_path / "t.json", {"a": 1})
    write_text_atomic(tmp_path / "t.txt", "two")
    assert (tmp_path / "t.txt").read_text() == "two"
    assert json.loads((tmp_path / "t.json").read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json", "t.txt"]


def test_atomic_folder_appears_complete_or_not_at_all(tmp_path):
    final = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), atomic_folder(final) as tmp:
        (tmp / "half.mp4").write_text("x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(final) as tmp:
        (tmp / "a.mp4").write_text("a")
    assert [p.name for p in final.iterdir()] == ["a.mp4"]
    with pytest.raises(OutputError, match=r"not empty .*--overwrite"), atomic_folder(final):
        pass
    with pytest.raises(RuntimeError), atomic_folder(final, overwrite=True) as tmp:
        (tmp / "b.mp4").write_text("b")
        raise RuntimeError("late failure")
    assert [p.name for p in final.iterdir()] == ["a.mp4"]  # the old folder is kept
    with atomic_folder(final, overwrite=True) as tmp:
        (tmp / "b.mp4").write_text("b")
    assert [p.name for p in final.iterdir()] == ["b.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_stale_files_of_dead_processes_are_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f".attention-{dead.stdout.strip()}-abc.spill"
    live = tmp_path / f".attention-{os.getppid()}-def.spill"
    mine = tmp_path / f".attention-{os.getpid()}-ghi.spill"
    for path in (stale, live, mine):
        path.write_bytes(b"x")
    assert remove_stale_files(tmp_path, ".attention-") == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, mine.name])
