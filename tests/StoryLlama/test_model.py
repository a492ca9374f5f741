"""StoryLlama's model: grouped-query attention, the KV cache, positions, dropout, tying, activation checkpointing."""

import pytest
import torch

from StoryLlama.model import GroupedQueryAttention, unfused_state_dict
from tests.helpers import tiny_llama


def test_model_output_depends_on_order():
    m = tiny_llama()
    x = torch.tensor([[5, 6, 7, 8]])
    swapped = torch.tensor([[6, 5, 7, 8]])
    assert not torch.allclose(m(x).logits[0, -1], m(swapped).logits[0, -1], atol=1e-4)


@pytest.mark.parametrize("n_kv", [1, 2, 4])
def test_gqa_matches_repeated_heads_reference(n_kv):
    torch.manual_seed(0)
    attn = GroupedQueryAttention(dim=32, n_heads=4, n_kv_heads=n_kv, layer_idx=0).eval()
    x = torch.randn(2, 7, 32)
    hd = 8
    wq, wk, wv = attn.wqkv.weight.split(attn.qkv_sizes)  # rows: queries, keys, values
    q = (x @ wq.T).view(2, 7, 4, hd).transpose(1, 2)
    k = (x @ wk.T).view(2, 7, n_kv, hd).transpose(1, 2).repeat_interleave(4 // n_kv, dim=1)
    v = (x @ wv.T).view(2, 7, n_kv, hd).transpose(1, 2).repeat_interleave(4 // n_kv, dim=1)
    mask = torch.ones(7, 7, dtype=torch.bool).tril()
    scores = (q @ k.transpose(-1, -2)) / hd ** 0.5
    ref = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
    ref = attn.wo(ref.transpose(1, 2).reshape(2, 7, 32))
    assert torch.allclose(attn(x), ref, atol=1e-5)
    assert wk.shape[0] == n_kv * hd


def test_separate_qkv_weights_load_into_the_fused_projection():
    """Checkpoints written before q/k/v were fused (and importers) give wq/wk/wv: they load unchanged."""
    a, b = tiny_llama(), tiny_llama()
    with torch.no_grad():
        for p in b.parameters():
            p.normal_()
    separate = unfused_state_dict(a)
    assert "blocks.0.attn.wq.weight" in separate and "blocks.0.attn.wqkv.weight" not in separate
    b.load_state_dict(separate)
    x = torch.randint(0, 97, (1, 9))
    assert torch.equal(a(x).logits, b(x).logits)


def test_causal_future_tokens_do_not_change_the_past():
    m = tiny_llama()
    a = torch.tensor([[1, 2, 3, 4, 5, 6]])
    b = torch.tensor([[1, 2, 3, 9, 9, 9]])
    assert torch.allclose(m(a).logits[:, :3], m(b).logits[:, :3], atol=1e-6)
    assert not torch.allclose(m(a).logits[:, 3:], m(b).logits[:, 3:], atol=1e-4)


@pytest.mark.parametrize("chunks", [[10], [1] * 10, [4, 1, 5], [3, 3, 3, 1]])
def test_kv_cache_equals_full_recompute(chunks):
    m = tiny_llama()
    x = torch.randint(0, 97, (2, sum(chunks)))
    full = m(x).logits
    cache = m.new_cache(2, sum(chunks))
    pos = 0
    for c in chunks:
        out = m(x[:, pos:pos + c], cache=cache).logits
        pos += c
        assert torch.allclose(out[:, -1], full[:, pos - 1], atol=1e-5)


def test_dropout_only_in_training():
    m = tiny_llama(dropout=0.5)
    x = torch.randint(0, 97, (1, 12))
    assert torch.equal(m(x).logits, m(x).logits)  # eval: deterministic
    m.train()
    assert not torch.equal(m(x).logits, m(x).logits)


def test_weight_tying_and_param_count():
    m = tiny_llama()
    assert m.lm_head.weight is m.tok_emb.weight
    assert m.param_counts()["total"] == sum(p.numel() for p in set(m.parameters()))


def test_activation_checkpointing_same_gradients():
    m = tiny_llama().train()
    x = torch.randint(0, 97, (2, 16))
    m(x, x).loss.backward()
    g1 = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.gradient_checkpointing = True
    m(x, x).loss.backward()
    for a, p in zip(g1, m.parameters(), strict=True):
        assert torch.allclose(a, p.grad, atol=1e-6)


@pytest.mark.parametrize("dim, heads", [(68, 4), (4, 4)])
def test_odd_or_tiny_head_dim_is_refused_for_rope(dim, heads):
    with pytest.raises(ValueError, match="even head dimension"):
        tiny_llama(dim=dim, n_heads=heads, n_kv_heads=heads)
