"""The Gradio demo: it answers every prompt that fits, in-process and in a real browser, never on random weights."""

from __future__ import annotations

import re

import pytest
import torch

from smolhub_hub.checkpoint import save_checkpoint
from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.data.tokenizer import train_bpe
from smolhub_hub.demo import MAX_PROMPT_CHARS, story_events
from smolhub_hub.inference import generate_text, load_model
from StoryLlama.config import FAMILY
from tests.browser import STATUS, click_generate, demo_page, wait_until_finished
from tests.helpers import run_cli

# A model slow enough (~10 ms a token) and a context long enough that a story can be stopped half-way.
BROWSER_MODEL = {"max_seq_len": 256, "dim": 256, "n_layers": 6}


def _save_quick_model(run, **model):
    """An untrained quick-preset StoryLlama (the demo only needs the files)."""
    tok = train_bpe(generate_stories(300), vocab_size=384)
    torch.manual_seed(0)
    cfg = FAMILY.build("quick", vocab_size=384, **model)
    save_checkpoint(run, 0, FAMILY.model_class()(cfg), {"family": "StoryLlama", "model": cfg.to_dict()}, tok)
    return run


@pytest.fixture(scope="module")
def quick_model(tmp_path_factory):
    """The quick preset's shape, context 128 tokens."""
    return load_model(str(_save_quick_model(tmp_path_factory.mktemp("demo") / "run", max_seq_len=128)), device="cpu")


def prompt_of(model, n_tokens: int) -> str:
    words = " ".join(["Lily went to the park with her dog."] * n_tokens)
    ids = model.tokenizer(words, add_special_tokens=False)["input_ids"][:n_tokens]
    prompt = model.tokenizer.decode(ids)
    assert len(model.tokenizer(prompt, add_special_tokens=False)["input_ids"]) == n_tokens
    return prompt


def _final(model, prompt, max_tokens, cap=127, temperature=0.0, seed=0):
    *_, (story, status) = story_events(model, cap, prompt, max_tokens, temperature, 0, 1.0, seed)
    return story, status


@pytest.mark.parametrize("prompt_tokens, asked", [(4, 127), (40, 100), (40, 127), (127, 127)])
def test_every_prompt_that_fits_is_answered_up_to_the_context(quick_model, prompt_tokens, asked):
    prompt = prompt_of(quick_model, prompt_tokens)
    story, status = _final(quick_model, prompt, asked)
    room = 128 - prompt_tokens
    assert story == generate_text(quick_model, prompt, max_length=min(asked, room), greedy=True)
    if asked > room:
        assert f"Generated {room} tokens of the {asked} asked: the context is full" in status
    else:
        assert status.startswith(f"Generated {asked} tokens.")


@pytest.mark.parametrize("prompt, reason", [("   ", "Type a prompt"), ("x" * (MAX_PROMPT_CHARS + 1), "characters"),
                                            (None, "Type a prompt")])
def test_a_prompt_it_cannot_answer_keeps_the_story_and_says_why(quick_model, prompt, reason):
    import gradio as gr

    (story, status), = story_events(quick_model, 127, prompt, 50, 0.7, 0, 1.0, 0)
    assert story == gr.update() and status.startswith("⚠") and reason in status


def test_a_prompt_longer_than_the_context_is_refused_with_its_length(quick_model):
    (story, status), = story_events(quick_model, 127, prompt_of(quick_model, 128), 50, 0.7, 0, 1.0, 0)
    assert "128 tokens; this model reads at most 127" in status and "Shorten it" in status


def test_the_seed_decides_the_story(quick_model):
    prompt = "Once upon a time"
    first, status = _final(quick_model, prompt, 30, temperature=1.0, seed=7)
    assert _final(quick_model, prompt, 30, temperature=1.0, seed=7)[0] == first and "Seed 7." in status
    assert _final(quick_model, prompt, 30, temperature=1.0, seed=8)[0] != first
    _, status = _final(quick_model, prompt, 5, temperature=1.0, seed=-1)  # -1: a random seed, reported
    assert re.search(r"Seed \d+\.$", status)


