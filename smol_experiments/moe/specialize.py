"""Expert specialization: domain i → expert i, guided by a KL loss on the routers, in two stages.

    python -m smol_experiments.moe.specialize --model runs/moe/cpt/model --data nemotron
    python -m smol_experiments.moe.specialize --preset quick        # synthetic domains, offline, CPU

Loss = LM loss + guide_weight · KL(target ‖ router) + balance_coef · balance loss, over real tokens only.
Stage A trains only the routers (MixtralTopKRouter weights, selected by module type); stage B trains
everything at a lower learning rate. Before and after, on held-out documents of every domain:
routing accuracy (share of a domain's real tokens whose top-1 expert is the domain's expert) per layer
and averaged, the domain × expert top-1 shares, and the per-domain LM loss, each with a bootstrap interval
over held-out documents (and one for the change from before). A checkpoint is saved at every evaluation
and on a stop signal; rerunning the same command resumes it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from smol_experiments.bootstrap import LEVEL, RESAMPLES, paired_bootstrap, ratio
from smol_experiments.moe import data, engine, outputs
from smol_experiments.moe.cli import parse_config, recorded_settings
from smol_experiments.moe.domains import domain_splits
from smol_experiments.moe.engine import BETAS, StageConfig
from smol_experiments.moe.routing import (
    RoutingStats,
    balance_loss,
    domain_hits_per_row,
    guidance_loss,
    router_parameters,
)
from smol_experiments.stages import (
    FRESH,
    RESUME,
    REUSE,
    StopRequests,
    begin,
    claim,
    mark_done,
    model_fingerprint,
    reused,
    stage_main,
    write_atomic,
)
from smolhub_hub.config import opt
from smolhub_hub.errors import UserError
from smolhub_hub.training.optim import adamw
from smolhub_hub.training.schedule import lr_factor, scale_lr


@dataclass
class SpecializeConfig(StageConfig):
    model: str = opt("runs/moe/cpt/model", "MoE folder (upcycled or continued-pretrained)", path=True)
    output: str = opt("runs/moe/specialize", "folder for the model, metrics.csv and routing_*.json", path=True,
                      recorded=False)
    data: str = opt("nemotron", "'nemotron' (Hub: code/math/chat), 'packaged' (offline, real text: code from the "
                    "Python standard library, math from the SymPy docs, prose from the Jargon File) or 'synthetic' "
                    "(offline: code/math/stories)", choices=("nemotron", "packaged", "synthetic"))
    data_dir: str = opt("data", "folder of the packaged corpora for --data packaged (made there when missing)",
                        path=True)
    general_data: str = opt("", "held-out general text (a .jsonl/.txt file, e.g. continued pretraining's "
                            "val_documents.jsonl): its loss is measured before and after, never trained on", path=True)
    baseline_model: str = opt("", "also measure this model (e.g. the upcycled one) on the same held-out text, "
                              "before anything is trained", path=True)
    train_docs: int = opt(2000, "training documents per domain", min=1)
    heldout_docs: int = opt(200, "held-out documents per domain (never trained on)", min=1)
    max_len: int = opt(512, "tokens per document (longer ones are truncated)", min=1)
    docs_per_domain: int = opt(4, "documents of each domain per batch", min=1)
    eval_batch_size: int = opt(16, "documents per evaluation batch", min=1)
    stage_a_steps: int = opt(300, "router-only steps", min=0)
    stage_b_steps: int = opt(500, "steps training everything", min=0)
    stage_a_lr: float = opt(1e-3, "stage A learning rate (routers)", above=0)
    stage_b_lr: float = opt(2e-5, "stage B learning rate (all weights)", above=0)
    warmup_steps: int = opt(20, "linear warmup steps in each stage", min=0)
    guide_weight: float = opt(1.0, "weight of the KL router guidance", min=0)
    target_mass: float = opt(0.7, "target router probability of the domain's expert", above=0, below=1)
    weight_decay: float = opt(0.0, "AdamW weight decay (matrices only)", min=0)
    eval_every: int = opt(100, "steps between held-out evaluations (and checkpoints)", min=1)
    seed: int = opt(0, "seed for data sampling and order", min=0)


STAGE = "specialize"
PRESETS = {
    "quick": dict(model="runs/moe/quick/cpt/model", output="runs/moe/quick/specialize", data="synthetic",
                  train_docs=300, heldout_docs=40, max_len=96, docs_per_domain=4, eval_batch_size=40,
                  stage_a_steps=60, stage_b_steps=60, stage_a_lr=1e-2, stage_b_lr=5e-4, warmup_steps=5,
                  log_every=10, eval_every=30),
    # three real domains from packages on the continued-pretrained SmolLM2 MoE, sized for a 2-core CPU
    "real": dict(model="runs/moe/real/cpt/model", output="runs/moe/real/specialize", data="packaged",
                 train_docs=400, heldout_docs=40, max_len=256, docs_per_domain=2, eval_batch_size=8,
                 stage_a_steps=200, stage_b_steps=60, stage_a_lr=1e-2, stage_b_lr=1e-4, guide_weight=3.0,
                 warmup_steps=5, log_every=5, eval_every=1000,
                 general_data="runs/moe/real/cpt/val_documents.jsonl", baseline_model="runs/moe/real/upcycled"),
}


@torch.no_grad()
def evaluate_domains(model, heldout: list[list[list[int]]], cfg: SpecializeConfig, pad_id: int, device, ctx):
    """Per-domain held-out LM loss and routing (accuracy per layer, top-1 shares), real tokens only, plus each
    document's (hits, tokens) statistics for the bootstrap."""
    model.eval()
    c = model.config
    stats = RoutingStats(c.num_hidden_layers, c.num_local_experts, c.num_experts_per_tok, len(heldout))
    docs = {"domain": [], "loss_sum": [], "loss_tokens": [], "routing_hits": [], "routing_tokens": []}
    for batch in data.ordered_domain_batches(heldout, cfg.eval_batch_size, pad_id):
        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        logits, router_logits = engine.forward(model, ids, mask, ctx)
        losses, real = engine.token_losses(logits, ids, mask)
        row_domain = batch["domains"][:, 0]
        stats.update(router_logits, mask, batch["domains"])
        for key, values in (("domain", row_domain), ("loss_sum", losses.double().sum(1)), ("loss_tokens", real.sum(1)),
                            ("routing_hits", domain_hits_per_row(router_logits, mask, row_domain)),
                            ("routing_tokens", mask.sum(1) * c.num_hidden_layers)):
            docs[key] += values.tolist()
    model.train()
    loss_sum, tokens = (np.bincount(docs["domain"], weights=docs[key], minlength=len(heldout))
                        for key in ("loss_sum", "loss_tokens"))
    acc = stats.routing_accuracy()
    return {"heldout_loss": (loss_sum / tokens).tolist(), "routing_accuracy": acc.tolist(),
            "routing_accuracy_mean": acc.mean(1).tolist(), "domain_expert_share": stats.domain_expert_share().tolist(),
            "tokens_per_domain": tokens.tolist(), "documents": docs, **stats.summary(cfg.active_min_share)}


