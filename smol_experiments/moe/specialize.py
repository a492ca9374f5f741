"""Expert specialization: domain i → expert i, guided by a KL loss on the routers, in two stages.

    python -m smol_experiments.moe.specialize --model runs/moe/cpt/model --data nemotron
    python -m smol_experiments.moe.specialize --preset quick        # synthetic domains, offline, CPU

Loss = LM loss + guide_weight · KL(target ‖ router) + balance_coef · balance loss, over real tokens only.
Stage A trains only the routers (MixtralTopKRouter weights, selected by module type); stage B trains
everything at a lower learning rate. Before and after, on held-out documents of every domain:
routing accuracy (share of a domain's real tokens whose top-1 expert is the domain's expert) per layer
and averaged, the domain × expert top-1 shares, and the per-domain LM loss.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from smol_experiments.moe import data, engine, outputs
from smol_experiments.moe.cli import field, parse_config
from smol_experiments.moe.domains import domain_splits
from smol_experiments.moe.routing import RoutingStats, balance_loss, guidance_loss, router_parameters
from smolhub_hub.errors import UserError, exit_on_user_error


@dataclass
class SpecializeConfig:
    model: str = field("runs/moe/cpt/model", "MoE folder (upcycled or continued-pretrained)")
    output: str = field("runs/moe/specialize", "folder for the model, metrics.csv and routing_*.json")
    data: str = field("nemotron", "'nemotron' (Hub: code/math/chat) or 'synthetic' (offline: code/math/stories)")
    train_docs: int = field(2000, "training documents per domain", positive=True)
    heldout_docs: int = field(200, "held-out documents per domain (never trained on)", positive=True)
    max_len: int = field(512, "tokens per document (longer ones are truncated)", positive=True)
    docs_per_domain: int = field(4, "documents of each domain per batch", positive=True)
    eval_batch_size: int = field(16, "documents per evaluation batch", positive=True)
    stage_a_steps: int = field(300, "router-only steps")
    stage_b_steps: int = field(500, "steps training everything")
    stage_a_lr: float = field(1e-3, "stage A learning rate (routers)")
    stage_b_lr: float = field(2e-5, "stage B learning rate (all weights)")
    warmup_steps: int = field(20, "linear warmup steps in each stage")
    guide_weight: float = field(1.0, "weight of the KL router guidance")
    target_mass: float = field(0.7, "target router probability of the domain's expert")
    balance_coef: float = field(0.01, "weight of the load-balancing loss")
    weight_decay: float = field(0.0, "AdamW weight decay (matrices only)")
    grad_clip: float = field(1.0, "max gradient norm")
    log_every: int = field(10, "steps between training-loss rows", positive=True)
    eval_every: int = field(100, "steps between held-out evaluations", positive=True)
    active_min_share: float = field(0.01, "an expert is active if chosen for at least this share of tokens")
    precision: str = field("auto", "auto (bf16 autocast on GPU, fp32 on CPU), bf16 or fp32")
    seed: int = field(0, "seed for data sampling and order")
    wandb_project: str = field("", "log to this wandb project (empty: off)")
    overwrite: bool = field(False, "replace a finished run in --output (otherwise refused)")


PRESETS = {
    "quick": dict(model="runs/moe/quick/cpt/model", output="runs/moe/quick/specialize", data="synthetic",
                  train_docs=300, heldout_docs=40, max_len=96, docs_per_domain=4, eval_batch_size=40,
                  stage_a_steps=60, stage_b_steps=60, stage_a_lr=1e-2, stage_b_lr=5e-4, warmup_steps=5,
                  log_every=10, eval_every=30),
}


@torch.no_grad()
def evaluate_domains(model, heldout: list[list[list[int]]], cfg: SpecializeConfig, pad_id: int, device, ctx):
    """Per-domain held-out LM loss and routing (accuracy per layer, top-1 shares), real tokens only."""
    model.eval()
    c = model.config
    stats = RoutingStats(c.num_hidden_layers, c.num_local_experts, c.num_experts_per_tok, len(heldout))
    loss_sum, count = torch.zeros(len(heldout), dtype=torch.float64), torch.zeros(len(heldout))
    for batch in data.ordered_domain_batches(heldout, cfg.eval_batch_size, pad_id):
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        logits, router_logits = engine.forward(model, ids, mask, ctx)
        losses, real = engine.token_losses(logits, ids, mask)
        row_domain = batch["domains"][:, 0]
        for d in range(len(heldout)):
            rows = (row_domain == d).to(device)
            loss_sum[d] += losses[rows].sum().double().cpu()
            count[d] += real[rows].sum().cpu()
        stats.update(router_logits, mask, batch["domains"])
    model.train()
    acc = stats.routing_accuracy()
    return {"heldout_loss": (loss_sum / count).tolist(), "routing_accuracy": acc.tolist(),
            "routing_accuracy_mean": acc.mean(1).tolist(), "domain_expert_share": stats.domain_expert_share().tolist(),
            "tokens_per_domain": count.tolist(), **stats.summary(cfg.active_min_share)}


def set_trainable(model, stage: str) -> list[torch.nn.Parameter]:
    """Stage 'A': only router weights get gradients; stage 'B': every weight. Returns the trained params."""
    routers = {id(p) for p in router_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(stage == "B" or id(p) in routers)
    return [p for p in model.parameters() if p.requires_grad]


class Specializer:
    """Holds the model, data and logs; `run_stage` trains one stage, `evaluate` measures held-out routing."""

    def __init__(self, cfg: SpecializeConfig):
        self.cfg = cfg
        self.out = Path(cfg.output)
        outputs.claim(self.out, "specialize", asdict(cfg), cfg.overwrite)  # an unfinished run restarts
        self.device = engine.pick_device()
        self.ctx = engine.autocast(self.device, cfg.precision)
        self.model, self.tokenizer = engine.load_moe(cfg.model, self.device)
        splits = domain_splits(cfg.data, cfg.train_docs, cfg.heldout_docs, cfg.seed)
        self.domains = list(splits)
        if self.model.config.num_local_experts < len(self.domains):
            raise UserError(f"{len(self.domains)} domains need at least {len(self.domains)} experts; the model "
                            f"has {self.model.config.num_local_experts}. Upcycle with --num-experts "
                            f"{len(self.domains)}.")
        tok = lambda docs: data.tokenize_documents(docs, self.tokenizer, cfg.max_len)
        self.train_docs = [tok(splits[d][0]) for d in self.domains]
        self.heldout = [tok(splits[d][1]) for d in self.domains]
        self.samples = {d: splits[d][1][0] for d in self.domains}  # for the token-level routing picture
        self.pad_id = self.tokenizer.pad_token_id
        eval_cols = [f"acc_{d}" for d in self.domains] + [f"heldout_loss_{d}" for d in self.domains]
        self.log = engine.MetricsLog(
            self.out / "metrics.csv",
            ["step", "stage", "lr", "loss", "lm_loss", "guide_loss", "balance_loss", "grad_norm", *eval_cols,
             "eval_balance_loss", "active_share", "router_entropy"], cfg.wandb_project, asdict(cfg))
        self.load_csv = self.out / "expert_load.csv"
        self.load_csv.write_text("step,layer,expert,load\n")
        self.step = 0

    def evaluate(self, stage: str) -> dict:
        r = evaluate_domains(self.model, self.heldout, self.cfg, self.pad_id, self.device, self.ctx)
        row = {"step": self.step, "stage": stage, "eval_balance_loss": r["balance_loss"],
               "active_share": r["active_share"], "router_entropy": r["router_entropy"]}
        for d, name in enumerate(self.domains):
            row[f"acc_{name}"], row[f"heldout_loss_{name}"] = r["routing_accuracy_mean"][d], r["heldout_loss"][d]
        self.log.log(row)
        self.log.log_wandb_only({f"load/layer{l}/expert{e}": v for l, loads in enumerate(r["expert_load"])
                                 for e, v in enumerate(loads)}, self.step)
        with self.load_csv.open("a") as f:
            for layer, loads in enumerate(r["expert_load"]):
                f.writelines(f"{self.step},{layer},{e},{v:.6f}\n" for e, v in enumerate(loads))
        accs = " ".join(f"{n} {a:.1%}" for n, a in zip(self.domains, r["routing_accuracy_mean"]))
        losses = " ".join(f"{n} {l:.3f}" for n, l in zip(self.domains, r["heldout_loss"]))
        print(f"step {self.step:>5} [{stage}] held-out routing accuracy: {accs} | loss: {losses}", flush=True)
        return r

    def run_stage(self, stage: str, steps: int, lr_peak: float):
        cfg, model = self.cfg, self.model
        params = set_trainable(model, stage)
        optimizer = engine.make_optimizer(params, lr_peak, cfg.weight_decay, self.device)
        batches = data.balanced_domain_batches(self.train_docs, cfg.docs_per_domain, self.pad_id,
                                               cfg.seed + (stage == "B"))
        top_k = model.config.num_experts_per_tok
        model.train()
        window_sum = torch.zeros(4, device=self.device)
        for i, batch in enumerate(itertools.islice(batches, steps)):
            lr = engine.lr_at(i, steps, cfg.warmup_steps, lr_peak, 0.1)
            for group in optimizer.param_groups:
                group["lr"] = lr
            ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
            logits, router_logits = engine.forward(model, ids, mask, self.ctx)
            lm = engine.lm_loss(logits, ids, mask)
            guide = guidance_loss(router_logits, mask, batch["domains"].clamp(min=0), cfg.target_mass)
            bal = balance_loss(router_logits, mask, top_k)
            loss = lm + cfg.guide_weight * guide + cfg.balance_coef * bal
            loss.backward()
            grad_norm = engine.clip_and_step(params, optimizer, cfg.grad_clip)
            window_sum += torch.stack([loss, lm, guide, bal]).detach()
            self.step += 1
            if (i + 1) % cfg.log_every == 0:
                loss_v, lm_v, guide_v, bal_v = (window_sum / cfg.log_every).tolist()
                engine.check_finite(loss_v + float(grad_norm), self.step)
                window_sum.zero_()
                self.log.log({"step": self.step, "stage": stage, "lr": lr, "loss": loss_v, "lm_loss": lm_v,
                              "guide_loss": guide_v, "balance_loss": bal_v, "grad_norm": float(grad_norm)})
            if (i + 1) % cfg.eval_every == 0 and i + 1 < steps:
                self.evaluate(stage)
        set_trainable(model, "B")  # leave every weight trainable, as loaded

    def save(self, before: dict, after: dict, after_a: dict):
        self.log.close()
        self.model.save_pretrained(self.out / "model")
        self.tokenizer.save_pretrained(self.out / "model")
        for name, result in (("before", before), ("after_stage_a", after_a), ("after", after)):
            (self.out / f"routing_{name}.json").write_text(json.dumps({"domains": self.domains, **result}))
        (self.out / "samples.json").write_text(json.dumps(self.samples, indent=2))
        (self.out / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2))


def summarize(domains: list[str], before: dict, after: dict) -> dict:
    rows = {d: {"routing_accuracy_before": before["routing_accuracy_mean"][i],
                "routing_accuracy_after": after["routing_accuracy_mean"][i],
                "heldout_loss_before": before["heldout_loss"][i], "heldout_loss_after": after["heldout_loss"][i]}
            for i, d in enumerate(domains)}
    return {"domains": rows,
            "all_domains_at_least_90pct": all(r["routing_accuracy_after"] >= 0.9 for r in rows.values()),
            "no_domain_loss_worse": all(r["heldout_loss_after"] <= r["heldout_loss_before"] for r in rows.values())}


def specialize(cfg: SpecializeConfig) -> dict:
    torch.manual_seed(cfg.seed)
    if not 0 < cfg.target_mass < 1:
        raise UserError(f"--target-mass must be between 0 and 1 (exclusive), got {cfg.target_mass}.")
    s = Specializer(cfg)
    print(f"domains → experts: {', '.join(f'{d}→{i}' for i, d in enumerate(s.domains))}; "
          f"{sum(map(len, s.heldout))} held-out documents", flush=True)
    before = s.evaluate("before")
    s.run_stage("A", cfg.stage_a_steps, cfg.stage_a_lr)
    after_a = s.evaluate("A")
    s.run_stage("B", cfg.stage_b_steps, cfg.stage_b_lr)
    after = s.evaluate("B")
    s.save(before, after, after_a)
    summary = summarize(s.domains, before, after)
    (s.out / "summary.json").write_text(json.dumps(summary, indent=2))
    outputs.mark_done(s.out, summary)
    for d, r in summary["domains"].items():
        print(f"{d:>8}: routing accuracy {r['routing_accuracy_before']:.1%} -> {r['routing_accuracy_after']:.1%}"
              f" | held-out loss {r['heldout_loss_before']:.3f} -> {r['heldout_loss_after']:.3f}")
    return summary


@exit_on_user_error
def main(argv=None) -> dict:
    cfg = parse_config(SpecializeConfig, argv, "python -m smol_experiments.moe.specialize", __doc__, PRESETS)
    return specialize(cfg)


if __name__ == "__main__":
    main()
