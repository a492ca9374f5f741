"""SmolTransformer/gradio/app.py as a user meets it: started from inside gradio/, driven in headless Chromium."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from smolhub_hub.checkpoint import save_checkpoint
from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.data.tokenizer import train_bpe
from SmolTransformer.config import SmolTransformerConfig
from SmolTransformer.model import SmolTransformer
from tests.browser import demo_page, generate
from tests.helpers import REPO


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained tiny SmolTransformer saved like a training run (the demo only needs the files)."""
    run = tmp_path_factory.mktemp("st-demo") / "run"
    tok = train_bpe(generate_stories(300), vocab_size=384)
    torch.manual_seed(0)
    cfg = SmolTransformerConfig(vocab_size=384, dim=32, n_layers=2, n_heads=4, max_seq_len=64)
    save_checkpoint(run, 0, SmolTransformer(cfg), {"family": "SmolTransformer", "model": cfg.to_dict()}, tok)
    return run


@pytest.mark.browser
def test_demo_generates_in_the_browser(checkpoint):
    with demo_page("SmolTransformer/gradio/app.py", checkpoint, max_new_tokens=20) as page:
        assert "SmolTransformer demo" in page.content()
        assert re.match(r"^Tom went to\S*\s*\S", generate(page, "Tom went to"))


def test_missing_checkpoint_is_a_clear_error_not_random_weights(tmp_path):
    proc = subprocess.run([sys.executable, "app.py", "--checkpoint", str(tmp_path / "nothing")],
                          cwd=REPO / "SmolTransformer" / "gradio", capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Train one first" in proc.stderr and "Traceback" not in proc.stderr