def set_trainable(model, stage: str) -> list[torch.nn.Parameter]:
    """Stage 'A': only router weights get gradients; stage 'B': every weight. Returns the trained params."""
    routers = {id(p) for p in router_parameters(model)}
    for p in model.parameters():
        p.requires_grad_(stage == "B" or id(p) in routers)
    return [p for p in model.parameters() if p.requires_grad]


class Specializer:
    """Holds the model, data and logs; `run_stage` trains one stage, `evaluate` measures held-out routing.

    `self.step` counts steps over both stages (A: 1..stage_a_steps, then B) and `self.tokens` the real tokens
    they trained on; `state` is the training state of the checkpoint to resume from, or None. Metrics are
    logged inside `with self.open_logs():`.
    """

    def __init__(self, cfg: SpecializeConfig, state: dict | None):
        self.cfg, self.state = cfg, state
        self.out = Path(cfg.output)
        self.device, self.ctx = engine.device_and_autocast(cfg.precision)
        checkpoint = str(self.out / outputs.CHECKPOINT)
        self.model, self.tokenizer = engine.load_moe(checkpoint if state else cfg.model, self.device)
        splits = domain_splits(cfg.data, cfg.train_docs, cfg.heldout_docs, cfg.seed, cfg.data_dir)
        self.domains = list(splits)
        if self.model.config.num_local_experts < len(self.domains):
            raise UserError(f"{len(self.domains)} domains need at least {len(self.domains)} experts; the model "
                            f"has {self.model.config.num_local_experts}. Upcycle with --num-experts "
                            f"{len(self.domains)}.")

        def tokenize(docs: list[str]) -> list[list[int]]:
            return data.tokenize_documents(docs, self.tokenizer, cfg.max_len)

        self.train_docs = [tokenize(splits[d][0]) for d in self.domains]
        self.heldout = [tokenize(splits[d][1]) for d in self.domains]
        # general text: loss only, never trained on (every domain above is a target of the guidance)
        self.general = tokenize(data.load_texts(cfg.general_data, max_documents=cfg.heldout_docs)) \
            if cfg.general_data else None
        self.samples = {d: splits[d][1][0] for d in self.domains}  # for the token-level routing picture
        self.pad_id = self.tokenizer.pad_token_id
        self.step, self.tokens = (state["step"], state.get("tokens", 0)) if state else (0, 0)
        self.log = None
        if state:
            torch.set_rng_state(state["rng"])
            print(f"resuming from the checkpoint at step {self.step} (stage {state['stage']})", flush=True)

    @contextlib.contextmanager
    def open_logs(self):
        """metrics.csv for the `with` block: new, or cut back to the checkpoint's step when resuming."""
        with engine.metrics_log(self.out, self.step if self.state else None, self.cfg) as self.log:
            yield

    def measure(self, model) -> dict:
        """Held-out routing and loss of every domain, and the general text's loss (under "general")."""
        r = evaluate_domains(model, self.heldout, self.cfg, self.pad_id, self.device, self.ctx)
        if self.general is not None:
            g = evaluate_domains(model, [self.general], self.cfg, self.pad_id, self.device, self.ctx)
            r["general"] = {"heldout_loss": g["heldout_loss"][0], "documents": g["documents"]}
        return r

    def evaluate(self, stage: str) -> dict:
        r = self.measure(self.model)
        row = engine.routing_metrics(r)
        for d, name in enumerate(self.domains):
            row[f"val/routing_accuracy/{name}"] = r["routing_accuracy_mean"][d]
            row[f"val/loss/{name}"] = r["heldout_loss"][d]
        if "general" in r:
            row["val/loss/general"] = r["general"]["heldout_loss"]
        self.log.log(self.step, self.tokens, row)
        accs = " ".join(f"{n} {a:.1%}" for n, a in zip(self.domains, r["routing_accuracy_mean"], strict=True))
        print(f"step {self.step:>5} [{stage}] held-out routing accuracy: {accs} | loss: {self.losses_text(r)}",
              flush=True)
        return r

    def losses_text(self, r: dict) -> str:
        """'code 2.511 math 2.740 prose 3.864 general 2.543': each domain's held-out loss, and the general text's."""
        losses = " ".join(f"{n} {loss:.3f}" for n, loss in zip(self.domains, r["heldout_loss"], strict=True))
        return losses + (f" general {r['general']['heldout_loss']:.3f}" if "general" in r else "")

    def baseline(self) -> dict | None:
        """--baseline-model on the same held-out text, measured once (routing_baseline.json)."""
        if not self.cfg.baseline_model:
            return None
        path = self.out / "routing_baseline.json"
        if path.is_file():
            return json.loads(path.read_text())
        model, _ = engine.load_moe(self.cfg.baseline_model, self.device)
        result = {"domains": self.domains, "model": self.cfg.baseline_model, **self.measure(model)}
        del model
        print(f"baseline {self.cfg.baseline_model}: held-out loss {self.losses_text(result)}", flush=True)
        write_atomic(path, json.dumps(result))
        return result

    def routing(self, name: str, stage: str, at_step: int) -> dict:
        """The held-out routing at a stage boundary, measured once: a run resumed after it reads routing_NAME.json."""
        path = self.out / f"routing_{name}.json"
        if self.state is not None and self.state["step"] >= at_step and path.is_file():
            return json.loads(path.read_text())
        result = {"domains": self.domains, **self.evaluate(stage)}
        write_atomic(path, json.dumps(result))
        return result

    def run_stage(self, stage: str, first_step: int, steps: int, lr_peak: float, stop: StopRequests):
        """Steps first_step+1..first_step+steps (those not done yet); a stop signal saves a checkpoint and stops."""
        cfg, model = self.cfg, self.model
        done = min(steps, max(0, self.step - first_step))
        if done == steps:
            return
        params = set_trainable(model, stage)
        optimizer = adamw(params, lr_peak, cfg.weight_decay, BETAS, self.device)
        if self.state is not None and self.state["stage"] == stage:
            optimizer.load_state_dict(self.state["optimizer"])
        batches = data.balanced_domain_batches(self.train_docs, cfg.docs_per_domain, self.pad_id,
                                               cfg.seed + (stage == "B"))
        top_k = model.config.num_experts_per_tok
        model.train()
        window_sum = torch.zeros(4, device=self.device)
        for i, batch in enumerate(itertools.islice(batches, steps)):
            if i < done:  # the same batches as an unbroken run
                continue
            scale_lr([optimizer], lr_factor(i, cfg.warmup_steps, steps, min_ratio=0.1))
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
            self.tokens += int(batch["attention_mask"].sum())  # counted on the CPU copy: no device sync
            if (i + 1) % cfg.log_every == 0:
                loss_v, lm_v, guide_v, bal_v = (window_sum / cfg.log_every).tolist()
                engine.check_finite(loss_v + float(grad_norm), self.step)
                window_sum.zero_()
                self.log.log(self.step, self.tokens, {
                    "train/loss": loss_v, "train/lm_loss": lm_v, "train/guide_loss": guide_v,
                    "train/balance_loss": bal_v, "train/grad_norm": float(grad_norm),
                    "train/lr": optimizer.param_groups[0]["lr"]})
            evaluation_point = (i + 1) % cfg.eval_every == 0 and i + 1 < steps
            if evaluation_point:
                self.evaluate(stage)
            if evaluation_point or stop.signum is not None:
                outputs.save_checkpoint(self.out, model, self.tokenizer, {
                    "stage": stage, "step": self.step, "tokens": self.tokens, "optimizer": optimizer.state_dict(),
                    "rng": torch.get_rng_state()})
            if stop.signum is not None:
                set_trainable(model, "B")
                stop.interrupt(f" at step {self.step} (stage {stage}; checkpoint saved)")
        set_trainable(model, "B")  # leave every weight trainable, as loaded

    def save(self, after: dict):
        self.model.save_pretrained(self.out / "model")
        self.tokenizer.save_pretrained(self.out / "model")
        (self.out / "routing_after.json").write_text(json.dumps({"domains": self.domains, **after}))
        (self.out / "samples.json").write_text(json.dumps(self.samples, indent=2))
        (self.out / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2))


