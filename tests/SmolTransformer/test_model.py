"""SmolTransformer's model on its own: sizes, causality, the KV cache, and the context-length guard."""

from __future__ import annotations

import pytest
import torch

from smolhub_hub.errors import UserError
from smolhub_hub.generation import SamplingConfig, generate
from SmolTransformer.config import FAMILY, SmolTransformerConfig
from SmolTransformer.model import SmolTransformer


def tiny(**kw) -> SmolTransformer:
    torch.manual_seed(0)
    cfg = SmolTransformerConfig(vocab_size=97, dim=32, n_layers=2, n_heads=4, max_seq_len=24).replace(**kw)
    return SmolTransformer(cfg).eval()


def count_on_meta(preset: str) -> int:
    with torch.device("meta"):
        return SmolTransformer(FAMILY.build(preset)).param_counts()["total"]


def test_default_is_about_150m_and_gpt2_preset_is_gpt2_small():
    assert 145e6 < count_on_meta("default") < 155e6
    assert count_on_meta("gpt2") == 124_439_808  # OpenAI GPT-2 small, tied head counted once


def test_presets_say_what_they_mean():
    m, t, d = FAMILY.resolve("default")
    assert (m.norm, m.max_seq_len, d.dataset, d.dataset_config, d.tokenizer) == \
        ("rmsnorm", 1024, "HuggingFaceFW/fineweb", "sample-10BT", "gpt2")
    m, t, d = FAMILY.resolve("quick")  # nothing of the FineWeb recipe leaks into the CPU preset
    assert (t.total_batch_tokens, d.dataset, d.dataset_config, d.tokenizer) == (0, "builtin", "", "bpe")
    m = FAMILY.build("gpt2")
    assert (m.norm, m.bias, m.gelu_approximate, m.vocab_size, m.max_seq_len) == ("layernorm", True, "tanh", 50257, 1024)


def test_norm_and_bias_choices():
    rms = tiny()
    assert type(rms.norm).__name__ == "RMSNorm" and not any(n.endswith("bias") for n, _ in rms.named_parameters())
    ln = tiny(norm="layernorm", bias=True)
    assert isinstance(ln.norm, torch.nn.LayerNorm) and ln.blocks[0].attn.wqkv.bias is not None
    assert tiny(norm="layernorm").norm.bias is None  # nanoGPT's bias=False LayerNorm
    assert ln.blocks[0].attn.n_kv_heads == ln.blocks[0].attn.n_heads  # multi-head, not grouped


def test_causal_and_positions_matter():
    model = tiny()
    idx = torch.randint(0, 97, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 97
    with torch.no_grad():
        a, b = model(idx).logits, model(changed).logits
        torch.testing.assert_close(a[:, :10], b[:, :10])
        # Same token at two positions gets different logits: the learned positions are used.
        same = torch.full((1, 4), 5)
        out = model(same).logits[0]
    assert not torch.allclose(out[1], out[2])


def test_kv_cache_matches_full_forward():
    model = tiny(norm="layernorm", bias=True)
    idx = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        full = model(idx).logits
        cache = model.new_cache(2, 20)
        steps = [model(idx[:, :12], cache=cache).logits[:, -1]]
        steps += [model(idx[:, t:t + 1], cache=cache).logits[:, -1] for t in range(12, 20)]
    torch.testing.assert_close(torch.stack(steps[:-1], 1), full[:, 11:19], atol=1e-5, rtol=0)


def test_loss_trains_every_parameter():
    model = tiny(norm="layernorm", bias=True, dropout=0.1).train()
    idx = torch.randint(0, 97, (2, 24))
    out = model(idx[:, :-1], targets=idx[:, 1:])
    assert out.loss is out.lm_loss and out.aux_loss is None
    out.loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert no_grad == []


def test_eval_is_deterministic_with_dropout():
    model = tiny(dropout=0.5)
    idx = torch.randint(0, 97, (1, 12))
    with torch.no_grad():
        assert torch.equal(model(idx).logits, model(idx).logits)


def test_forward_past_learned_positions_is_a_clear_error():
    model = tiny()
    with pytest.raises(UserError, match="24 tokens"):
        model(torch.zeros(1, 25, dtype=torch.long))


def test_generation_past_context_is_a_clear_error():
    model = tiny()
    with pytest.raises(UserError, match="context of 24"):
        generate(model, torch.zeros(1, 20, dtype=torch.long), SamplingConfig(max_new_tokens=5, greedy=True))
    out = generate(model, torch.zeros(1, 20, dtype=torch.long), SamplingConfig(max_new_tokens=4, greedy=True))
    assert out.shape == (1, 24)


def test_seq_len_beyond_learned_positions_is_a_clear_error():
    cfg = FAMILY.build("quick")
    assert cfg.validate(seq_len=cfg.max_seq_len) is cfg
    with pytest.raises(UserError, match="--seq-len 256 exceeds the 128 learned positions"):
        cfg.validate(seq_len=256)
    with pytest.raises(UserError, match="multiple of --n-heads"):
        cfg.replace(n_heads=5)


def test_config_round_trips_through_json():
    cfg = FAMILY.build("gpt2")
    assert SmolTransformerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UserError, match="another model family"):
        SmolTransformerConfig.from_dict({**cfg.to_dict(), "n_kv_heads": 4})
