"""`--show-routing`: which experts each generated token went to, layer by layer (the MoE families' inference CLI)."""

from __future__ import annotations

import torch


@torch.no_grad()
def routing_of(model, ids: torch.Tensor) -> dict[int, torch.Tensor]:
    """Chosen experts of every token of `ids` (1, T): {block index: (T, top_k)}, heaviest first.

    One eval forward over the whole sequence: the same routing that cached generation used
    (eval routing is deterministic; there is no noise outside training).
    """
    was_training = model.training
    model.eval()
    try:
        model(ids)
    finally:
        model.train(was_training)
    model.routing_stats()  # this forward is no training statistic: drop it from the window
    return {block: layer.last_routing.expert_ids for block, layer in model.moe_layers().items()}


def format_routing(tokenizer, ids: torch.Tensor, routing: dict[int, torch.Tensor], start: int) -> str:
    """One line per token from `start`: the token, then `e<first>+e<second>` per MoE layer (L<block index>)."""
    lines = ["token            " + " ".join(f"L{block:<6}" for block in routing)]
    for pos in range(start, ids.shape[1]):
        text = repr(tokenizer.decode([int(ids[0, pos])]))[:16]
        experts = ["+".join(f"e{int(e)}" for e in chosen[pos]) for chosen in routing.values()]
        lines.append(f"{text:<16} " + " ".join(f"{x:<7}" for x in experts))
    return "\n".join(lines)