def _document_bootstrap(results: dict[str, dict], domain: int, hits: str, count: str) -> dict:
    """Paired bootstrap over one domain's held-out documents of a ratio of sums, each result vs 'before'."""
    stats = {}
    for name, r in results.items():
        docs = r["documents"]
        stats[name] = np.array([[docs[hits][i], docs[count][i]] for i, d in enumerate(docs["domain"]) if d == domain])
    return paired_bootstrap(stats, ratio, compare_to="before")


ROUTING = ("routing_accuracy", "routing_hits", "routing_tokens")  # (name, per-document numerator, denominator)
LOSS = ("heldout_loss", "loss_sum", "loss_tokens")


def _compare(metric: tuple[str, str, str], reference: str, ref: dict, after: dict, i: int) -> dict:
    """<name>_<reference> and <name>_after, each with its interval, and the paired change from the reference
    (<name>_change for 'before', <name>_change_from_<reference> otherwise)."""
    name, hits, count = metric
    boot = _document_bootstrap({"before": ref, "after": after}, i, hits, count)
    change = boot["vs"]["after"]
    suffix = "" if reference == "before" else f"_from_{reference}"
    return {f"{name}_{reference}": boot["systems"]["before"]["score"],
            f"{name}_{reference}_ci": boot["systems"]["before"]["ci"],
            f"{name}_after": boot["systems"]["after"]["score"], f"{name}_after_ci": boot["systems"]["after"]["ci"],
            f"{name}_change{suffix}": change["diff"], f"{name}_change{suffix}_ci": change["ci"],
            f"{name}_change{suffix}_significant": change["significant"]}


