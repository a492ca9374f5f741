"""`--show-routing`: which experts each generated token went to, layer by layer."""

from __future__ import annotations

import torch


@torch.no_grad()
def routing_of(model, ids: torch.Tensor) -> torch.Tensor:
    """Chosen experts of every token of `ids` (1, T): (T, n_layers, top_k), heaviest first.

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
    return torch.stack(model.last_routing(), dim=1)


def format_routing(tokenizer, ids: torch.Tensor, routing: torch.Tensor, start: int) -> str:
    """One line per token from `start`: the token, then `e<first>+e<second>` per layer."""
    n_layers = routing.shape[1]
    lines = ["token            " + " ".join(f"L{i:<6}" for i in range(n_layers))]
    for pos in range(start, ids.shape[1]):
        text = repr(tokenizer.decode([int(ids[0, pos])]))[:16]
        experts = [("+".join(f"e{int(e)}" for e in routing[pos, layer])) for layer in range(n_layers)]
        lines.append(f"{text:<16} " + " ".join(f"{x:<7}" for x in experts))
    return "\n".join(lines)


def show_routing(model, args, prompt_ids: torch.Tensor, output_ids: torch.Tensor):
    """`after_generate` callback of the inference CLI."""
    if not getattr(args, "show_routing", False):
        return
    routing = routing_of(model, output_ids[:1])
    print(format_routing(model.tokenizer, output_ids[:1], routing, prompt_ids.shape[1]))
