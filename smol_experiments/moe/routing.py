"""Router losses and statistics, all over *real* tokens only (a mask drops padding everywhere).

`router_logits` is what MixtralForCausalLM returns with `output_router_logits=True`: one tensor per layer
of shape (batch * seq, num_experts), in the same token order as `mask.reshape(-1)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def router_parameters(model) -> list[torch.nn.Parameter]:
    """The routers' weights, selected by exact module type (not by name), in layer order."""
    from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter

    return [p for m in model.modules() if type(m) is MixtralTopKRouter for p in m.parameters()]


def _stack(router_logits) -> torch.Tensor:
    return torch.stack([layer.float() for layer in router_logits])  # (layers, tokens, experts)


def balance_loss(router_logits, mask: torch.Tensor, top_k: int) -> torch.Tensor:
    """Switch-style load balancing E · Σ_e f_e · P_e per layer, averaged over layers (1.0 = balanced).

    f_e: share of the real tokens' top-k slots given to expert e; P_e: mean router probability of e.
    Padding tokens (mask 0) count in neither, so batch padding cannot skew the balance.
    """
    logits = _stack(router_logits)
    num_experts = logits.shape[-1]
    w = mask.reshape(1, -1, 1).to(logits.dtype)
    n = w.sum().clamp(min=1)
    probs = logits.softmax(-1)
    chosen = F.one_hot(probs.topk(top_k, dim=-1).indices, num_experts).sum(-2).to(logits.dtype)
    f = (chosen * w).sum(1) / (n * top_k)
    p = (probs * w).sum(1) / n
    return num_experts * (f * p).sum(-1).mean()


def guidance_loss(router_logits, mask: torch.Tensor, target_expert: torch.Tensor, target_mass: float):
    """KL(target ‖ router distribution), mean over real tokens and layers.

    The target puts `target_mass` on each token's domain expert and spreads the rest evenly, so the
    domain expert wins top-1 while the other experts keep some weight (and the router keeps its LM gradient).
    """
    logits = _stack(router_logits)
    num_experts = logits.shape[-1]
    rest = (1.0 - target_mass) / (num_experts - 1)
    target = torch.full((target_expert.numel(), num_experts), rest, device=logits.device)
    target.scatter_(1, target_expert.reshape(-1, 1).to(logits.device), target_mass)
    kl = (target * (target.clamp(min=1e-12).log() - logits.log_softmax(-1))).sum(-1)  # (layers, tokens)
    w = mask.reshape(1, -1).to(kl.dtype)
    return (kl * w).sum() / (w.sum() * logits.shape[0]).clamp(min=1)


def domain_hits_per_row(router_logits, mask: torch.Tensor, row_expert: torch.Tensor) -> torch.Tensor:
    """(rows,): each row's real tokens whose top-1 expert is the row's own expert, counted over every layer.

    Divided by (real tokens × layers) this is the row's routing accuracy averaged over layers, so a document's
    (hits, tokens × layers) are the statistics a bootstrap over documents resamples.
    """
    top1 = _stack(router_logits).argmax(-1).view(-1, *mask.shape)  # (layers, rows, seq)
    hits = (top1 == row_expert.to(top1.device).view(1, -1, 1)) & mask.bool().to(top1.device)
    return hits.sum((0, 2))


class RoutingStats:
    """Accumulates routing over a whole evaluation set (never one batch) for every layer.

    `domains` optionally labels each token with a domain index; then `top1_by_domain[d, l, e]` counts the
    tokens of domain d whose top-1 expert at layer l is e.
    """

    def __init__(self, num_layers: int, num_experts: int, top_k: int, num_domains: int = 0):
        self.top_k = top_k
        self.tokens = 0.0
        self.slots = torch.zeros(num_layers, num_experts, dtype=torch.float64)   # top-k assignments
        self.prob = torch.zeros(num_layers, num_experts, dtype=torch.float64)    # summed probabilities
        self.entropy = torch.zeros(num_layers, dtype=torch.float64)
        self.top1_by_domain = torch.zeros(num_domains, num_layers, num_experts, dtype=torch.float64)

    @torch.no_grad()
    def update(self, router_logits, mask: torch.Tensor, domains: torch.Tensor | None = None):
        logits = _stack(router_logits)
        num_experts = logits.shape[-1]
        real = mask.reshape(-1).bool().to(logits.device)
        logits = logits[:, real]
        probs = logits.softmax(-1)
        self.tokens += real.sum().item()
        chosen = F.one_hot(probs.topk(self.top_k, dim=-1).indices, num_experts).sum(-2)
        self.slots += chosen.sum(1).double().cpu()
        self.prob += probs.sum(1).double().cpu()
        self.entropy += -(probs * probs.clamp(min=1e-12).log()).sum(-1).sum(-1).double().cpu()
        if domains is not None:
            top1 = F.one_hot(logits.argmax(-1), num_experts).double()  # (layers, tokens, experts)
            d = domains.reshape(-1)[real.cpu()].to(logits.device)
            for k in range(self.top1_by_domain.shape[0]):
                self.top1_by_domain[k] += top1[:, d == k].sum(1).cpu()

    def expert_load(self) -> torch.Tensor:
        """(layers, experts): share of the top-k slots each expert received; uniform = 1 / experts."""
        return self.slots / (self.tokens * self.top_k)

    def balance_loss(self) -> float:
        num_experts = self.slots.shape[1]
        p = self.prob / self.tokens
        return float(num_experts * (self.expert_load() * p).sum(-1).mean())

    def active_share(self, min_share: float = 0.01) -> float:
        """Share of (layer, expert) pairs chosen (top-k) for at least `min_share` of the real tokens."""
        return float(((self.slots / self.tokens) >= min_share).double().mean())

    def router_entropy(self) -> float:
        """Mean entropy of the router distribution, normalised by log(experts): 1 = uniform, 0 = certain."""
        return float(self.entropy.mean() / self.tokens / math.log(self.slots.shape[1]))

    def domain_expert_share(self) -> torch.Tensor:
        """(domains, layers, experts): share of each domain's tokens whose top-1 expert is e."""
        counts = self.top1_by_domain
        return counts / counts.sum(-1, keepdim=True).clamp(min=1)

    def routing_accuracy(self) -> torch.Tensor:
        """(domains, layers): share of domain d's tokens whose top-1 expert is expert d."""
        share = self.domain_expert_share()
        return torch.stack([share[d, :, d] for d in range(share.shape[0])])

    def summary(self, min_share: float = 0.01) -> dict:
        return {"balance_loss": self.balance_loss(), "active_share": self.active_share(min_share),
                "router_entropy": self.router_entropy(), "expert_load": self.expert_load().tolist()}
