"""Chat templates: a checkpoint whose tokenizer has one answers through it (inference, `smolhub generate`, the demo);
others, and --no-chat, continue the prompt as plain text."""

from __future__ import annotations

import pytest
import torch

from smolhub_hub import cli
from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.data.tokenizer import train_bpe
from smolhub_hub.errors import UserError
from smolhub_hub.generation import SamplingConfig, generate
from smolhub_hub.inference import generate_text, load_model, stream_text
from tests.export.conftest import make_checkpoint
from tests.real.conftest import needs_real_model

TEMPLATE = ("{% for m in messages %}<user> {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}<assistant> {% endif %}")
PROMPT = "Where did the dog run?"


@pytest.fixture(scope="module")
def chat_checkpoint(tmp_path_factory):
    tokenizer = train_bpe(generate_stories(200), vocab_size=300)
    tokenizer.chat_template = TEMPLATE
    return make_checkpoint(tmp_path_factory.mktemp("chat") / "run", "StoryLlama", tokenizer)


def _greedy_new_text(model, text: str, n: int) -> str:
    ids = torch.tensor([model.tokenizer(text, add_special_tokens=False)["input_ids"]])
    out = generate(model, ids, SamplingConfig(n, greedy=True), eos_id=model.tokenizer.eos_token_id)
    return model.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_a_chat_template_wraps_the_prompt_and_the_answer_is_shown_alone(chat_checkpoint):
    model = load_model(str(chat_checkpoint), device="cpu")
    templated = f"<user> {PROMPT}\n<assistant> "
    answer = generate_text(model, PROMPT, max_length=12, greedy=True)
    assert answer == _greedy_new_text(model, templated, 12)
    assert list(stream_text(model, PROMPT, max_length=12, greedy=True))[-1] == answer
    plain = generate_text(model, PROMPT, max_length=12, greedy=True, chat=False)
    assert plain == PROMPT + _greedy_new_text(model, PROMPT, 12)


def test_smolhub_generate_chats_by_default_and_no_chat_continues_the_text(chat_checkpoint, capsys):
    common = ["generate", str(chat_checkpoint), "--prompt", PROMPT, "--greedy", "--max-length", "8"]
    cli.main(common)
    chat_out = capsys.readouterr().out
    cli.main([*common, "--no-chat"])
    plain_out = capsys.readouterr().out
    assert plain_out.startswith(PROMPT) and not chat_out.startswith(PROMPT)


def test_chat_without_a_template_is_refused_and_plain_prompts_stay_plain(tmp_path, capsys):
    from tests.export.conftest import make_checkpoint as make

    ckpt = make(tmp_path / "run", "StoryLlama", train_bpe(generate_stories(200), vocab_size=300))
    model = load_model(str(ckpt), device="cpu")
    assert generate_text(model, PROMPT, max_length=4, greedy=True).startswith(PROMPT)
    with pytest.raises(UserError, match="has no chat template; drop --chat"):
        generate_text(model, PROMPT, max_length=4, chat=True)


def test_the_demo_answers_through_the_template(chat_checkpoint):
    from smolhub_hub.demo import room_for, story_events

    model = load_model(str(chat_checkpoint), device="cpu")
    n_chat, _, _ = room_for(model, PROMPT, 8, chat=True)
    n_plain, _, _ = room_for(model, PROMPT, 8, chat=False)
    assert n_chat > n_plain  # the template's tokens count against the context
    *_, (text, status) = story_events(model, 8, PROMPT, 8, 1.0, 1, None, 0, chat=True)
    assert text == generate_text(model, PROMPT, max_length=8, greedy=True) and status.startswith("Generated")


@needs_real_model
def test_the_instruct_model_answers_a_question(smollm2):
    answer = generate_text(smollm2, "What is the capital of France?", max_length=24, greedy=True)
    assert "Paris" in answer and not answer.startswith("What is")