def summarize(domains: list[str], before: dict, after: dict, baseline: dict | None = None) -> dict:
    """Accuracy and loss before / after per domain, each with its interval and that of the change; the general
    text's loss the same way; with a baseline, every loss after compared with the baseline's too."""
    rows = {}
    for i, d in enumerate(domains):
        rows[d] = {**_compare(ROUTING, "before", before, after, i), **_compare(LOSS, "before", before, after, i)}
        if baseline is not None:
            rows[d].update(_compare(LOSS, "baseline", baseline, after, i))
    summary = {"domains": rows,
               "intervals": f"{LEVEL:.0%} paired bootstrap over held-out documents, {RESAMPLES} resamples",
               "all_domains_at_least_90pct": all(r["routing_accuracy_after"] >= 0.9 for r in rows.values()),
               "no_domain_loss_worse": all(r["heldout_loss_after"] <= r["heldout_loss_before"] for r in rows.values())}
    if "general" in after:
        summary["general"] = _compare(LOSS, "before", before["general"], after["general"], 0)
        if baseline is not None:
            summary["general"].update(_compare(LOSS, "baseline", baseline["general"], after["general"], 0))
    if baseline is not None:
        summary["baseline_model"] = baseline["model"]
        summary["no_domain_loss_worse_than_baseline"] = all(r["heldout_loss_after"] <= r["heldout_loss_baseline"]
                                                            for r in rows.values())
    return summary


