"""What ``inr-smooth eval`` evaluates, checked before any model loads (no torch here).

* :func:`read_manifest` -- rows of ``video``, ``prompt`` and optional ``method``, ``source``
  from CSV / JSON / YAML; a malformed file is one ``ValueError`` naming it.
* :func:`with_source_rows` -- one reference row per distinct source video.
* :func:`short_names` -- distinct, short row names (the file name, with as many parent folders
  as it takes to tell two videos apart).
* :func:`file_digest` / :func:`result_key` -- what a stored result is valid for: the video's
  content and every setting that changes a number.
* :func:`check_clip_name` -- a CLIP model argument that names a missing folder or a file.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "check_clip_name",
    "file_digest",
    "read_manifest",
    "result_key",
    "short_names",
    "with_source_rows",
]


def _first_line(exc: Exception) -> str:
    mark, problem = getattr(exc, "problem_mark", None), getattr(exc, "problem", None)
    if mark is not None and problem:  # yaml: "expected ',' or ']' at line 2, column 5"
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _load_rows(path: Path) -> Any:
    """The parsed manifest; a file that does not parse is one ValueError naming it."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json", ".yaml", ".yml"):
        raise ValueError(f"expected a .csv, .json or .yaml manifest, got {path.name}")
    try:
        text = path.read_text()
        if suffix == ".csv":
            rows = list(csv.DictReader(text.splitlines(), strict=True))
            for i, row in enumerate(rows, 1):
                if None in row:  # more cells than the header has columns
                    raise ValueError(f"row {i} has more cells than the header's {len(row) - 1}")
            return rows
        if suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except OSError as exc:
        raise ValueError(f"cannot read the manifest {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"cannot read the manifest {path}: not UTF-8 text") from None
    except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError, csv.Error, ValueError
        kind = {".csv": "CSV", ".json": "JSON"}.get(suffix, "YAML")
        raise ValueError(f"malformed {kind} manifest {path}: {_first_line(exc)}") from None


def read_manifest(path: str | Path) -> list[dict[str, str]]:
    """Rows with ``video``, ``prompt`` and optional ``method``, ``source`` from CSV / JSON / YAML
    (a list of rows, or ``{"videos": [...]}``).

    Relative video paths are taken relative to the manifest's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    rows = _load_rows(path)
    rows = rows.get("videos", rows) if isinstance(rows, dict) else rows
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"expected a non-empty list of rows in {path}")
    out = []
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("video") or not row.get("prompt"):
            raise ValueError(f"{path}: row {i} needs 'video' and 'prompt', got {row!r}"[:300])
        clean = {str(k): str(v) for k, v in row.items() if v not in (None, "")}
        for key in ("video", "source"):
            if key in clean and not Path(clean[key]).is_absolute():
                clean[key] = str(path.parent / clean[key])
        out.append(clean)
    return out


def with_source_rows(rows: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """``rows`` preceded by one reference row (method ``source``) per distinct ``source``
    video, scored against the prompt of the first row that names it."""
    sources: dict[str, dict[str, str]] = {}
    for row in rows:
        if row.get("source") and row["source"] not in sources:
            sources[row["source"]] = {
                "video": row["source"],
                "prompt": row.get("prompt", ""),
                "method": "source",
            }
    return [*sources.values(), *rows]


def short_names(paths: Sequence[str | Path]) -> list[str]:
    """For each path, the shortest tail of it (``name``, ``parent/name``, ...) that no other
    distinct path among ``paths`` shares."""
    full = [Path(p).expanduser().absolute().parts for p in paths]
    names = []
    for parts in full:
        others = [o for o in full if o != parts]
        k = 1
        while k < len(parts) and any(o[-k:] == parts[-k:] for o in others):
            k += 1
        names.append("/".join(parts[-k:]))
    return names


def file_digest(path: str | Path) -> str:
    """SHA-256 of a video file's bytes, or of a frame folder's file names and bytes."""
    path = Path(path).expanduser()
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.name.encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def result_key(digest: str, row: dict[str, str], settings: dict[str, Any]) -> str:
    """The identity of one result: the video's content, the row's prompt and method, and the
    evaluation ``settings`` (frames and size read, flow, CLIP model, suite version)."""
    what = {"video": digest, "prompt": row.get("prompt", ""), "method": row.get("method", ""),
            **settings}  # fmt: skip
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def check_clip_name(name: str) -> None:
    """FileNotFoundError for a CLIP argument that is a file, or a path to a missing folder
    (a hub id such as ``openai/clip-vit-large-patch14`` passes)."""
    path = Path(name).expanduser()
    if path.is_file():
        raise FileNotFoundError(f"expected a CLIP model folder or hub id, got a file: {path}")
    if _looks_like_path(name) and not path.is_dir():
        raise FileNotFoundError(f"CLIP model folder not found: {path}")
