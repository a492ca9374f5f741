"""Sparse Mixture-of-Experts building blocks: router, grouped experts, balancing losses, telemetry.

Shared by the MoE model folders (SmolMixtral, StoryMixtral, StoryKimi). The pieces compose as

    router = TopKRouter(dim, n_experts, top_k)          # which experts, with which weights
    experts = GroupedExperts(n_experts, dim, hidden)    # E SwiGLU experts in stacked weights
    r = router(x_flat)                                  # RouterOutput
    y = experts(x_flat, r.expert_ids, r.weights)

and `MoEFeedForward` wires them with the Switch load-balancing loss, the optional z-loss and
routing statistics, as a drop-in replacement for a dense feed-forward.

Expert computation never loops over experts in Python: token copies are sorted by expert and each
projection is one `grouped_mm` over contiguous per-expert row groups. The one exception is a single
token on a CPU (batch-1 decoding), where the k chosen experts' weight slices are used directly:
sorting one token's k copies costs more kernels than the k expert matmuls themselves. Nothing in the
training path reads a value back to the host, so a step never waits for the device; statistics stay
as device tensors until `RoutingStats.summary()` is asked for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

_grouped_mm_op = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def grouped_mm(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Rows `offsets[e-1]:offsets[e]` of x (S, K) times w[e] (K, N) -> (S, N). offsets: int32 cumsum.

    Under autocast both operands are cast to the autocast dtype (grouped_mm itself is not
    autocast-aware, and the CUDA kernel wants bf16). Under torch.compile, a dtype other than bf16 goes
    through `smolhub::grouped_mm` (below): torch's compile-time shape rule for grouped_mm accepts bf16
    only, although its CPU kernel and its CUDA fallback compute any float dtype.
    """
    if _grouped_mm_op is None:
        raise RuntimeError("this PyTorch has no grouped_mm; upgrade to torch >= 2.9 or use moe_impl='loop'")
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        x, w = x.to(dtype), w.to(dtype)
    if x.dtype != torch.bfloat16 and torch.compiler.is_compiling():
        return _grouped_mm_any_dtype(x, w, offsets)
    return _grouped_mm_op(x, w, offs=offsets)