def _loss_line(r: dict) -> str:
    c_lo, c_hi = r["heldout_loss_change_ci"]
    reading = "" if r["heldout_loss_change_significant"] else ", no significant change"
    line = (f"held-out loss {r['heldout_loss_before']:.3f} -> {r['heldout_loss_after']:.3f} (change "
            f"{r['heldout_loss_change']:+.3f} [{c_lo:+.3f}, {c_hi:+.3f}]{reading})")
    if "heldout_loss_baseline" in r:
        b_lo, b_hi = r["heldout_loss_change_from_baseline_ci"]
        line += (f"; baseline {r['heldout_loss_baseline']:.3f}, change from it "
                 f"{r['heldout_loss_change_from_baseline']:+.3f} [{b_lo:+.3f}, {b_hi:+.3f}]")
    return line


def _print_summary(summary: dict):
    for d, r in summary["domains"].items():
        lo, hi = r["routing_accuracy_after_ci"]
        print(f"{d:>8}: routing accuracy {r['routing_accuracy_before']:.1%} -> {r['routing_accuracy_after']:.1%} "
              f"[{lo:.1%}, {hi:.1%}] | {_loss_line(r)}")
    if "general" in summary:
        print(f"{'general':>8}: {_loss_line(summary['general'])}")


def specialize(cfg: SpecializeConfig) -> dict:
    out = Path(cfg.output)
    settings = recorded_settings(cfg, model_sha256=model_fingerprint(cfg.model))
    status = claim(out, STAGE, settings, overwrite=cfg.overwrite, flag="--output")
    if status == REUSE:
        return reused(out, STAGE)
    torch.manual_seed(cfg.seed)
    s = Specializer(cfg, outputs.load_state(out) if status == RESUME and outputs.has_checkpoint(out) else None)
    if status == FRESH:
        begin(out, STAGE, settings)
    print(f"domains → experts: {', '.join(f'{d}→{i}' for i, d in enumerate(s.domains))}; "
          f"{sum(map(len, s.heldout))} held-out documents", flush=True)
    with s.open_logs(), StopRequests() as stop:
        baseline = s.baseline()
        before = s.routing("before", "before", 0)
        s.run_stage("A", 0, cfg.stage_a_steps, cfg.stage_a_lr, stop)
        s.routing("after_stage_a", "A", cfg.stage_a_steps)
        s.run_stage("B", cfg.stage_a_steps, cfg.stage_b_steps, cfg.stage_b_lr, stop)
        after = s.evaluate("B")
    s.save(after)
    summary = summarize(s.domains, before, after, baseline)
    (s.out / "summary.json").write_text(json.dumps(summary, indent=2))
    mark_done(s.out, summary)
    shutil.rmtree(s.out / outputs.CHECKPOINT, ignore_errors=True)  # the final model supersedes it
    _print_summary(summary)
    return summary


def run(argv=None) -> dict:
    return specialize(parse_config(SpecializeConfig, argv, "python -m smol_experiments.moe.specialize", __doc__,
                                   PRESETS))


@stage_main
def main(argv=None) -> dict:
    return run(argv)


if __name__ == "__main__":
    main()
