"""Dense → MoE upcycling: a LlamaForCausalLM (SmolLM-135M) becomes a standard MixtralForCausalLM.

Attention, norms and embeddings are copied; every expert is a copy of the dense SwiGLU MLP; each layer
gets a new router. Because all experts are equal and the top-k weights are renormalised to sum to 1, the
MoE reproduces the dense logits exactly at initialisation, whatever the router says.

Why the default is 3 experts, top-2 (not the reference's top-1):
- 3 experts = one per domain (code, math, chat) for specialization.
- Mixtral renormalises the top-k probabilities. With top-1 the single weight is p/p = 1, a constant, so
  the language-model loss sends the router *no gradient*; only auxiliary losses could ever train it.
  With top-2 the output is w·E_a(x) + (1-w)·E_b(x), so once experts differ the LM loss tells the router
  which expert helps (d loss / d w ∝ E_a(x) - E_b(x)). `tests/smol_experiments/moe/test_upcycle.py` checks both.

    python -m smol_experiments.moe.upcycle --model HuggingFaceTB/SmolLM-135M --output runs/moe/upcycled
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch

from smol_experiments.flags import Parser, non_negative_float, non_negative_int, path, positive_int
from smol_experiments.stages import (
    REUSE,
    begin,
    claim,
    fingerprint,
    mark_done,
    model_fingerprint,
    reused,
    stage_main,
    write_atomic,
)
from smolhub_hub.errors import UserError

DEFAULT_MODEL = "HuggingFaceTB/SmolLM-135M"


def moe_config_from_dense(dense_config, num_experts: int = 3, top_k: int = 2, aux_loss_coef: float = 0.01):
    """A MixtralConfig with the dense model's shape and `num_experts` experts, `top_k` per token."""
    from transformers import MixtralConfig

    if dense_config.model_type != "llama":
        raise UserError(f"upcycling expects a Llama-architecture model, got model_type "
                        f"'{dense_config.model_type}'. SmolLM-135M/360M/1.7B are Llama models.")
    if getattr(dense_config, "attention_bias", False) or getattr(dense_config, "mlp_bias", False):
        raise UserError("this Llama uses biases in attention or MLP, which Mixtral has no place for.")
    if not 1 <= top_k <= num_experts:
        raise UserError(f"--top-k must be between 1 and --num-experts ({num_experts}), got {top_k}.")
    if top_k == 1:
        warnings.warn("top-1 routing: Mixtral renormalises the single weight to 1, so the router gets no "
                      "gradient from the language-model loss (only from auxiliary losses).", stacklevel=2)
    c = dense_config
    return MixtralConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads,
        num_key_value_heads=c.num_key_value_heads, head_dim=c.head_dim, hidden_act=c.hidden_act,
        max_position_embeddings=c.max_position_embeddings, initializer_range=c.initializer_range,
        rms_norm_eps=c.rms_norm_eps, rope_parameters=dict(c.rope_parameters),
        tie_word_embeddings=c.tie_word_embeddings, attention_dropout=c.attention_dropout,
        bos_token_id=c.bos_token_id, eos_token_id=c.eos_token_id, pad_token_id=c.pad_token_id,
        sliding_window=None, num_local_experts=num_experts, num_experts_per_tok=top_k,
        router_aux_loss_coef=aux_loss_coef, output_router_logits=False, router_jitter_noise=0.0,
    )


