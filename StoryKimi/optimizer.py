"""StoryKimi's optimizers: Muon for the hidden matrices, AdamW for everything else (Moonlight / Kimi K2).

Muon orthogonalises the momentum of a *matrix* that maps hidden features to hidden features. So:
  - `torch.optim.Muon`: the 2-D weights inside the blocks (attention projections, dense and shared
    SwiGLUs);
  - `ExpertMuon` (below): the routed experts, stored as (E, in, out) stacks by `GroupedExperts`; each
    expert matrix gets exactly the torch.optim.Muon update, batched over experts;
  - AdamW: the token embedding and output head (one group even when tied), norms, and the routers
    (their weights decide routing; the expert bias is a buffer, updated by `on_optimizer_step`).
Each optimizer keeps its own base learning rate in `initial_lr`; the trainer's schedule scales each
group's own value, so Muon's rate is never overwritten by AdamW's (a reference-project bug).
"""

from __future__ import annotations

import math

import torch
from torch.optim._muon import DEFAULT_A, DEFAULT_B, DEFAULT_C, DEFAULT_NS_STEPS, EPS

from smolhub_hub.errors import UserError
from smolhub_hub.training.optim import adamw_param_groups, fused_adamw


def is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """A block's matrix (or stack of expert matrices), but not a router."""
    return name.startswith("blocks.") and p.ndim >= 2 and ".router." not in name


def orthogonalize(g: torch.Tensor, steps: int = DEFAULT_NS_STEPS, eps: float = EPS) -> torch.Tensor:
    """torch.optim.Muon's quintic Newton-Schulz iteration (bf16), batched over experts: (E, m, n)."""
    a, b, c = DEFAULT_A, DEFAULT_B, DEFAULT_C
    x = g.bfloat16()
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):  # the same fused products as torch's addmm version, batched
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


class ExpertMuon(torch.optim.Optimizer):
    """torch.optim.Muon's update for stacks of expert matrices, shape (E, in, out), one expert each.

    Same momentum, Nesterov, Newton-Schulz, decoupled weight decay and learning-rate adjustment as
    torch.optim.Muon applied to each (out, in) expert matrix separately; the experts are batched.
    """

    def __init__(self, params, lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True,
                 adjust_lr_fn: str | None = None, ns_steps: int = DEFAULT_NS_STEPS):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      adjust_lr_fn=adjust_lr_fn, ns_steps=ns_steps))
        for group in self.param_groups:
            if any(p.ndim != 3 for p in group["params"]):
                raise ValueError("ExpertMuon takes (E, in, out) stacks of expert matrices")

    @staticmethod
    def adjusted_lr(lr: float, fn: str | None, fan_out: int, fan_in: int) -> float:
        if fn == "match_rms_adamw":
            return lr * 0.2 * math.sqrt(max(fan_out, fan_in))
        return lr * math.sqrt(max(1.0, fan_out / fan_in))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - mom)
                update = p.grad.lerp(buf, mom) if group["nesterov"] else buf
                update = orthogonalize(update, group["ns_steps"]).to(p.dtype)
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-self.adjusted_lr(lr, group["adjust_lr_fn"], p.shape[2], p.shape[1]))
        return loss


def _with_initial_lr(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    return opt


def build_optimizers(model, train_cfg) -> list[torch.optim.Optimizer]:
    """[Muon, ExpertMuon, AdamW] for --optimizer muon (empty ones left out), [AdamW] for adamw."""
    c = model.config
    named = list(model.named_parameters())  # a tied matrix appears once, so it sits in one group
    adamw = dict(lr=train_cfg.lr, betas=(train_cfg.beta1, train_cfg.beta2), fused=fused_adamw(named[0][1].device))
    if train_cfg.optimizer == "adamw":
        return [_with_initial_lr(torch.optim.AdamW(adamw_param_groups(named, train_cfg.weight_decay), **adamw))]
    if train_cfg.optimizer != "muon":
        raise UserError(f"StoryKimi has no optimizer '{train_cfg.optimizer}'; choose muon or adamw")
    hidden = [(n, p) for n, p in named if is_hidden_matrix(n, p)]
    rest = [(n, p) for n, p in named if not is_hidden_matrix(n, p)]
    muon = dict(lr=c.muon_lr, weight_decay=c.muon_weight_decay, momentum=c.muon_momentum, nesterov=True,
                adjust_lr_fn=c.muon_adjust_lr)
    matrices = [p for _, p in hidden if p.ndim == 2]
    stacks = [p for _, p in hidden if p.ndim == 3]
    opts = []
    if matrices:
        opts.append(torch.optim.Muon(matrices, **muon))
    if stacks:
        opts.append(ExpertMuon(stacks, **muon))
    opts.append(torch.optim.AdamW(adamw_param_groups(rest, train_cfg.weight_decay), **adamw))
    return [_with_initial_lr(o) for o in opts]
