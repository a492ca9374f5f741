"""The language-modelling loss: mean next-token cross-entropy, plain or chunked.

`head_and_loss` is what every model's forward ends with. With `chunk_size` 0 it projects to the full logits and
takes the cross-entropy (transformers' way); with `chunk_size` > 0 (the trainer's --loss-chunk-size, on by
default) it never holds them:

`F.cross_entropy(hidden @ W.T, targets)` keeps the full fp32 logits and their gradient alive between
forward and backward: 2 x tokens x vocab x 4 bytes (1.6 GB for 4,096 tokens at a 50k vocabulary).
`chunked_cross_entropy` walks the tokens in chunks; for each chunk it computes the logits, the loss and,
at once, the gradients with respect to the hidden states and the head weight (softmax - one_hot is the
gradient of the logits), then drops the chunk's logits. Peak extra memory is one chunk's logits.
This is the torch version of Liger-Kernel's fused linear cross-entropy
(https://github.com/linkedin/Liger-Kernel); same value and gradients as the plain loss (mean over the targets that
are not `ignore_index`). Measured at SmolLM's 49,152-token vocabulary, 2,048 tokens, dim 576 on one CPU thread
(bench/bench_loss.py, chunk 256): 3.6x less peak memory for the head and loss in fp32 (327 vs 1,168 MB) at 0.89x
the speed, 2.5x less (489 vs 1,217 MB) at 0.84x under bf16 autocast; at the quick presets' 2,048-token vocabulary
it is also 1.6x faster.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE_INDEX = -100  # targets that do not count (transformers' convention)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token loss of (..., vocab) logits, computed in fp32 (bf16 logits lose the small probabilities)."""
    return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX)


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
        n_valid = (targets != ignore_index).sum()
        acc = torch.promote_types(hidden.dtype, torch.float32)  # bf16/fp16 logits are upcast, fp64 kept
        total = torch.zeros((), device=hidden.device, dtype=acc)
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, device=weight.device, dtype=acc) if want_w else None
        for lo in range(0, hidden.shape[0], chunk_size):
            h, t = hidden[lo:lo + chunk_size], targets[lo:lo + chunk_size]
            logits = (h @ weight.t()).to(acc)
            valid = t != ignore_index
            safe_t = torch.where(valid, t, torch.zeros_like(t))
            lse = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, safe_t[:, None]).squeeze(1)
            total += ((lse - picked) * valid).sum()
            if want_h or want_w:
                grad = torch.softmax(logits, dim=-1)  # d loss_i / d logits_i = softmax - one_hot
                grad[torch.arange(len(t), device=t.device), safe_t] -= 1.0
                grad *= valid[:, None]
                if want_h:
                    grad_h[lo:lo + chunk_size] = (grad.to(weight.dtype) @ weight).to(hidden.dtype)
                if want_w:
                    grad_w += grad.t() @ h.to(acc)
        n = n_valid.to(acc)
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
