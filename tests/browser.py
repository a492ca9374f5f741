"""Drive a model folder's Gradio demo in headless Chromium, as a person would."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"demo exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"demo did not start within {timeout}s")


@contextlib.contextmanager
def demo_page(app: str, checkpoint: Path, max_new_tokens: int = 24):
    """Launch `app` (e.g. 'StoryLlama/gradio/app.py') from inside its folder, as a user does, and
    yield a headless Chromium page open on it."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    port = _free_port()
    app_path = REPO / app
    proc = subprocess.Popen([sys.executable, app_path.name, "--checkpoint", str(checkpoint), "--port", str(port),
                             "--max-new-tokens", str(max_new_tokens)], cwd=app_path.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for(url, proc)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.goto(url)
                yield page
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def generate(page, prompt: str, timeout_ms: int = 120_000) -> str:
    """Type `prompt`, press Generate, and return the text that streams into the output box."""
    page.locator("#prompt textarea").fill(prompt)
    page.locator("#generate").click()
    page.wait_for_function(
        "([sel, p]) => { const t = document.querySelector(sel); return t && t.value.length > p.length; }",
        arg=["#output textarea", prompt], timeout=timeout_ms)
    time.sleep(1.0)  # let the stream finish
    return page.locator("#output textarea").input_value()


def generate_in_browser(app: str, checkpoint: Path, prompt: str) -> str:
    with demo_page(app, checkpoint) as page:
        return generate(page, prompt)