@torch.no_grad()
def upcycle(dense, num_experts: int = 3, top_k: int = 2, router_std: float | None = None, seed: int = 0,
            aux_loss_coef: float = 0.01):
    """Return a MixtralForCausalLM whose experts are copies of `dense`'s MLPs (same dtype, eval mode)."""
    from transformers import MixtralForCausalLM

    config = moe_config_from_dense(dense.config, num_experts, top_k, aux_loss_coef)
    moe = MixtralForCausalLM(config).to(dense.dtype)
    src, dst = dense.model, moe.model
    dst.embed_tokens.weight.copy_(src.embed_tokens.weight)
    dst.norm.weight.copy_(src.norm.weight)
    if not config.tie_word_embeddings:
        moe.lm_head.weight.copy_(dense.lm_head.weight)
    # A fixed generator: the same seed gives the same routers, whatever else used the global RNG.
    gen = torch.Generator().manual_seed(seed)
    std = config.initializer_range if router_std is None else router_std
    for s, d in zip(src.layers, dst.layers, strict=True):
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            getattr(d.self_attn, name).weight.copy_(getattr(s.self_attn, name).weight)
        d.input_layernorm.weight.copy_(s.input_layernorm.weight)
        d.post_attention_layernorm.weight.copy_(s.post_attention_layernorm.weight)
        # Mixtral's fused layout: gate_up_proj[e] = [gate; up] (chunked in that order), down_proj[e] = down.
        gate_up = torch.cat([s.mlp.gate_proj.weight, s.mlp.up_proj.weight], dim=0)
        d.mlp.experts.gate_up_proj.copy_(gate_up.expand(num_experts, -1, -1))
        d.mlp.experts.down_proj.copy_(s.mlp.down_proj.weight.expand(num_experts, -1, -1))
        router = torch.randn(d.mlp.gate.weight.shape, generator=gen) * std
        d.mlp.gate.weight.copy_(router.to(d.mlp.gate.weight.dtype))
    if config.tie_word_embeddings:
        moe.tie_weights()
    return moe.eval()


def parameter_counts(moe) -> dict[str, int]:
    """Total parameters and those active for one token (top-k of the experts)."""
    c = moe.config
    total = sum(p.numel() for p in moe.parameters())
    per_expert = sum(p[0].numel() for layer in moe.model.layers for p in layer.mlp.experts.parameters())
    active = total - per_expert * (c.num_local_experts - c.num_experts_per_tok)
    return {"total": total, "active_per_token": active}


@torch.no_grad()
def parity_report(dense, moe, input_ids: torch.Tensor, new_tokens: int = 20) -> dict:
    """Max |logit difference| and whether greedy continuations are identical (models in eval mode)."""
    diff = (dense(input_ids).logits.float() - moe(input_ids).logits.float()).abs().max().item()
    kw = dict(max_new_tokens=new_tokens, do_sample=False, pad_token_id=dense.config.eos_token_id)
    dense_ids, moe_ids = dense.generate(input_ids, **kw), moe.generate(input_ids, **kw)
    return {"max_abs_logit_diff": diff, "greedy_identical": bool(torch.equal(dense_ids, moe_ids)),
            "dense_greedy_ids": dense_ids[0].tolist(), "moe_greedy_ids": moe_ids[0].tolist()}


