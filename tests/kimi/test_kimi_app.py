"""The inference CLI and the Gradio demo on a real (tiny) checkpoint; the demo driven in headless Chromium."""

import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO, run_cli


def test_inference_cli_generates(kimi_run):
    proc = run_cli("StoryKimi/inference.py", "--checkpoint", kimi_run, "--prompt", "Once upon a time",
                   "--greedy", "--max-length", "12", check=True)
    assert "Once upon a time" in proc.stdout


def test_inference_refuses_a_missing_checkpoint(tmp_path):
    proc = run_cli("StoryKimi/inference.py", "--checkpoint", tmp_path / "nope", "--prompt", "hi")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_demo_refuses_to_start_without_a_checkpoint(tmp_path):
    """Reference bug: the apps fell back to random weights."""
    proc = run_cli("StoryKimi/gradio/app.py", "--checkpoint", tmp_path / "nope", cwd=REPO / "StoryKimi" / "gradio")
    assert proc.returncode == 2 and "trainer.py" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, proc, timeout: float = 180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app.py exited: {proc.stderr.read()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise AssertionError("the demo did not start listening")


@pytest.mark.browser
def test_demo_in_headless_chromium(kimi_run):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        try:
            browser = pw.chromium.launch()
        except Exception as e:  # the browser binary is a separate download (`playwright install chromium`)
            pytest.skip(f"no Chromium for playwright: {str(e).splitlines()[0]}")
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "app.py", "--checkpoint", str(kimi_run), "--port", str(port)],
                                cwd=REPO / "StoryKimi" / "gradio", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            _wait_for(port, proc)
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}")
            page.locator("#prompt textarea").fill("Once upon a time")
            page.locator("#generate").click()
            page.wait_for_function("document.querySelector('#output textarea').value.length > 16", timeout=120_000)
            assert page.locator("#output textarea").input_value().startswith("Once upon a time")
        finally:
            browser.close()
            proc.terminate()
            proc.wait(timeout=30)
