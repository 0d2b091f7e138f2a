"""The web UI end to end in a real browser: headless Chromium driven by Playwright against
``inr-smooth ui`` on 127.0.0.1, started here on a free port.

Skipped (with the reason) where Chromium, Playwright or Gradio is missing, unless
INR_SMOOTH_REQUIRE_BROWSER=1 (CI sets it): then a missing piece fails the test.
Set INR_SMOOTH_UI_SCREENSHOT=PATH to keep the screenshot of the finished edit (the edit then
takes the model's 20 DDIM steps instead of 3, for a picture worth keeping).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from inr_smooth.synthetic import Scene, render
from inr_smooth.video_io import write_video

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
SCREENSHOT = os.environ.get("INR_SMOOTH_UI_SCREENSHOT")
START_TIMEOUT_S = 120
JOB_TIMEOUT_MS = 180_000


def _missing() -> str | None:
    import importlib.util

    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    for module, extra in (("playwright", "dev"), ("gradio", "ui")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[{extra}]')"
    return None


@pytest.fixture(scope="module")
def browser():
    missing = _missing()
    if missing:
        if os.environ.get("INR_SMOOTH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"the browser test must run here: {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # launch() gives every run a fresh, temporary --user-data-dir
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_served(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"inr-smooth ui exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"inr-smooth ui did not answer within {START_TIMEOUT_S} s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def served(browser, tmp_path_factory):
    """``(url, workdir)`` of ``inr-smooth ui --model mini`` in a subprocess."""
    folder = tmp_path_factory.mktemp("ui")
    port, log = _free_port(), folder / "server.log"
    command = [sys.executable, "-m", "inr_smooth", "ui", "--model", "mini", "--port", str(port),
               "--workdir", str(folder / "work")]  # fmt: skip
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_served(url, server, log)
        yield url, folder / "work"
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture
def page(browser, served):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.goto(served[0])
    page.wait_for_selector("#preview img", timeout=60_000)  # the first sample's preview
    yield page
    context.close()


def _upload(page, path: Path) -> None:
    page.set_input_files("#upload input[type=file]", str(path))


def test_a_text_file_upload_shows_one_error_line(page, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    _upload(page, text)
    page.wait_for_selector("#source-status .error", timeout=30_000)
    line = page.inner_text("#source-status").strip()
    assert line == ("inr-smooth edit: error: expected a video file (.mp4, .webm, .mov, .mkv, "
                    ".avi, .gif), got notes.txt")  # fmt: skip
    assert "Traceback" not in page.content()


def test_edit_an_uploaded_clip_while_another_tab_waits(page, served, tmp_path):
    """Upload a clip, edit it and get the video, scores and zip; a second tab presses Run at
    the same moment (on a sample): its job waits in the queue, then finishes too."""
    started = time.perf_counter()
    scene, target = Scene(), Scene(color="green", shape="square")
    clip = write_video(tmp_path / "circle.gif", render(scene, 8, 64))
    _upload(page, clip)
    page.wait_for_function(
        "document.querySelector('#source-status').innerText.includes('from circle.gif')"
    )
    shown = page.inner_text("#source-status").strip()
    assert shown == "source: 8 frames of 64×64 px from circle.gif"
    page.fill("#field-source_prompt textarea", scene.caption)
    page.fill("#field-edit_prompt textarea", target.caption)
    page.fill("#field-inference_steps input", "20" if SCREENSHOT else "3")
    other = page.context.new_page()
    other.goto(served[0])
    other.wait_for_selector("#preview img", timeout=60_000)
    other.fill("#field-frames input", "4")
    other.fill("#field-inference_steps input", "1")
    page.click("#run")
    other.click("#run")
    page.wait_for_selector("#result-video video", timeout=JOB_TIMEOUT_MS)
    page.wait_for_selector("#download a", timeout=10_000)
    status = page.inner_text("#status").strip()
    assert status.startswith("done in ") and status.endswith("(FateZero)")
    table = page.inner_text("#metrics")
    assert "warp err. (DIS)" in table and "flow (px)" in table and "output" in table
    assert ".zip" in page.inner_text("#download")
    shot = tmp_path / "ui.png"
    page.screenshot(path=str(shot), full_page=True)
    if SCREENSHOT:
        shutil.copyfile(shot, SCREENSHOT)
    # the other tab: its sample is scored with exact ground truth
    other.wait_for_selector("#result-video video", timeout=JOB_TIMEOUT_MS)
    assert "exact ground truth" in other.inner_text("#notes")
    # one job after the other
    runs = sorted((served[1] / "runs").glob("*/metrics.json"))
    spans = sorted((m["started"], m["finished"]) for m in map(_json, runs))
    assert len(spans) == 2 and spans[0][1] <= spans[1][0], spans
    (upload_run,) = [p.parent for p in runs if (p.parent / "source.gif").is_file()]
    assert (upload_run / "edit" / "log.json").is_file()
    print(f"browser edits: {time.perf_counter() - started:.1f} s")


def _json(path: Path) -> dict:
    return json.loads(path.read_text())