@torch.library.custom_op("smolhub::grouped_mm", mutates_args=())
def _grouped_mm_any_dtype(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """torch's grouped_mm as an opaque op, for torch.compile in fp32 / fp16. Two forms, as torch's own:
    x (S, K) @ w (E, K, N) -> (S, N), and x (K, S) @ w (S, N) -> (E, K, N) (the weight gradient)."""
    return _grouped_mm_op(x, w, offs=offsets)


@_grouped_mm_any_dtype.register_fake
def _(x, w, offsets):
    if w.dim() == 3:
        return x.new_empty(x.shape[0], w.shape[-1])
    return x.new_empty(offsets.shape[0], x.shape[0], w.shape[-1])


def _grouped_mm_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _grouped_mm_backward(ctx, grad):
    x, w, offsets = ctx.saved_tensors
    grad = grad.contiguous()  # an expanded gradient (e.g. of a .sum()) has zero strides, which grouped_mm refuses
    grad_x = _grouped_mm_any_dtype(grad, w.transpose(-1, -2), offsets) if ctx.needs_input_grad[0] else None
    grad_w = _grouped_mm_any_dtype(x.transpose(0, 1), grad, offsets) if ctx.needs_input_grad[1] else None
    return grad_x, grad_w, None


_grouped_mm_any_dtype.register_autograd(_grouped_mm_backward, setup_context=_grouped_mm_setup)


def expert_counts(expert_ids: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Token copies routed to each expert, (E,) int64, computed on device: bincount on a CPU (one kernel),
    a scatter-add elsewhere (bincount reads the maximum back to the host, which would stall a GPU)."""
    flat = expert_ids.reshape(-1)
    if flat.device.type == "cpu" and not torch.compiler.is_compiling():  # its output size is data-dependent
        return torch.bincount(flat, minlength=n_experts)
    return torch.zeros(n_experts, dtype=torch.long, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))


class GroupedExperts(nn.Module):
    """`n_experts` SwiGLU feed-forwards, weights stacked as (E, in, out) so grouped_mm needs no transpose.

    `w_gate_up[e]` is [gate | up] (dim, 2 * hidden); `w_down[e]` is (hidden, dim).
    `impl` selects the computation: "grouped" (sorted tokens + grouped_mm) or "loop" (a plain loop over
    experts, the readable reference; it reads the per-expert counts back to the host).
    """

    def __init__(self, n_experts: int, dim: int, hidden: int, init_std: float = 0.02,
                 down_init_std: float | None = None, impl: str = "grouped"):
        super().__init__()
        if impl not in ("grouped", "loop"):
            raise ValueError(f"unknown experts impl '{impl}' (choose grouped or loop)")
        self.n_experts, self.dim, self.hidden, self.impl = n_experts, dim, hidden, impl
        self.w_gate_up = nn.Parameter(torch.empty(n_experts, dim, 2 * hidden))
        self.w_down = nn.Parameter(torch.empty(n_experts, hidden, dim))
        nn.init.normal_(self.w_gate_up, 0.0, init_std)
        nn.init.normal_(self.w_down, 0.0, init_std if down_init_std is None else down_init_std)

    def extra_repr(self) -> str:
        return f"n_experts={self.n_experts}, dim={self.dim}, hidden={self.hidden}, impl={self.impl}"

    def forward(self, x: torch.Tensor, expert_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """x: (N, dim); expert_ids, weights: (N, k) -> sum_j weights[:, j] * expert_{ids[:, j]}(x), (N, dim)."""
        if self.impl == "loop":
            return self.forward_loop(x, expert_ids, weights)
        if x.shape[0] == 1 and x.device.type == "cpu" and not torch.compiler.is_compiling():
            return self.forward_one_token(x, expert_ids, weights)
        return self.forward_grouped(x, expert_ids, weights)

    def forward_one_token(self, x, expert_ids, weights):
        """One token (batch-1 decoding on a CPU, where reading its k expert ids costs nothing): the chosen
        experts' weight slices directly, with no sort, no offsets and no empty groups."""
        out = None
        for j, e in enumerate(expert_ids[0].tolist()):
            gate, up = (x @ self.w_gate_up[e]).chunk(2, dim=-1)
            y = ((F.silu(gate) * up) @ self.w_down[e]) * weights[:, j:j + 1].to(x.dtype)
            out = y if out is None else out + y
        return out.to(x.dtype)

    def forward_grouped(self, x, expert_ids, weights):
        N, k = expert_ids.shape
        flat_ids = expert_ids.reshape(-1)
        order = torch.argsort(flat_ids, stable=True)            # token copies grouped by expert
        offsets = torch.cumsum(expert_counts(flat_ids, self.n_experts), 0, dtype=torch.int32)
        token = order // k                                      # the token of each sorted copy
        xs = x[token]                                           # (N*k, dim)
        h = grouped_mm(xs, self.w_gate_up, offsets)
        gate, up = h.chunk(2, dim=-1)
        ys = grouped_mm(F.silu(gate) * up, self.w_down, offsets)
        ys = ys * weights.reshape(-1)[order, None].to(ys.dtype)
        if ys.device.type == "cpu":  # index_add_ is deterministic on a CPU: one kernel adds the k copies
            return torch.zeros_like(x).index_add_(0, token, ys.to(x.dtype))
        # Undo the sort, then add each token's k copies: deterministic, unlike index_add_ on CUDA.
        unsorted = torch.empty_like(ys).index_copy_(0, order, ys)
        return unsorted.view(N, k, -1).sum(1).to(x.dtype)

    def forward_loop(self, x, expert_ids, weights):
        out = torch.zeros_like(x)
        for e in range(self.n_experts):
            token, slot = torch.where(expert_ids == e)
            if token.numel() == 0:
                continue
            gate, up = (x[token] @ self.w_gate_up[e]).chunk(2, dim=-1)
            y = (F.silu(gate) * up) @ self.w_down[e]
            # Under autocast y is bf16 while out keeps x's dtype; index_add needs one dtype (as forward_grouped).
            out = out.index_add(0, token, (y * weights[token, slot, None].to(y.dtype)).to(out.dtype))
        return out

    def params_per_expert(self) -> int:
        return self.w_gate_up[0].numel() + self.w_down[0].numel()


@dataclass
class RouterOutput:
    logits: torch.Tensor      # (N, E) router logits (noise included when noisy top-k is on), fp32
    probs: torch.Tensor | None  # (N, E) softmax over all experts, fp32 (None when the router was asked not to)
    expert_ids: torch.Tensor  # (N, k) chosen experts, highest weight first
    weights: torch.Tensor     # (N, k) mixing weights, fp32; sum to 1 per token when renormalised


class TopKRouter(nn.Module):
    """Mixtral's router: softmax over all experts, keep the top k, renormalise them to sum to 1.

    Noisy top-k (Shazeer et al. 2017): while training, the logits get Gaussian noise scaled per
    expert by softplus(x @ w_noise), so that near-ties explore other experts. Never in eval.
    Logits are computed in fp32 so that bf16 rounding never flips a routing decision.
    """

    def __init__(self, dim: int, n_experts: int, top_k: int, noisy: bool = False, renormalize: bool = True,
                 init_std: float = 0.02):
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k ({top_k}) must be between 1 and n_experts ({n_experts})")
        self.n_experts, self.top_k, self.renormalize = n_experts, top_k, renormalize
        self.weight = nn.Parameter(torch.empty(n_experts, dim))
        nn.init.normal_(self.weight, 0.0, init_std)
        # Zero init: the noise starts at softplus(0) = 0.69 per expert and is learned from there.
        self.w_noise = nn.Parameter(torch.zeros(n_experts, dim)) if noisy else None

    def forward(self, x: torch.Tensor, with_probs: bool = True) -> RouterOutput:
        """`with_probs=False` (decoding: no balance loss, no statistics) leaves `probs` None and, when
        renormalising, takes the softmax over the k chosen logits only: the same weights, two kernels fewer."""
        with torch.autocast(x.device.type, enabled=False):  # autocast would run these linears in bf16
            xf = x.float()
            logits = F.linear(xf, self.weight.float())
            if self.w_noise is not None and self.training:
                scale = F.softplus(F.linear(xf, self.w_noise.float()))
                logits = logits + torch.randn_like(logits) * scale
        if not with_probs and self.renormalize:
            top, expert_ids = logits.topk(self.top_k, dim=-1)
            return RouterOutput(logits, None, expert_ids, top.softmax(dim=-1))
        probs = logits.softmax(dim=-1)
        weights, expert_ids = probs.topk(self.top_k, dim=-1)
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return RouterOutput(logits, probs, expert_ids, weights)


def load_balancing_loss(probs: torch.Tensor, expert_ids: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's auxiliary loss E * sum_e f_e * P_e.

    f_e: share of the N*k token copies sent to expert e (no gradient); P_e: mean router probability
    of e. Both sum to 1, so the loss is 1 when routing is uniform and E when it collapses to one
    expert. (transformers' Mixtral normalises f by N only, which makes its value k times this one.)
    """
    n_experts = probs.shape[-1]
    f = expert_counts(expert_ids, n_experts).to(probs.dtype) / expert_ids.numel()
    return n_experts * (f * probs.mean(dim=0)).sum()


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's z-loss, mean(logsumexp(logits)^2): keeps router logits small and bf16-safe."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


class RoutingStats:
    """Running routing statistics of one MoE layer, kept as device tensors (no host sync per step).

    `update` adds one forward's routing; `summary` converts to floats and starts a new window, so a
    reader gets the aggregate over every token routed since it last asked (e.g. all eval batches).
    """

    def __init__(self, n_experts: int):
        self.n_experts = n_experts
        self.reset()

    def reset(self):
        self.counts = None        # (E,) token copies per expert
        self.entropy_sum = None   # sum over tokens of the router entropy (nats)
        self.balance_sum = None   # sum over forwards of the (unscaled) balance loss
        self.tokens = 0
        self.forwards = 0

    @torch.no_grad()
    def update(self, router: RouterOutput, balance: torch.Tensor | None = None):
        counts = expert_counts(router.expert_ids, self.n_experts)
        # -sum p log p of the routing distribution; entr() is one kernel, where a log-softmax over a
        # last axis of only E entries is slow on a CPU (122 vs 27 us for 1024 tokens x 8 experts).
        entropy = torch.special.entr(router.probs.detach().float()).sum()
        if balance is None:
            balance = load_balancing_loss(router.probs.detach(), router.expert_ids)
        if self.counts is None:
            self.counts, self.entropy_sum, self.balance_sum = counts, entropy, balance.detach().float()
        else:
            self.counts = self.counts + counts
            self.entropy_sum = self.entropy_sum + entropy
            self.balance_sum = self.balance_sum + balance.detach().float()
        self.tokens += router.expert_ids.shape[0]
        self.forwards += 1

    def summary(self) -> dict[str, float] | None:
        """{'load_e<i>': share of token copies, 'active_share', 'entropy', 'balance_loss'}; None if empty."""
        if self.counts is None:
            return None
        load = self.counts.float() / self.counts.sum().clamp(min=1)
        packed = torch.cat([load, (self.counts > 0).float().mean()[None],
                            (self.entropy_sum / self.tokens)[None], (self.balance_sum / self.forwards)[None]])
        values = packed.tolist()  # the one host sync, only when asked
        self.reset()
        out = {f"load_e{e}": values[e] for e in range(self.n_experts)}
        out.update(active_share=values[-3], entropy=values[-2], balance_loss=values[-1])
        return out


class MoEFeedForward(nn.Module):
    """Router + grouped SwiGLU experts: a sparse replacement for a dense feed-forward.

    `forward(x (B, T, dim)) -> (y, aux)` where aux = balance_coef * balance loss + z_loss_coef * z-loss
    (None when both coefficients are 0). The last forward's routing is kept in `last_routing` (for
    `--show-routing`) and, except while decoding, accumulated in `stats` (for training telemetry).
    """

    def __init__(self, dim: int, hidden: int, n_experts: int = 8, top_k: int = 2, noisy_topk: bool = False,
                 balance_coef: float = 0.01, z_loss_coef: float = 0.0, impl: str = "grouped",
                 init_std: float = 0.02, down_init_std: float | None = None):
        super().__init__()
        self.balance_coef, self.z_loss_coef = balance_coef, z_loss_coef
        self.router = TopKRouter(dim, n_experts, top_k, noisy=noisy_topk, init_std=init_std)
        self.experts = GroupedExperts(n_experts, dim, hidden, init_std, down_init_std, impl)
        self.stats = RoutingStats(n_experts)
        self.last_routing: RouterOutput | None = None

    def forward(self, x: torch.Tensor, decoding: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`decoding=True` (token-by-token generation) skips the aux losses and statistics: nothing reads them."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        r = self.router(flat, with_probs=not decoding)
        y = self.experts(flat, r.expert_ids, r.weights).view(shape)
        self.last_routing = r
        if decoding:
            return y, None
        aux, balance = None, None
        if self.balance_coef:
            balance = load_balancing_loss(r.probs, r.expert_ids)
            aux = self.balance_coef * balance
        if self.z_loss_coef:
            z = self.z_loss_coef * router_z_loss(r.logits)
            aux = z if aux is None else aux + z
        self.stats.update(r, balance)
        return y, aux

    def on_step_skipped(self):
        self.stats.reset()  # the skipped step's routing (NaN probabilities, say) must not reach the metrics

    def inactive_params_per_token(self) -> int:
        """Weights of the experts a token is not routed to."""
        return (self.experts.n_experts - self.router.top_k) * self.experts.params_per_expert()


def moe_routing_stats(moe_layers, prefix: str = "moe") -> dict[str, float]:
    """Flat metrics for a model's MoE layers: `<prefix>/layer<i>/<name>` plus means over layers."""
    out: dict[str, float] = {}
    per_layer = [(i, m.stats.summary()) for i, m in enumerate(moe_layers)]
    per_layer = [(i, s) for i, s in per_layer if s is not None]
    for i, s in per_layer:
        out.update({f"{prefix}/layer{i}/{k}": v for k, v in s.items()})
    if per_layer:
        for name in ("balance_loss", "entropy", "active_share"):
            out[f"{prefix}/{name}"] = sum(s[name] for _, s in per_layer) / len(per_layer)
        out[f"{prefix}/max_load"] = max(max(v for k, v in s.items() if k.startswith("load_e")) for _, s in per_layer)
    return out

