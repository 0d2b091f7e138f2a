"""torchvision's RAFT as a flow estimator, loaded by our own code with ``weights_only=True``.

torchvision's own builder (``raft_large(weights=...)``) unpickles the cached file with
``weights_only=False``, so a pickle planted in ``$TORCH_HOME/hub/checkpoints`` would run. Here
the cached file is found by name (the weights' URL), its SHA-256 prefix (part of the file name)
is verified, and only then is it read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import torch

__all__ = ["RaftFlow", "cached_raft_file"]

_HASH = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's convention: name-<sha256 prefix>.pth


def _weights_enum(large: bool):
    from torchvision.models import optical_flow as of

    return of.Raft_Large_Weights.DEFAULT if large else of.Raft_Small_Weights.DEFAULT


def cached_raft_file(large: bool = True) -> tuple[Path, str]:
    """``(path in torch.hub's checkpoint folder, download URL)`` of torchvision's RAFT."""
    url = _weights_enum(large).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1], url


def _download(url: str, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), progress=True)
    except Exception as exc:  # URLError, OSError, ... when offline
        raise FileNotFoundError(
            f"RAFT weights are not in torch.hub's cache ({path}) and could not be downloaded "
            f"({type(exc).__name__}); pass --raft-weights PATH or use --flow dis"
        ) from None


def _verify(path: Path) -> None:
    """Check the file's SHA-256 against the prefix in its name (when the name has one)."""
    found = _HASH.search(path.name)
    if not found:
        return
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if not digest.hexdigest().startswith(found.group(1)):
        raise ValueError(
            f"the cached RAFT weights {path} do not match their published checksum (sha256 "
            f"{found.group(1)}...): delete the file to download it again, or pass "
            "--raft-weights PATH or --flow dis"
        )


class RaftFlow:
    """torchvision's RAFT (Teed and Deng 2020), large by default.

    Weights come from torch.hub's cache (downloaded there once, online; checksum verified) or
    from ``weights``, a ``.pth`` state dict; both are read with ``weights_only=True``. Frame
    sides must be multiples of 8 and at least 128.
    """

    name = "raft"

    def __init__(
        self,
        weights: str | Path | None = None,
        *,
        large: bool = True,
        device=None,
        iterations: int = 12,
    ):
        from torchvision.models import optical_flow as of

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        size = "large" if large else "small"
        if weights is not None:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"RAFT weights not found: {path}")
        else:
            path, url = cached_raft_file(large)
            if not path.is_file():
                _download(url, path)
            _verify(path)
        state = _read_state(path, size)  # before building the model: a bad file fails fast
        model = (of.raft_large if large else of.raft_small)(weights=None)
        _load_raft_state(model, state, path, size)
        self.model = model.eval().to(self.device)
        self.large = large
        self.iterations = iterations  # RAFT's recurrent refinements (torchvision default 12)

    def __repr__(self) -> str:
        return f"RaftFlow(large={self.large}, iterations={self.iterations})"

    @torch.no_grad()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        h, w = a.shape[:2]
        if h % 8 or w % 8 or min(h, w) < 128:
            raise ValueError(
                f"RAFT needs frame sides that are multiples of 8 and at least 128 (its "
                f"correlation pyramid), got {h}x{w}: pass --size or use --flow dis"
            )

        def prep(x):  # uint8 (h, w, 3) -> (1, 3, h, w) in [-1, 1]
            t = torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()
            return (t / 127.5 - 1).to(self.device)

        flows = self.model(prep(a), prep(b), num_flow_updates=self.iterations)
        flow = flows[-1]  # the last refinement, (1, 2, h, w)
        return flow[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)


def _read_state(path: Path, size: str) -> dict:
    """A state dict saved with ``torch.save``, read with ``weights_only=True`` (tensors and
    plain containers only: a pickle that would run code is refused, not run)."""
    expected = f"expected a torchvision RAFT {size} state dict in {path}"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, or one holding more than tensors
        raise ValueError(f"{expected}, could not read it ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{expected}, found a {type(state).__name__}")
    return state


def _load_raft_state(model: torch.nn.Module, state: dict, path: Path, size: str) -> None:
    expected = f"expected a torchvision RAFT {size} state dict in {path}"
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError:  # tensors of other shapes: the other RAFT size
        raise ValueError(f"{expected}, found tensors of other shapes (the other size?)") from None
    if missing or unexpected:
        raise ValueError(
            f"{expected}, found {len(missing)} missing and {len(unexpected)} unexpected keys "
            f"(e.g. {(missing or unexpected)[0]!r})"
        )
