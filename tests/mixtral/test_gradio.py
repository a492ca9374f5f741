"""The StoryMixtral Gradio demo (SmolMixtral's shared app) in headless Chromium, and its refusals."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.helpers import REPO, run_cli

CHROMIUM = "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_up(url: str, proc, timeout=180):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise AssertionError(f"the demo exited: {proc.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise AssertionError("the demo did not start")


def test_missing_checkpoint_is_refused_not_random_weights(tmp_path):
    proc = run_cli("StoryMixtral/gradio/app.py", "--checkpoint", tmp_path / "nothing", cwd=REPO / "StoryMixtral/gradio")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "trainer.py --preset quick" in proc.stderr


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Chromium")
def test_demo_generates_in_headless_chromium(story_run):
    sync_api = pytest.importorskip("playwright.sync_api")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen([sys.executable, "app.py", "--checkpoint", str(story_run), "--port", str(port),
                             "--max-new-tokens", "12"], cwd=REPO / "StoryMixtral/gradio", text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        _wait_up(url, proc)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            page.goto(url)
            page.locator("#prompt textarea").fill("Once upon a time")
            page.locator("#generate").click()
            out = page.locator("#output textarea")
            page.wait_for_function("() => document.querySelector('#output textarea').value.length > 16",
                                   timeout=120_000)
            assert out.input_value().startswith("Once upon a time")
            assert "StoryMixtral" in page.content() and "active" in page.content()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
