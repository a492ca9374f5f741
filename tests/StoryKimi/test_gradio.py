"""The inference CLI and the Gradio demo on a real (tiny) checkpoint; the demo driven in headless Chromium."""

import pytest

from tests.browser import generate_in_browser
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


@pytest.mark.browser
def test_demo_in_headless_chromium(kimi_run):
    text = generate_in_browser("StoryKimi/gradio/app.py", kimi_run, "Once upon a time")
    assert text.startswith("Once upon a time") and len(text) > len("Once upon a time")
