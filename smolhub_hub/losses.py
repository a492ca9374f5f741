"""The language-modelling loss: mean next-token cross-entropy, plain or chunked.

`head_and_loss` is what every model's forward ends with. With `chunk_size` 0 it projects to the full logits and
takes the cross-entropy (transformers' way); with `chunk_size` > 0 (the trainer's --loss-chunk-size; its default
chunks once the full logits would pass 256 MB, `resolve_chunk_size`) it never holds them:

`F.cross_entropy(hidden @ W.T, targets)` keeps the full fp32 logits and their gradient alive between
forward and backward: 2 x tokens x vocab x 4 bytes (1.6 GB for 4,096 tokens at a 50k vocabulary).
`chunked_cross_entropy` walks the tokens in chunks; for each chunk it computes the logits, the loss and,
at once, the gradients with respect to the hidden states and the head weight (softmax - one_hot is the
gradient of the logits), then drops the chunk's logits. Peak extra memory is one chunk's logits.
This is the torch version of Liger-Kernel's fused linear cross-entropy
(https://github.com/linkedin/Liger-Kernel); same value and gradients as the plain loss (mean over the targets that
are not `ignore_index`). Measured at SmolLM's 49,152-token vocabulary, dim 576, one CPU thread, chunk 256
(`bench/bench_loss.py --tokens N --dim 576 --vocab-size 49152 [--dtype bfloat16]`, 2026-12-02):
  - 2,048 tokens: 4.2x less peak memory for the head and loss in fp32 (279 vs 1,168 MB) at 0.94x the plain
    loss's speed; 2.3x less (537 vs 1,217 MB) at 1.02x under bf16 autocast;
  - 512 tokens: no memory saved (276 vs 304 MB fp32, 437 vs 352 bf16) at 0.91x / 0.77x the speed. Hence the
    trainer's default (`resolve_chunk_size`): chunk only once the full logits would pass 256 MB.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = -100  # targets that do not count (transformers' convention)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of (..., vocab) logits, computed in fp32 (bf16 logits lose the small probabilities)."""
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX)


AUTO_CHUNK_SIZE = 256
AUTO_CHUNK_ABOVE_BYTES = 256 * 2**20


def resolve_chunk_size(setting: int, tokens: int, vocab_size: int) -> int:
    """The trainer's --loss-chunk-size as the model uses it. -1 (auto) chunks in 256-token pieces once a
    micro-batch's full fp32 logits (tokens x vocab x 4 bytes) would pass 256 MB, and takes the plain loss below
    that, where chunking saves little memory and costs time (bench/bench_loss.py at a 49k vocabulary, one thread,
    bf16 autocast: 0.77x the plain loss's speed at 512 tokens, 1.02x at 2,048 with 2.3x less memory)."""
    if setting >= 0:
        return setting
    return AUTO_CHUNK_SIZE if tokens * vocab_size * 4 > AUTO_CHUNK_ABOVE_BYTES else 0


def head_and_loss(hidden: torch.Tensor, lm_head: nn.Linear, targets: torch.Tensor,
                  chunk_size: int = 0) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(logits, loss) of the final hidden states (B, T, dim) through the output head; logits are None when the
    loss was computed in chunks of `chunk_size` tokens (nothing reads them in training)."""
    if chunk_size > 0:
        return None, chunked_cross_entropy(hidden, lm_head.weight, targets, chunk_size)
    logits = lm_head(hidden)  # (B, T, vocab)
    return logits, cross_entropy(logits, targets)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size: int, ignore_index: int, grad_enabled: bool):
        # Forward runs with autograd off, so the caller says whether gradients will be asked for (not in eval).
        want_h, want_w = grad_enabled and ctx.needs_input_grad[0], grad_enabled and ctx.needs_input_grad[1]
        # The matmuls run in autocast's dtype when it is on, as the plain loss's would, but with autocast off
        # here and explicit casts: the head weight is cast once, not per chunk and per matmul.
        dev = hidden.device.type
        compute = (torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev)
                   else torch.promote_types(hidden.dtype, weight.dtype))
        acc = torch.promote_types(compute, torch.float32)  # bf16/fp16 logits are upcast, fp64 kept
        valid_all = targets != ignore_index
        n = valid_all.sum().to(acc)
        total = torch.zeros((), device=hidden.device, dtype=acc)
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, device=weight.device, dtype=acc) if want_w else None
        with torch.autocast(dev, enabled=False):
            w, hc = weight.to(compute), hidden.to(compute)
            for lo in range(0, hidden.shape[0], chunk_size):
                h, t, valid = hc[lo:lo + chunk_size], targets[lo:lo + chunk_size], valid_all[lo:lo + chunk_size]
                logits = (h @ w.t()).to(acc)
                safe_t = torch.where(valid, t, torch.zeros_like(t))
                picked = logits.gather(1, safe_t[:, None]).squeeze(1)
                if not (want_h or want_w):
                    total += ((torch.logsumexp(logits, dim=-1) - picked) * valid).sum()
                    continue
                # One exp pass gives both the log-sum-exp and the softmax, in place over the chunk's logits.
                peak = logits.amax(dim=-1, keepdim=True)
                grad = logits.sub_(peak).exp_()
                sums = grad.sum(dim=-1, keepdim=True)
                total += ((peak + sums.log()).squeeze(1) - picked).mul(valid).sum()
                # d loss_i / d logits_i = softmax - one_hot(t_i), and 0 for an ignored target: one pass normalises
                # and masks, with no host sync to ask whether any target is ignored
                grad.mul_(valid[:, None] / sums)
                grad[torch.arange(len(t), device=t.device), safe_t] -= valid.to(acc)
                grad = grad.to(compute)
                if want_h:
                    grad_h[lo:lo + chunk_size] = (grad @ w).to(hidden.dtype)
                if want_w:
                    grad_w += (grad.t() @ h).to(acc)
        if want_h:
            grad_h = grad_h / n.to(grad_h.dtype)
        if want_w:
            grad_w = (grad_w / n).to(weight.dtype)
        ctx.save_for_backward(grad_h, grad_w)
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return (grad_h * grad_out if grad_h is not None else None,
                grad_w * grad_out if grad_w is not None else None, None, None, None, None)


# A Python loop over chunks, which torch.compile would unroll: it runs eager, with a graph break around it.
@torch.compiler.disable
def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          chunk_size: int = 256, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean next-token cross-entropy of `hidden @ weight.T` against `targets`, computed in chunks.

    hidden: (..., dim) final hidden states; weight: (vocab, dim) the LM head; targets: (...) ids, with
    `ignore_index` for positions that do not count. Equal to
    `F.cross_entropy((hidden @ weight.T).float().view(-1, vocab), targets.view(-1), ignore_index=...)`.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 (got {chunk_size})")
    h = hidden.reshape(-1, hidden.shape[-1])
    return _ChunkedLinearCrossEntropy.apply(h, weight, targets.reshape(-1), chunk_size, ignore_index,
                                            torch.is_grad_enabled())
