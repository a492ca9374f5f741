"""The chunked cross-entropy equals F.cross_entropy over the full logits, in value and gradients."""

import pytest
import torch
import torch.nn.functional as F

from smolhub_hub.losses import chunked_cross_entropy


def _reference(hidden, weight, targets, ignore_index=-100):
    logits = hidden @ weight.t()
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index)


def _inputs(n_tokens=37, dim=16, vocab=101, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n_tokens, dim, generator=g, dtype=dtype, requires_grad=True)
    weight = (0.3 * torch.randn(vocab, dim, generator=g, dtype=dtype)).requires_grad_()
    targets = torch.randint(0, vocab, (n_tokens,), generator=g)
    return hidden, weight, targets


def _grads(loss_fn, hidden, weight, targets, **kw):
    h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    loss = loss_fn(h, w, targets, **kw)
    (3.0 * loss).backward()  # a non-unit upstream gradient
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("chunk_size", [1, 8, 37, 1000])
def test_value_and_gradients_match_cross_entropy(chunk_size):
    hidden, weight, targets = _inputs()
    ref = _grads(_reference, hidden, weight, targets)
    got = _grads(chunked_cross_entropy, hidden, weight, targets, chunk_size=chunk_size)
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_ignore_index_and_batched_shapes():
    hidden, weight, targets = _inputs(n_tokens=24)
    targets = targets.clone()
    targets[::3] = -100
    hidden3 = hidden.detach().view(2, 12, -1)
    ref = _grads(_reference, hidden3, weight, targets.view(2, 12))
    got = _grads(chunked_cross_entropy, hidden3, weight, targets.view(2, 12), chunk_size=5)
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_float32_close_and_no_grad():
    hidden, weight, targets = _inputs(n_tokens=64, dim=32, vocab=500, dtype=torch.float32)
    ref = _grads(_reference, hidden, weight, targets)
    got = _grads(chunked_cross_entropy, hidden, weight, targets, chunk_size=16)
    for r, g in zip(ref, got, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(chunked_cross_entropy(hidden, weight, targets, chunk_size=16),
                                   _reference(hidden, weight, targets), rtol=1e-5, atol=1e-6)


def test_bad_chunk_size():
    hidden, weight, targets = _inputs()
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_cross_entropy(hidden, weight, targets, chunk_size=0)


def test_auto_chunks_only_when_the_full_logits_are_large():
    """--loss-chunk-size -1 (the default) chunks once a micro-batch's fp32 logits would pass 256 MB: at SmolLM's
    49,152 vocabulary 8 x 1,024 tokens chunk, 4 x 128 do not (there chunking cost ~23% of the head's time and saved
    no memory, bench/bench_loss.py); an explicit size is used as given."""
    from smolhub_hub.config import TrainConfig
    from smolhub_hub.losses import resolve_chunk_size

    assert TrainConfig().loss_chunk_size == -1
    assert resolve_chunk_size(-1, 8 * 1024, 49152) == 256
    assert resolve_chunk_size(-1, 4 * 128, 49152) == 0
    assert resolve_chunk_size(-1, 1365, 49152) == 0 and resolve_chunk_size(-1, 1366, 49152) == 256
    assert resolve_chunk_size(0, 8 * 1024, 49152) == 0
    assert resolve_chunk_size(7, 16, 100) == 7


def test_bf16_autocast_chunks_match_the_plain_loss():
    """Under autocast the chunked matmuls run in bf16 as the plain loss's do (the head weight cast once)."""
    hidden, weight, targets = _inputs(n_tokens=64, dim=32, vocab=500, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = _grads(_reference, hidden, weight, targets)
        got = _grads(chunked_cross_entropy, hidden, weight, targets, chunk_size=16)
    for r, g in zip(ref, got, strict=True):
        assert g.dtype == r.dtype
        torch.testing.assert_close(g, r, rtol=2e-2, atol=2e-3)


def test_the_model_loss_is_unchanged_by_chunking():
    """A model's loss and gradients are the plain ones, and eval (no grad) gets the same value."""
    from tests.helpers import tiny_llama

    torch.manual_seed(0)
    model = tiny_llama()
    idx = torch.randint(0, model.config.vocab_size, (2, 16))
    targets = torch.randint(0, model.config.vocab_size, (2, 16))
    results = []
    for chunk in (0, 7):
        model.loss_chunk_size = chunk
        model.zero_grad()
        out = model(idx, targets)
        out.loss.backward()
        assert (out.logits is None) == (chunk > 0)
        with torch.no_grad():
            torch.testing.assert_close(model(idx, targets).loss, out.loss.detach())
        results.append((out.loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-6)
