"""Drive a model folder's Gradio demo in headless Chromium, as a person would."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
FINISHED = r"^(Generated|⚠|Stopped)"  # what the status line says once a request is over
# The status line's own text: Gradio may draw a progress timer ("0.0s") inside the #status block, beside it.
STATUS = "#status [data-testid='markdown']"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, proc: subprocess.Popen, log: Path, timeout: float = 180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"demo exited early ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"demo did not start within {timeout}s")


@contextlib.contextmanager
def demo_server(args: list[str], cwd: Path, log: Path):
    """Run `python *args --port P` in `cwd` (its output goes to `log`) and yield its URL once it answers."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, *args, "--port", str(port)], cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"})
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_for(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def demo_page(app: str, checkpoint: Path, max_new_tokens: int = 24, log: Path | None = None):
    """Launch `app` (e.g. 'StoryLlama/gradio/app.py') from inside its folder, as a user does, and
    yield a headless Chromium page open on it. The server's output goes to `log`."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium; .ci/run installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    app_path = REPO / app
    with tempfile.TemporaryDirectory() as tmp:
        args = [app_path.name, "--checkpoint", str(checkpoint), "--max-new-tokens", str(max_new_tokens)]
        with demo_server(args, app_path.parent, log or Path(tmp) / "server.log") as url, \
                playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page()
                page.goto(url)
                yield page
            finally:
                browser.close()


def click_generate(page):
    """Press Generate, watching the status line so that `wait_until_finished` sees this request's end.

    The status line changes for other reasons too (Gradio's own timer, a re-render), and may still show the
    previous request's "Generated ..." for a moment: this request is over only once the status has said
    "Generating" (or shows something else than before the click) and then a final status."""
    page.evaluate("""(sel) => { window.statusText = () => (document.querySelector(sel)?.innerText ?? '').trim();
        window.statusBefore = window.statusText(); window.statusRan = false;
        new MutationObserver(() => { if (/^Generating/.test(window.statusText())) window.statusRan = true; })
            .observe(document.querySelector('#status'), {subtree: true, childList: true, characterData: true}); }""",
                  STATUS)
    page.locator("#generate").click()


def wait_until_finished(page, timeout_ms: int = 120_000) -> tuple[str, str]:
    """(story, status) once the status line says this request is over."""
    page.wait_for_function("(done) => { const now = window.statusText(); "
                           "return new RegExp(done).test(now) && (window.statusRan || now !== window.statusBefore); }",
                           arg=FINISHED, timeout=timeout_ms)
    return page.locator("#output textarea").input_value(), page.locator(STATUS).inner_text().strip()


def generate(page, prompt: str, timeout_ms: int = 120_000) -> str:
    """Type `prompt`, press Generate, and return the story once it is finished."""
    page.locator("#prompt textarea").fill(prompt)
    click_generate(page)
    story, status = wait_until_finished(page, timeout_ms)
    assert status.startswith("Generated"), status
    return story


def generate_in_browser(app: str, checkpoint: Path, prompt: str) -> str:
    with demo_page(app, checkpoint) as page:
        return generate(page, prompt)
