"""Shared test configuration: slow/GPU tests run only with --run-slow; shared fixtures."""

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run tests marked slow or gpu (real weights, minutes of compute, CUDA)",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow/gpu test: enable with --run-slow")
    for item in items:
        if "slow" in item.keywords or "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory):
    """A tiny Stable Diffusion folder (random weights), written once; tests only read it."""
    from inr_smooth.tiny import save_tiny_stable_diffusion

    return save_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of many tiny models (faster than two on 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mount_tmpfs(path, options):
    """Mount a small tmpfs at ``path`` (root only); False where this machine does not allow it."""
    import subprocess

    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True)  # fmt: skip
    return done.returncode == 0


def _mounted_dir(tmp_path, name, options):
    import subprocess

    path = tmp_path / name
    if not _mount_tmpfs(path, options):
        pytest.skip("cannot mount a tmpfs here (needs root); the monkeypatched tests still run")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def readonly_dir(tmp_path):
    """A real read-only folder (a read-only tmpfs: root ignores chmod)."""
    yield from _mounted_dir(tmp_path, "readonly", "ro,size=1m")


@pytest.fixture
def full_dir(tmp_path):
    """A real folder on a 64 KiB tmpfs: writes beyond that fail with ENOSPC."""
    yield from _mounted_dir(tmp_path, "full", "size=64k")