@torch.no_grad()
def text_parity(dense, moe, tokenizer, texts: list[str], max_tokens: int = 256, prompt_tokens: int = 32,
                new_tokens: int = 20) -> dict:
    """Parity on real documents: the mean LM loss of both models over each document's first `max_tokens`
    tokens, the largest |logit difference|, and whether greedy continuations of each document's first
    `prompt_tokens` tokens are identical."""
    loss = {"dense": 0.0, "moe": 0.0}
    count, max_diff, greedy_equal = 0, 0.0, True
    kw = dict(max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    for text in texts:
        ids = tokenizer(text, return_tensors="pt").input_ids[:, :max_tokens]
        if ids.shape[1] < 2:
            continue
        outs = {"dense": dense(ids, labels=ids), "moe": moe(ids, labels=ids)}
        for name, out in outs.items():
            loss[name] += out.loss.item() * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
        max_diff = max(max_diff, (outs["dense"].logits - outs["moe"].logits).abs().max().item())
        prompt = ids[:, :prompt_tokens]
        greedy_equal &= bool(torch.equal(dense.generate(prompt, **kw), moe.generate(prompt, **kw)))
    if not count:
        raise UserError("--parity-data gave no document of at least two tokens.")
    return {"documents": len(texts), "tokens": count, "loss_dense": loss["dense"] / count,
            "loss_moe": loss["moe"] / count, "max_abs_logit_diff": max_diff, "greedy_identical": greedy_equal}


def parity_texts(source: str, n: int) -> list[str]:
    """`n` documents spread evenly over a local dataset (every k-th one)."""
    from smol_experiments.moe.data import load_texts

    if not Path(source).exists():
        raise UserError(f"--parity-data {source}: no such file or folder.")
    texts = load_texts(source, max_documents=10 ** 9)
    return texts[:: max(1, len(texts) // n)][:n]


def load_dense(name_or_path: str):
    """The dense model (fp32, eval mode) and its tokenizer: a Hub id, a folder, a .gguf file or `smollm2`."""
    from smol_experiments.pretrained import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(name_or_path, dtype=torch.float32)
    return model.float().eval(), tokenizer


def main_args(argv=None) -> argparse.Namespace:
    p = Parser(prog="python -m smol_experiments.moe.upcycle", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, type=path,
                   help="dense Llama model: Hub id, local folder, .gguf file, or smollm2 (the packaged SmolLM2-135M)")
    p.add_argument("--output", required=True, type=path, help="folder for the MoE (save_pretrained + tokenizer)")
    p.add_argument("--num-experts", type=positive_int, default=3, help="experts per layer (one per domain)")
    p.add_argument("--top-k", type=positive_int, default=2,
                   help="experts per token (>= 2 so the LM loss trains routers)")
    p.add_argument("--router-std", type=non_negative_float, default=None,
                   help="router init std (default: initializer_range)")
    p.add_argument("--aux-loss-coef", type=non_negative_float, default=0.01,
                   help="stored as config.router_aux_loss_coef")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the router initialisation")
    p.add_argument("--prompt", default="The capital of France is", help="prompt for the parity check")
    p.add_argument("--parity-data", default=None, type=path,
                   help="also check parity on real documents of this local file or folder (loss of both models, "
                        "max |logit difference|, greedy continuations)")
    p.add_argument("--parity-docs", type=positive_int, default=8, help="documents of --parity-data to compare")
    p.add_argument("--overwrite", action="store_true",
                   help="redo the upcycle if --output holds one made with other settings (otherwise refused)")
    return p.parse_args(argv)


def run(argv=None) -> dict:
    args = main_args(argv)
    if not args.prompt.strip():
        raise UserError("--prompt is empty; the parity check needs some text.")
    out = Path(args.output)
    # the parity-on-text flags are recorded only when given: an upcycle made before they existed is still reused
    unrecorded = ("output", "overwrite") + (() if args.parity_data else ("parity_data", "parity_docs"))
    settings = {**{k: v for k, v in vars(args).items() if k not in unrecorded},
                "model_sha256": model_fingerprint(args.model)}
    if args.parity_data:
        settings["parity_data_sha256"] = fingerprint(args.parity_data, ("**/*",))
    status = claim(out, "upcycle", settings, overwrite=args.overwrite, flag="--output")
    if status == REUSE:
        reused(out, "upcycle")
        return json.loads((out / "upcycle_report.json").read_text())
    dense, tokenizer = load_dense(args.model)
    begin(out, "upcycle", settings)  # an unfinished upcycle has nothing to resume: start again
    moe = upcycle(dense, args.num_experts, args.top_k, args.router_std, args.seed, args.aux_loss_coef)
    ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    report = {"source": args.model, **parity_report(dense, moe, ids), **parameter_counts(moe),
              "dense_parameters": sum(p.numel() for p in dense.parameters()),
              "num_experts": args.num_experts, "top_k": args.top_k}
    if args.parity_data:
        report["text_parity"] = {"data": args.parity_data,
                                 **text_parity(dense, moe, tokenizer, parity_texts(args.parity_data, args.parity_docs))}
    moe.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_atomic(out / "upcycle_report.json", json.dumps(report, indent=2))
    mark_done(out, {k: report[k] for k in ("max_abs_logit_diff", "greedy_identical", "total")})
    print(f"dense {report['dense_parameters']:,} params -> MoE {report['total']:,} total, "
          f"{report['active_per_token']:,} active per token ({args.num_experts} experts, top-{args.top_k})")
    print(f"parity: max |Δlogit| = {report['max_abs_logit_diff']:.2e}, "
          f"greedy identical = {report['greedy_identical']}")
    if "text_parity" in report:
        t = report["text_parity"]
        print(f"parity on {t['documents']} documents of {t['data']} ({t['tokens']} tokens): loss dense "
              f"{t['loss_dense']:.5f}, MoE {t['loss_moe']:.5f}; max |Δlogit| = {t['max_abs_logit_diff']:.2e}; "
              f"greedy identical = {t['greedy_identical']}")
    print(f"saved to {out}")
    return report


@stage_main
def main(argv=None) -> dict:
    return run(argv)


if __name__ == "__main__":
    main()
