"""The generic pieces every model imports: RoPE and the attention call (causal, offset by a cache, GQA)."""

import torch
import torch.nn.functional as F

from smolhub_hub.layers import RotaryEmbedding, apply_rope, causal_attention


def test_rope_depends_on_token_position_not_dimension_index():
    rope = RotaryEmbedding(head_dim=16, max_seq_len=64)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(i, j):
        cos, sin = rope(0, 64)
        return (apply_rope(q, cos[i:i + 1], sin[i:i + 1]) * apply_rope(k, cos[j:j + 1], sin[j:j + 1])).sum()

    # Relative: the score depends on i - j only ...
    assert torch.allclose(score(5, 2), score(13, 10), atol=1e-5)
    # ... and it does depend on it (the reference StoryLlama rotated by dimension: no positions at all).
    assert not torch.allclose(score(5, 2), score(5, 4), atol=1e-3)
    cos, sin = rope(0, 8)
    assert not torch.allclose(cos[1], cos[2])


def test_rope_equals_the_rotate_half_formula():
    """apply_rope's roll-and-signed-sine form is transformers' x * cos + rotate_half(x) * sin, exactly."""
    rope = RotaryEmbedding(head_dim=16, max_seq_len=32)
    cos, sin_rot = rope(3, 9)
    t = torch.arange(3, 12, dtype=torch.float64)[:, None] * rope.inv_freq.double()
    sin = torch.cat([t, t], -1).sin().float()
    x = torch.randn(2, 4, 9, 16)
    rotate_half = torch.cat([-x[..., 8:], x[..., :8]], -1)
    assert torch.allclose(apply_rope(x, cos, sin_rot), x * cos + rotate_half * sin, atol=1e-6)


def test_chunked_prefill_mask_is_offset_causal():
    q, k, v = torch.randn(1, 2, 3, 8), torch.randn(1, 2, 5, 8), torch.randn(1, 2, 5, 8)
    out = causal_attention(q, k, v)
    # query i sits at position 2 + i and sees keys 0..2+i
    for i in range(3):
        ref = F.scaled_dot_product_attention(q[:, :, i:i + 1], k[:, :, :3 + i], v[:, :, :3 + i])
        assert torch.allclose(out[:, :, i:i + 1], ref, atol=1e-6)
