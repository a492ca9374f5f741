"""The StoryMixtral Gradio demo (SmolMixtral's shared app) in headless Chromium, and its refusals."""

import pytest

from tests.browser import demo_page, generate
from tests.helpers import REPO, run_cli


def test_missing_checkpoint_is_refused_not_random_weights(tmp_path):
    proc = run_cli("StoryMixtral/gradio/app.py", "--checkpoint", tmp_path / "nothing", cwd=REPO / "StoryMixtral/gradio")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "trainer.py --preset quick" in proc.stderr


@pytest.mark.browser
def test_demo_generates_in_headless_chromium(story_run):
    with demo_page("StoryMixtral/gradio/app.py", story_run, max_new_tokens=12) as page:
        assert generate(page, "Once upon a time").startswith("Once upon a time")
        assert "StoryMixtral" in page.content() and "active" in page.content()
