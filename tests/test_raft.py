"""RAFT from torch.hub's cache is read by our code, safely: a planted pickle never runs."""

from __future__ import annotations

import pickle

import pytest

from inr_smooth.cli import main
from inr_smooth.metrics import raft as raft_module
from inr_smooth.metrics.raft import RaftFlow, cached_raft_file


class _Planted:
    """Unpickling this object opens (creates) the marker file: code execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def planted(tmp_path, monkeypatch):
    """A pickle planted where torchvision's RAFT large would be cached; returns the marker."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    path, url = cached_raft_file(large=True)
    assert str(path).startswith(str(tmp_path)) and path.name == url.rsplit("/", 1)[-1]
    path.parent.mkdir(parents=True)
    marker = tmp_path / "marker"
    path.write_bytes(pickle.dumps({"state": _Planted(marker)}, protocol=2))
    # the plant works: plain unpickling (what torchvision's builder does) runs it
    pickle.loads(path.read_bytes())
    assert marker.exists()
    marker.unlink()
    return marker


def test_a_planted_pickle_fails_the_checksum_and_never_runs(planted):
    with pytest.raises(ValueError, match="do not match their published checksum"):
        RaftFlow(device="cpu")
    assert not planted.exists()


def test_a_planted_pickle_is_refused_by_weights_only_loading(planted, monkeypatch):
    """Even past the checksum (a file with a matching name prefix), it is read as tensors."""
    monkeypatch.setattr(raft_module, "_verify", lambda path: None)
    with pytest.raises(ValueError, match="could not read it"):
        RaftFlow(device="cpu")
    assert not planted.exists()


def test_the_cli_says_one_line_and_runs_nothing(planted, tmp_path, capsys):
    from inr_smooth.synthetic import Scene, render
    from inr_smooth.video_io import write_video

    video = write_video(tmp_path / "v.gif", render(Scene(), 3, 128))
    assert main(["eval", str(video), "--no-clip", "--flow", "raft"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checksum" in err and "raft_large" in err
    assert not planted.exists()
