"""Shared test setup: offline, a private data cache, one thread per worker, tiny trained checkpoints."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # workers share the cores; OpenMP oversubscription is slower, not faster


@pytest.fixture(autouse=True)
def one_thread():
    """Tests run tiny tensors: a second thread costs more in start-up and waiting on shared cores than it saves."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture(scope="session", autouse=True)
def _smolhub_cache(tmp_path_factory):
    """Packed-token caches go to a per-session folder, never to the user's ~/.cache."""
    path = tmp_path_factory.mktemp("smolhub-cache")
    old = os.environ.get("SMOLHUB_CACHE")
    os.environ["SMOLHUB_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SMOLHUB_CACHE", None)
    else:
        os.environ["SMOLHUB_CACHE"] = old


@pytest.fixture(scope="session")
def bpe_tokenizer():
    """A byte-level BPE of 400 ids trained on 300 built-in stories: for checkpoints made without training."""
    from smolhub_hub.data.builtin import generate_stories
    from smolhub_hub.data.tokenizer import train_bpe

    return train_bpe(generate_stories(300), vocab_size=400)


# CI explores the same examples every run (a red CI must be reproducible); locally hypothesis explores.
try:
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
    if os.environ.get("CI"):
        settings.load_profile("ci")
except ImportError:
    pass
