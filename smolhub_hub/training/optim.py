"""The optimizers every family trains with: `--optimizer adamw`, or `--optimizer muon` (Moonlight / Kimi K2).

AdamW decays 2-D weights only and uses torch's fused kernel wherever torch has one (CPU and CUDA).

Muon orthogonalises the momentum of a *matrix* that maps hidden features to hidden features. So:
  - `torch.optim.Muon`: the 2-D weights inside the blocks (attention projections, MLPs, shared experts);
  - `ExpertMuon` (below): routed experts stored as (E, in, out) stacks by `GroupedExperts`; each expert
    matrix gets exactly the torch.optim.Muon update, batched over experts;
  - AdamW at --lr: the token (and position) embeddings and the output head (one group even when tied),
    norms, biases and the routers (their weights decide routing).
Each group keeps its own base learning rate in `initial_lr`; the trainer's schedule scales each
group's own value, so Muon's rate is never overwritten by AdamW's (a reference-project bug).
"""

from __future__ import annotations

import torch
from torch.optim._muon import DEFAULT_A, DEFAULT_B, DEFAULT_C, DEFAULT_NS_STEPS, EPS, _adjust_lr


def adamw_param_groups(params, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (and stacks of them) only: norms' gains and biases are not shrunk toward 0.
    Frozen parameters are left out, and so is a group that would be empty."""
    params = [p for p in params if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


FUSED_ADAMW_DEVICES = ("cpu", "cuda", "mps")


def fused_adamw(device) -> bool:
    """Whether torch's fused (single-kernel) AdamW runs on `device`. On a CPU it takes ~1/6 of the
    default multi-tensor step's time (bench: 2.9 vs 16.8 ms for 3.6M parameters, one thread)."""
    return torch.device(device).type in FUSED_ADAMW_DEVICES


def adamw(params, lr: float, weight_decay: float, betas: tuple[float, float], device) -> torch.optim.AdamW:
    """AdamW with `adamw_param_groups`, fused wherever torch has the kernel (used by smol_experiments too)."""
    return torch.optim.AdamW(adamw_param_groups(params, weight_decay), lr=lr, betas=betas, fused=fused_adamw(device))


def _adamw(params, cfg, device) -> torch.optim.AdamW:
    return adamw(params, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device)


def build_adamw(model, cfg, device: str) -> torch.optim.AdamW:
    # parameters() yields a tied matrix once, so it sits in exactly one group.
    return _adamw(model.parameters(), cfg, device)


def is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """A block's matrix (2-D) or stack of expert matrices (3-D), but not a router's weights."""
    return name.startswith("blocks.") and p.ndim in (2, 3) and ".router." not in name


def muon_lr(cfg) -> float:
    """Moonshot's match_rms_adamw scales the step to AdamW's update RMS, so its base rate is AdamW's --lr."""
    return cfg.lr if cfg.muon_adjust_lr == "match_rms_adamw" else cfg.muon_lr


def build_muon(model, cfg, device: str) -> list[torch.optim.Optimizer]:
    """[Muon, ExpertMuon, AdamW], leaving out an empty one (no routed experts: no ExpertMuon)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    hidden = [p for n, p in named if is_hidden_matrix(n, p)]
    kw = dict(lr=muon_lr(cfg), weight_decay=cfg.muon_weight_decay, momentum=cfg.muon_momentum, nesterov=True,
              adjust_lr_fn=cfg.muon_adjust_lr)
    matrices, stacks = [p for p in hidden if p.ndim == 2], [p for p in hidden if p.ndim == 3]
    opts: list[torch.optim.Optimizer] = [torch.optim.Muon(matrices, **kw)] if matrices else []
    if stacks:
        opts.append(ExpertMuon(stacks, **kw))
    opts.append(_adamw([p for n, p in named if not is_hidden_matrix(n, p)], cfg, device))
    return opts


def build_optimizers(model, cfg, device: str) -> list[torch.optim.Optimizer]:
    """Each group remembers its base learning rate as `initial_lr`; the schedule scales that."""
    opts = build_muon(model, cfg, device) if cfg.optimizer == "muon" else [build_adamw(model, cfg, device)]
    for opt in opts:
        for g in opt.param_groups:
            g.setdefault("initial_lr", g["lr"])
    return opts


# --- Muon for stacked experts ----------------------------------------------------------------------
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

    Same momentum, Nesterov, Newton-Schulz, decoupled weight decay and learning-rate adjustment
    (torch's own `_adjust_lr` on the (out, in) matrix) as torch.optim.Muon applied to each expert
    matrix separately; the experts are batched.
    """

    def __init__(self, params, lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True,
                 adjust_lr_fn: str | None = None, ns_steps: int = DEFAULT_NS_STEPS):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                      adjust_lr_fn=adjust_lr_fn, ns_steps=ns_steps))
        for group in self.param_groups:
            if any(p.ndim != 3 for p in group["params"]):
                raise ValueError("ExpertMuon takes (E, in, out) stacks of expert matrices")

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
                p.add_(update, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], (p.shape[2], p.shape[1])))
        return loss
