"""The Gradio demo under 20 simultaneous requests: all answered, limits enforced on the server, memory flat."""

from __future__ import annotations

import resource
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from smolhub_hub.checkpoint import save_checkpoint
from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.data.tokenizer import train_bpe
from smolhub_hub.demo import MAX_PROMPT_CHARS, build_demo
from smolhub_hub.inference import generate_text, load_model
from StoryLlama.config import FAMILY, StoryLlamaConfig
from StoryLlama.model import StoryLlama

CAP = 16  # the server-side cap on new tokens


@pytest.fixture(scope="module")
def demo_client(tmp_path_factory):
    gradio_client = pytest.importorskip("gradio_client")
    run = tmp_path_factory.mktemp("demo-load") / "run"
    tok = train_bpe(generate_stories(300), vocab_size=384)
    torch.manual_seed(0)
    cfg = StoryLlamaConfig(vocab_size=384, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)
    save_checkpoint(run, 0, StoryLlama(cfg), {"family": "StoryLlama", "model": cfg.to_dict()}, tok)
    model = load_model(str(run), device="cpu")
    demo = build_demo(model, "load test", max_new_tokens=CAP, max_queue=32)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False), model
    finally:
        demo.close()


def _ask(client, prompt: str, max_tokens: int = CAP, temperature: float = 0.0):
    """(story, status) of one request; seed 0."""
    return client.predict(prompt, max_tokens, temperature, 0, 1.0, 0, api_name="/run")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_twenty_simultaneous_requests_are_all_answered_within_the_caps(demo_client):
    client, model = demo_client
    prompts = [f"Once upon a time, friend number {i}" for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda p: _ask(client, p), prompts))
    peak_after_first_wave = _rss_mb()
    for prompt, (story, _) in zip(prompts, answers, strict=True):  # greedy: exactly what CAP new tokens give in-process
        assert story == generate_text(model, prompt, max_length=CAP, greedy=True)
    with ThreadPoolExecutor(20) as pool:
        assert all(pool.map(lambda p: _ask(client, p, temperature=0.8)[0].startswith(p), prompts))
    assert _rss_mb() - peak_after_first_wave < 200  # a second wave does not grow memory


def test_limits_are_enforced_by_the_server(demo_client):
    client, _ = demo_client
    with pytest.raises(Exception, match="maximum value 16"):  # not only the slider in the browser
        _ask(client, "Once upon a time", max_tokens=10_000)
    assert "the limit is" in _ask(client, "x" * (MAX_PROMPT_CHARS + 1))[1]
    assert "Type a prompt" in _ask(client, "   ")[1]


def test_default_bind_is_loopback():
    from smolhub_hub.demo import build_parser

    assert build_parser(FAMILY).parse_args([]).host == "127.0.0.1"
