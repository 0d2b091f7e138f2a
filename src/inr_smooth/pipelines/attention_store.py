"""fp16 tensors recorded during DDIM inversion and read back while editing (attention fusion).

An :class:`AttentionStore` maps names to tensors, kept in float16:

* ``"device"`` -- on the device they were computed on (GPU memory when there is one);
* ``"disk"`` -- appended to a spill file as they arrive and read back one entry at a time
  through a memory map, so the store's resident cost is one entry, not all of them;
* ``"file"`` -- read-only, backed by a saved safetensors file (the inversion cache), whose
  entries load lazily one at a time.

:meth:`AttentionStore.save` writes the store together with a few other tensors (the inverted
latents) as one safetensors file, streaming entry by entry (a disk store is never loaded whole),
through a temporary name and a rename. :meth:`AttentionStore.open` reads such a file back.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..outputs import remove_stale_files

__all__ = ["STORE_LOCATIONS", "AttentionStore"]

StoreLocation = Literal["device", "disk"]
STORE_LOCATIONS = ("device", "disk")
SPILL_PREFIX = ".attention-"  # spill files: .attention-<pid>-<random>.spill
_PREFIX = "attention/"  # names of store entries inside a saved file; other tensors go as given
_SAFETENSORS_DTYPES = {torch.float16: "F16", torch.float32: "F32"}
_NUMPY_DTYPES = {"F16": np.float16, "F32": np.float32}


class AttentionStore:
    """Named float16 tensors on the device, spilled to disk, or read from a saved file."""

    def __init__(self, location: StoreLocation = "device", *, spill_dir: str | Path | None = None):
        if location not in STORE_LOCATIONS:
            raise ValueError(f"store location must be one of {STORE_LOCATIONS}, got {location!r}")
        self.location: str = location
        self._tensors: dict[str, Tensor] = {}  # "device"
        self._index: dict[str, tuple[int, tuple[int, ...]]] = {}  # "disk": offset, shape
        self._spill = None
        self._spill_path: Path | None = None
        self._file = None  # "file": a safetensors handle
        self.stored_bytes = 0
        self.peak_resident_bytes = 0
        self._closed = False
        if location == "disk":
            folder = Path(spill_dir) if spill_dir is not None else Path(tempfile.gettempdir())
            remove_stale_files(folder, SPILL_PREFIX)  # left by runs that were killed
            fd, name = tempfile.mkstemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-", suffix=".spill",
                                        dir=folder)  # fmt: skip
            self._spill, self._spill_path = os.fdopen(fd, "wb"), Path(name)

    # ------------------------------------------------------------------ entries
    def put(self, name: str, tensor: Tensor) -> None:
        """Store ``tensor`` (any float dtype) as float16 under a new ``name``."""
        if name in self:
            raise KeyError(f"attention store entry {name!r} is already set")
        if self.location == "file":
            raise RuntimeError("a store opened from a file is read-only")
        value = tensor.detach().to(torch.float16).contiguous()
        nbytes = value.numel() * value.element_size()
        if self.location == "device":
            self._tensors[name] = value.clone() if value.data_ptr() == tensor.data_ptr() else value
            self.stored_bytes += nbytes
            self.peak_resident_bytes = max(self.peak_resident_bytes, self.stored_bytes)
            return
        self._index[name] = (self.stored_bytes, tuple(value.shape))
        self._spill.write(value.cpu().numpy().tobytes())
        self.stored_bytes += nbytes
        self.peak_resident_bytes = max(self.peak_resident_bytes, nbytes)

    def get(self, name: str, *, device=None, dtype: torch.dtype | None = None) -> Tensor:
        """The entry ``name``, moved to ``device`` and cast to ``dtype`` (default: as stored)."""
        if self._closed:
            raise RuntimeError("the attention store is closed: its entries were freed")
        if name not in self:
            raise KeyError(
                f"the attention store has no entry {name!r} (it holds {len(self)} entries); was "
                "the inversion recorded with the same fusion settings?"
            )
        if self.location == "device":
            value = self._tensors[name]
        elif self.location == "disk":
            self._spill.flush()
            offset, shape = self._index[name]
            mapped = np.memmap(self._spill_path, np.float16, "r", offset=offset, shape=shape)
            value = torch.from_numpy(np.array(mapped))  # copy, then drop the map
            del mapped
        else:
            value = self._file.get_tensor(_PREFIX + name)
        if self.location != "device":
            nbytes = value.numel() * value.element_size()
            self.peak_resident_bytes = max(self.peak_resident_bytes, nbytes)
        return value.to(device=device, dtype=dtype)

    def __contains__(self, name: str) -> bool:
        return name in self._tensors or name in self._index

    def __len__(self) -> int:
        return len(self._tensors) + len(self._index)

    def names(self) -> list[str]:
        return [*self._tensors, *self._index]

    def report(self) -> dict:
        """Entry count, stored size and peak resident size in MiB, for the run log; ``by_kind``
        splits the stored size by the first part of the entry names (``self``, ``cross``, ...)."""
        kinds: dict[str, int] = {}
        for name in self.names():
            kind = name.split("/", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + self._entry_bytes(name)
        return {
            "location": self.location,
            "entries": len(self),
            "stored_mb": round(self.stored_bytes / 2**20, 3),
            "peak_resident_mb": round(self.peak_resident_bytes / 2**20, 3),
            "by_kind": {kind: round(n / 2**20, 3) for kind, n in sorted(kinds.items())},
        }

    def _entry_bytes(self, name: str) -> int:
        if name in self._tensors:
            return self._tensors[name].numel() * 2
        return int(np.prod(self._index[name][1], dtype=np.int64)) * 2

    def close(self) -> None:
        """Free the entries; delete the spill file of a disk store."""
        self._closed = True
        self._tensors.clear()
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        if self._spill_path is not None:
            self._spill_path.unlink(missing_ok=True)
            self._spill_path = None
        self._file = None

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str]) -> str:
        """Write the entries and ``tensors`` (float16/float32, e.g. latents) as one safetensors
        file, entry by entry, atomically; return its SHA-256. Store entries are saved under
        ``attention/<name>``."""
        path = Path(path)
        items = [(_PREFIX + name, self._entry_writer(name)) for name in self.names()]
        for name, tensor in tensors.items():
            if name.startswith(_PREFIX):
                raise ValueError(f"tensor names must not start with {_PREFIX!r}, got {name!r}")
            items.append((name, _tensor_writer(tensor.detach().cpu().contiguous())))
        return _write_safetensors(path, items, metadata)

    @classmethod
    def open(cls, path: str | Path) -> tuple[AttentionStore, dict[str, Tensor], dict[str, str]]:
        """Read a file written by :meth:`save`: ``(store, other tensors, metadata)``.

        The other tensors are loaded; store entries stay on disk until :meth:`get`.
        """
        from safetensors import safe_open

        store = cls()
        store.location = "file"
        store._file = safe_open(str(path), framework="pt", device="cpu")
        tensors = {}
        for name in store._file.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
            if name.startswith(_PREFIX):
                shape = tuple(store._file.get_slice(name).get_shape())
                store._index[name[len(_PREFIX) :]] = (0, shape)
                store.stored_bytes += int(np.prod(shape)) * 2
            else:
                tensors[name] = store._file.get_tensor(name)
        return store, tensors, store._file.metadata() or {}

    def _entry_writer(self, name: str):
        def write(f) -> None:
            f.write(self.get(name, device="cpu").numpy().tobytes())

        shape = self._index[name][1] if name in self._index else tuple(self._tensors[name].shape)
        return "F16", shape, write


def _tensor_writer(tensor: Tensor):
    if tensor.dtype not in _SAFETENSORS_DTYPES:
        raise ValueError(f"expected a float16 or float32 tensor, got {tensor.dtype}")

    def write(f) -> None:
        f.write(tensor.numpy().tobytes())

    return _SAFETENSORS_DTYPES[tensor.dtype], tuple(tensor.shape), write


def _write_safetensors(path: Path, items: list, metadata: dict[str, str]) -> str:
    """The safetensors layout: little-endian u64 header length, JSON header (names, dtypes,
    shapes, byte ranges; padded to 8 bytes), then the tensors' bytes back to back. Returns the
    SHA-256 of the file."""
    header: dict = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    offset = 0
    for name, (dtype, shape, _) in items:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(_NUMPY_DTYPES[dtype]).itemsize
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            f = _HashingWriter(handle)
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for _, (_, _, write) in items:
                write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return f.digest.hexdigest()


class _HashingWriter:
    """A file that also computes the SHA-256 of everything written to it."""

    def __init__(self, handle):
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.digest.update(data)
        self.handle.write(data)
