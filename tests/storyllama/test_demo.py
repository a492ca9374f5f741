"""The Gradio demo: in a real browser, and never on random weights."""

import pytest

from tests.browser import generate_in_browser
from tests.helpers import run_cli


@pytest.mark.browser
def test_demo_generates_in_headless_chromium(llama_run):
    text = generate_in_browser("StoryLlama/gradio/app.py", llama_run, "Once upon a time")
    assert text.startswith("Once upon a time") and len(text) > len("Once upon a time")


def test_demo_refuses_to_start_without_a_checkpoint(tmp_path):
    proc = run_cli("StoryLlama/gradio/app.py", "--checkpoint", tmp_path / "missing", timeout=120)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "trainer.py --preset quick" in proc.stderr