# --- in Chromium -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo-browser")
    run = _save_quick_model(folder / "run", **BROWSER_MODEL)
    log = folder / "server.log"
    with demo_page("StoryLlama/gradio/app.py", run, max_new_tokens=1000, log=log) as page:
        page.server_log = log
        page.model = load_model(str(run), device="cpu")
        yield page


def _set_number(page, elem_id: str, value):
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _slider_max(page) -> int:
    return int(page.locator("#max-tokens input[type=range]").get_attribute("max"))


@pytest.mark.browser
def test_browser_long_prompt_at_the_slider_max_then_an_error_keeps_the_story(browser_page):
    page = browser_page
    prompt = prompt_of(page.model, 40)
    page.locator("#prompt textarea").fill(prompt)
    _set_number(page, "max-tokens", _slider_max(page))
    _set_number(page, "temperature", 0)
    click_generate(page)
    story, status = wait_until_finished(page)
    assert story == generate_text(page.model, prompt, max_length=BROWSER_MODEL["max_seq_len"] - 40, greedy=True)
    assert "the context is full" in status

    page.locator("#prompt textarea").fill(prompt_of(page.model, BROWSER_MODEL["max_seq_len"]))
    click_generate(page)
    after, status = wait_until_finished(page)
    assert after == story and "Shorten it" in status
    assert "Traceback" not in page.server_log.read_text()


@pytest.mark.browser
def test_browser_stop_button_stops_the_story(browser_page):
    page = browser_page
    page.locator("#prompt textarea").fill("Once upon a time")
    _set_number(page, "max-tokens", _slider_max(page))
    _set_number(page, "temperature", 0)
    prompt_tokens = len(page.model.tokenizer("Once upon a time", add_special_tokens=False)["input_ids"])
    full = generate_text(page.model, "Once upon a time", max_length=BROWSER_MODEL["max_seq_len"] - prompt_tokens,
                         greedy=True)
    click_generate(page)
    page.wait_for_function("(p) => { const v = document.querySelector('#output textarea').value; "
                           "return v.startsWith(p) && v.length > p.length; }", arg="Once upon a time")
    page.locator("#stop").click()
    page.wait_for_function("(sel) => /^Stopped after/.test(document.querySelector(sel).innerText.trim())", arg=STATUS)
    # Tokens already on their way to the browser when Stop was pressed may still arrive: wait until the story
    # stays the same for a second, then it must be a strict beginning of the whole story.
    stopped, previous = page.locator("#output textarea").input_value(), None
    for _ in range(10):
        if stopped == previous:
            break
        page.wait_for_timeout(1000)
        stopped, previous = page.locator("#output textarea").input_value(), stopped
    assert stopped == previous, "the story kept growing after Stop"
    assert full.startswith(stopped) and len(stopped) < len(full)


@pytest.mark.browser
def test_browser_seed_and_examples(browser_page):
    page = browser_page
    from playwright.sync_api import expect

    page.get_by_role("button", name=re.compile("^Lily found")).click()
    expect(page.locator("#prompt textarea")).to_have_value(re.compile("^Lily found"))
    _set_number(page, "max-tokens", 20)
    _set_number(page, "temperature", 1.0)
    stories = []
    for seed in (11, 12, 11):
        _set_number(page, "seed", seed)
        click_generate(page)
        stories.append(wait_until_finished(page))
        assert stories[-1][1].endswith(f"Seed {seed}.")
    assert stories[0][0] == stories[2][0] != stories[1][0]


def test_demo_refuses_to_start_without_a_checkpoint(tmp_path):
    proc = run_cli("StoryLlama/gradio/app.py", "--checkpoint", tmp_path / "missing", timeout=120)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "trainer.py --preset quick" in proc.stderr
