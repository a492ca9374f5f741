"""Sampling: validation, greedy, top-k / top-p after temperature, EOS handling."""

import pytest
import torch

from smolhub_hub.errors import UserError
from smolhub_hub.generation import SamplingConfig, generate, sample_next
from tests.helpers import tiny_llama


@pytest.mark.parametrize("kw", [dict(temperature=-1), dict(top_k=0), dict(top_p=0.0), dict(top_p=1.5),
                                dict(max_new_tokens=-1), dict(temperature=float("nan"))])
def test_bad_sampling_values_are_clear_errors(kw):
    with pytest.raises(UserError):
        SamplingConfig(**kw).validate()


def test_temperature_zero_is_greedy():
    logits = torch.tensor([[0.1, 3.0, 0.2]])
    assert sample_next(logits, SamplingConfig(temperature=0)).item() == 1


def test_top_k_keeps_only_k_tokens_and_uses_temperature():
    torch.manual_seed(0)
    logits = torch.tensor([[5.0, 4.0, 1.0, 0.0]]).repeat(4000, 1)
    draws = sample_next(logits, SamplingConfig(temperature=1.0, top_k=2))
    assert set(draws.tolist()) <= {0, 1}
    share_t1 = (draws == 1).float().mean()
    hot = sample_next(logits, SamplingConfig(temperature=5.0, top_k=2))
    assert (hot == 1).float().mean() > share_t1 + 0.1  # temperature applies inside top-k


def test_top_p_keeps_the_nucleus():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]])).repeat(2000, 1)
    draws = sample_next(logits, SamplingConfig(temperature=1.0, top_p=0.8))
    assert set(draws.tolist()) == {0, 1}


def test_generation_stops_at_eos_and_pads_finished_rows():
    m = tiny_llama()
    x = torch.randint(0, 97, (3, 4))
    greedy = generate(m, x, SamplingConfig(max_new_tokens=6, greedy=True))
    eos = int(greedy[0, 5])  # make row 0's second new token the EOS
    out = generate(m, x, SamplingConfig(max_new_tokens=6, greedy=True), eos_id=eos)
    assert out[0, 5] == eos and (out[0, 5:] == eos).all()


def test_prompt_longer_than_context_is_a_clear_error():
    m = tiny_llama(max_seq_len=16)
    with pytest.raises(UserError, match="context"):
        generate(m, torch.zeros(1, 12, dtype=torch.long), SamplingConfig(max_new_tokens=8))


def test_stream_shows_the_prompt_when_the_story_ends_at_once():
    from smolhub_hub.inference import stream_text

    class Tok:  # a tokenizer whose EOS is the model's greedy first token
        eos_token_id = None

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1, 2, 3]}

        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    m = tiny_llama()
    m.tokenizer = Tok()
    Tok.eos_token_id = int(generate(m, torch.tensor([[1, 2, 3]]), SamplingConfig(max_new_tokens=1, greedy=True))[0, -1])
    assert list(stream_text(m, "x", max_length=5, greedy=True)) == ["1 2 3"]
