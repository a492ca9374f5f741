"""Mixture-of-experts machinery shared by both MoE families (Mixtral: SmolMixtral, StoryMixtral; DeepSeek: StoryKimi).

What makes each family itself lives in its folder (Mixtral's softmax router, noise and z-loss in
SmolMixtral/model.py; DeepSeek's sigmoid router, bias balancing and shared experts in StoryKimi/model.py). Here:

  - `GroupedExperts`: E SwiGLU experts in stacked weights, computed without a Python loop over experts: token copies
    are sorted by expert and each projection is one `grouped_mm` over contiguous per-expert row groups. Beside it,
    `forward_loop` is the readable reference (a loop over experts), and `forward_one_token` the batch-1 CPU
    decoding path, where sorting one token's k copies costs more kernels than the k expert matmuls themselves.
  - `MoELayer`: the one interface of an MoE feed-forward that the trainer, generation and tools read
    (`generating=`, `stats`, `last_routing`), and `moe_routing_stats` for a model's `moe_layers()`.
  - `RouterOutput`, `RoutingStats`, `expert_counts`, `load_balancing_loss`: routing and its telemetry.

Nothing in the training path reads a value back to the host, so a step never waits for the device; statistics stay
as device tensors until `RoutingStats.summary()` is asked for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

_grouped_mm_op = torch._grouped_mm  # what torch.nn.functional.grouped_mm calls (torch >= 2.9, pyproject's minimum)


# A CPU bf16 matmul (oneDNN, AMX) builds a kernel for each new row count, ~25 ms, and expert group sizes change
# every step: on a CPU, bf16 groups are padded to a multiple of this many rows, so the few sizes repeat.
CPU_BF16_GROUP_ROWS = 16


def expert_compute_dtype(x: torch.Tensor, w: torch.Tensor) -> torch.dtype:
    """The dtype the expert matmuls run in: autocast's when it is on, except in CPU generation (no gradients),
    which keeps the weights' own. There the stacked weights would be cast on every call (autocast caches only
    whole leaf weights, not expert slices), and a cast reads them and writes them again, more than the
    memory-bound matmul reads (transformers' grouped_mm casts the input to the weights' dtype the same way)."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type) and (torch.is_grad_enabled() or device_type != "cpu"):
        return torch.get_autocast_dtype(device_type)
    return w.dtype


def grouped_mm(x: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Rows `offsets[e-1]:offsets[e]` of x (S, K) times w[e] (K, N) -> (S, N). offsets: int32 cumsum.

    Both operands are cast to `expert_compute_dtype` (grouped_mm itself is not autocast-aware, and the CUDA
    kernel wants bf16). Under torch.compile, a dtype other than bf16 goes through `smolhub::grouped_mm`
    (below): torch's compile-time shape rule for grouped_mm accepts bf16 only, although its CPU kernel and its
    CUDA fallback compute any float dtype.
    """
    dtype = expert_compute_dtype(x, w)
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
        dtype = expert_compute_dtype(x, self.w_gate_up)
        with torch.autocast(x.device.type, enabled=False):
            xc = x.to(dtype)
            for j, e in enumerate(expert_ids[0].tolist()):
                gate, up = (xc @ self.w_gate_up[e].to(dtype)).chunk(2, dim=-1)
                y = ((F.silu(gate) * up) @ self.w_down[e].to(dtype)) * weights[:, j:j + 1].to(dtype)
                out = y if out is None else out + y
        return out.to(x.dtype)

    def forward_grouped(self, x, expert_ids, weights):
        N, k = expert_ids.shape
        flat_ids = expert_ids.reshape(-1)
        order = torch.argsort(flat_ids, stable=True)            # token copies grouped by expert
        counts = expert_counts(flat_ids, self.n_experts)
        token = order // k                                      # the token of each sorted copy
        xs = x[token]                                           # (N*k, dim)
        rows = None  # with padded groups: where each sorted copy sits among the padded rows
        if x.device.type == "cpu" and expert_compute_dtype(x, self.w_gate_up) == torch.bfloat16:
            padded = (counts + CPU_BF16_GROUP_ROWS - 1) // CPU_BF16_GROUP_ROWS * CPU_BF16_GROUP_ROWS
            shift = torch.cumsum(padded - counts, 0) - (padded - counts)  # padding rows before each group
            rows = torch.arange(N * k, device=x.device) + shift[flat_ids[order]]
            xs = xs.new_zeros(int(padded.sum()), xs.shape[1]).index_copy(0, rows, xs)
            counts = padded
        offsets = torch.cumsum(counts, 0, dtype=torch.int32)
        h = grouped_mm(xs, self.w_gate_up, offsets)
        gate, up = h.chunk(2, dim=-1)
        ys = grouped_mm(F.silu(gate) * up, self.w_down, offsets)
        if rows is not None:
            ys = ys[rows]
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


def load_balancing_loss(probs: torch.Tensor, expert_ids: torch.Tensor) -> torch.Tensor:
    """Switch Transformer's balance E * sum_e f_e * P_e (https://arxiv.org/abs/2101.03961, eq. 4): SmolMixtral's
    auxiliary loss, and the `balance_loss` statistic of every MoE layer (StoryKimi's too).

    f_e: share of the N*k token copies sent to expert e (no gradient); P_e: mean router probability
    of e. Both sum to 1, so the loss is 1 when routing is uniform and E when it collapses to one
    expert. (transformers' Mixtral normalises f by N only, which makes its value k times this one.)
    """
    n_experts = probs.shape[-1]
    f = expert_counts(expert_ids, n_experts).to(probs.dtype) / expert_ids.numel()
    return n_experts * (f * probs.mean(dim=0)).sum()


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


class MoELayer(nn.Module):
    """A mixture-of-experts feed-forward as the shared tools see it, the same for both MoE families:

        forward(x (B, T, dim), generating=False) -> (y (B, T, dim), scaled auxiliary loss or None)
        router.top_k, experts (GroupedExperts)
        stats         RoutingStats of the training and evaluation forwards (generation is not a statistic)
        last_routing  RouterOutput of the last forward, generation included: expert_ids (B * T, top_k)

    `generating=True` (cached token-by-token decoding) skips what only training reads: auxiliary losses, statistics.
    """

    router: nn.Module
    experts: GroupedExperts

    def __init__(self, n_experts: int):
        super().__init__()
        self.stats = RoutingStats(n_experts)
        self.last_routing: RouterOutput | None = None

    def on_step_skipped(self):
        self.stats.reset()  # the skipped step's routing (NaN probabilities, say) must not reach the metrics

    def inactive_params_per_token(self) -> int:
        """Weights of the routed experts a token is not sent to."""
        return (self.experts.n_experts - self.router.top_k) * self.experts.params_per_expert()


def moe_routing_stats(moe_layers: dict[int, MoELayer], prefix: str = "moe") -> dict[str, float]:
    """Flat metrics for a model's MoE layers: `<prefix>/layer<block>/<name>` plus means over layers."""
    per_layer = {block: layer.stats.summary() for block, layer in moe_layers.items()}
    per_layer = {block: s for block, s in per_layer.items() if s is not None}
    out: dict[str, float] = {}
    for block, s in per_layer.items():
        out.update({f"{prefix}/layer{block}/{k}": v for k, v in s.items()})
    if per_layer:
        for name in ("balance_loss", "entropy", "active_share"):
            out[f"{prefix}/{name}"] = sum(s[name] for s in per_layer.values()) / len(per_layer)
        out[f"{prefix}/max_load"] = max(v for s in per_layer.values() for k, v in s.items() if k.startswith("load_e"))
    return out
