"""Multi-head latent attention: per layer and per head, positions, and the latent generation cache."""

import torch

from smolhub_hub.generation import SamplingConfig, generate
from StoryKimi.model import StoryKimi
from tests.StoryKimi.conftest import perturb, tiny_config


def test_shapes_and_projections_per_layer():
    c = tiny_config(q_lora_rank=24)
    model = StoryKimi(c)
    attn = model.blocks[0].attn
    assert attn.wq_a.weight.shape == (24, c.dim)
    assert attn.wq_b.weight.shape == (c.n_heads * (c.qk_nope_head_dim + c.qk_rope_head_dim), 24)
    assert attn.wkv_a.weight.shape == (c.kv_lora_rank + c.qk_rope_head_dim, c.dim)
    assert attn.wkv_b.weight.shape == (c.n_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank)
    assert attn.wo.weight.shape == (c.dim, c.n_heads * c.v_head_dim)
    # each layer owns its projections (the reference shared layer 0's latent with every layer)
    ptrs = {b.attn.wkv_a.weight.data_ptr() for b in model.blocks}
    assert len(ptrs) == c.n_layers
    out = model(torch.randint(0, c.vocab_size, (2, 10)))
    assert out.logits.shape == (2, 10, c.vocab_size)


def test_every_down_projection_and_every_head_gets_gradient():
    """Reference bug: the latent crossed heads and layers, so 47 of 48 down-projections got no gradient."""
    c = tiny_config(q_lora_rank=24)
    torch.manual_seed(0)
    model = StoryKimi(c)
    idx = torch.randint(0, c.vocab_size, (2, 16))
    model(idx, idx).loss.backward()
    for i, block in enumerate(model.blocks):
        a = block.attn
        for name in ("wq_a", "wq_b", "wkv_a", "wkv_b", "wo"):
            assert getattr(a, name).weight.grad.abs().sum() > 0, f"layer {i} {name} got no gradient"
        per_head_up = a.wkv_b.weight.grad.view(c.n_heads, -1, c.kv_lora_rank).abs().sum((1, 2))
        per_head_q = a.wq_b.weight.grad.view(c.n_heads, -1, 24).abs().sum((1, 2))
        assert (per_head_up > 0).all() and (per_head_q > 0).all(), f"layer {i}: a head got no gradient"


def test_heads_are_independent():
    """Changing one head's up-projection changes the output only through that head."""
    c = tiny_config(n_layers=1, first_k_dense=1)
    torch.manual_seed(0)
    attn = StoryKimi(c).blocks[0].attn.eval()
    model_rope = StoryKimi(c).rope
    x = torch.randn(1, 8, c.dim)
    rope = model_rope(0, 8)
    hooked = {}
    attn.wo.register_forward_hook(lambda m, inp, out: hooked.__setitem__("y", inp[0].detach().clone()))
    attn(x, rope)
    before = hooked["y"].view(1, 8, c.n_heads, c.v_head_dim)
    with torch.no_grad():
        attn.wkv_b.weight.view(c.n_heads, -1, c.kv_lora_rank)[2].mul_(3.0)
    attn(x, rope)
    after = hooked["y"].view(1, 8, c.n_heads, c.v_head_dim)
    changed = (after - before).abs().amax((0, 1, 3)) > 1e-6
    assert changed.tolist() == [False, False, True, False]


def test_attention_depends_on_position():
    """Reference bug (StoryLlama): RoPE by dimension index; here the same tokens at other positions differ."""
    torch.manual_seed(0)
    model = perturb(StoryKimi(tiny_config())).eval()
    idx = torch.randint(0, 97, (1, 12))
    with torch.no_grad():
        full = model(idx).logits
        swapped = model(idx.flip(1)).logits
        # the first token alone, then the same token after a prefix: different context -> different logits
        assert not torch.allclose(full[0, -1], swapped[0, 0], atol=1e-4)
        # RoPE is relative: shifting all positions leaves attention unchanged
        q = torch.randn(1, 1, 5, 8)
        cos0, sin0 = model.rope(0, 5)
        cos7, sin7 = model.rope(7, 5)
        from smolhub_hub.layers import apply_rope
        s0 = apply_rope(q, cos0, sin0) @ apply_rope(q, cos0, sin0).transpose(-1, -2)
        s7 = apply_rope(q, cos7, sin7) @ apply_rope(q, cos7, sin7).transpose(-1, -2)
        torch.testing.assert_close(s0, s7, atol=1e-5, rtol=0)
        assert not torch.allclose(s0, apply_rope(q, cos0, sin0) @ q.transpose(-1, -2), atol=1e-3)


def test_cached_generation_equals_full_recompute(tiny_model):
    idx = torch.randint(0, 97, (2, 7))
    cached = generate(tiny_model, idx, SamplingConfig(max_new_tokens=30, greedy=True))
    ids = idx
    with torch.no_grad():
        for _ in range(30):
            ids = torch.cat([ids, tiny_model(ids).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(cached, ids)


def test_cached_logits_match_in_chunks(tiny_model):
    """Prefill, a multi-token chunk (masked, offset) and single tokens all agree with the full forward."""
    idx = torch.randint(0, 97, (2, 20))
    with torch.no_grad():
        full = tiny_model(idx).logits
        cache = tiny_model.new_cache(2, 20)
        steps = [(0, 8), (8, 13), (13, 14), (14, 20)]
        for a, b in steps:
            out = tiny_model(idx[:, a:b], cache=cache).logits[:, -1]
            torch.testing.assert_close(out, full[:, b - 1], atol=1e-5, rtol=0)
    assert cache.pos == 20


def test_latent_cache_is_smaller_than_multi_head_cache(tiny_model):
    c = tiny_model.config
    latent = tiny_model.new_cache(1, 16).nbytes_per_token()
    assert latent == 4 * c.n_layers * (c.kv_lora_rank + c.qk_rope_head_dim)
    mha = 4 * c.n_layers * 2 * c.dim  # a same-width multi-head attention caches K and V of `dim` each
    ratio = latent / mha
    print(f"latent cache / MHA cache bytes per token: {ratio:.3f}")
    assert ratio < 0.5


def test_eval_is_deterministic_with_dropout():
    torch.manual_seed(0)
    model = StoryKimi(tiny_config(dropout=0.3)).eval()
    idx = torch.randint(0, 97, (1, 10))
    with torch.no_grad():
        assert torch.equal(model(idx).logits, model(idx).logits)
