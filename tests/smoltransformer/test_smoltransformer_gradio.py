"""SmolTransformer/gradio/app.py as a user meets it: started from inside gradio/, driven in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

from smolhub_hub.checkpoint import save_checkpoint
from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.data.tokenizer import train_bpe
from SmolTransformer.config import SmolTransformerConfig
from SmolTransformer.model import SmolTransformer
from tests.helpers import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.browser, pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained tiny SmolTransformer saved like a training run (the demo only needs the files)."""
    run = tmp_path_factory.mktemp("st-demo") / "run"
    tok = train_bpe(generate_stories(300), vocab_size=384)
    torch.manual_seed(0)
    cfg = SmolTransformerConfig(vocab_size=384, dim=32, n_layers=2, n_heads=4, max_seq_len=64)
    save_checkpoint(run, 0, SmolTransformer(cfg), {"family": "SmolTransformer", "model": cfg.to_dict()}, tok)
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app.py exited: {proc.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"app.py did not answer on {url} within {timeout}s")


@pytest.fixture(scope="module")
def demo_url(checkpoint):
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "app.py", "--checkpoint", str(checkpoint), "--port", str(port),
                             "--max-new-tokens", "20"],
                            cwd=REPO / "SmolTransformer" / "gradio", env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_demo_generates_in_the_browser(demo_url):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(demo_url)
            expect(page.get_by_text("SmolTransformer demo")).to_be_visible(timeout=60_000)
            page.locator("#prompt textarea").fill("Tom went to")
            page.locator("#generate").click()
            output = page.locator("#output textarea")
            expect(output).to_have_value(re.compile(r"^Tom went to\S*\s*\S"), timeout=60_000)
        finally:
            browser.close()


def test_missing_checkpoint_is_a_clear_error_not_random_weights(tmp_path):
    proc = subprocess.run([sys.executable, "app.py", "--checkpoint", str(tmp_path / "nothing")],
                          cwd=REPO / "SmolTransformer" / "gradio", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Train one first" in proc.stderr and "Traceback" not in proc.stderr
