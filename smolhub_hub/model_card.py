"""The README.md (model card) `smolhub push` uploads: what the model is, how it was trained, how to load it."""

from __future__ import annotations

import json
import math
from pathlib import Path

from smolhub_hub.compare import RunSummary, _human


def _is_hub_dataset(name: str) -> bool:
    return name.count("/") == 1 and not Path(name).expanduser().exists() and not name.startswith((".", "/", "~"))


def _front_matter(family: str, arch: str, dataset: str, transformers: bool) -> str:
    tags = ["smolhub", family.lower(), arch.removesuffix("ForCausalLM").lower(), "text-generation"]
    meta = {"library_name": "transformers" if transformers else "smolhub", "pipeline_tag": "text-generation",
            "tags": tags}
    if _is_hub_dataset(dataset):
        meta["datasets"] = [dataset]
    # JSON values are valid YAML, so the metadata block needs no YAML library.
    return "---\n" + "\n".join(f"{k}: {json.dumps(v)}" for k, v in meta.items()) + "\n---\n"


def _fmt(x: float | None) -> str:
    return "not logged" if x is None else f"{x:.4f}"


def render_model_card(model, summary: RunSummary, has_loss_curve: bool, repo_id: str = "USER/REPO",
                      no_export: str | None = None) -> str:
    from smolhub_hub.registry import get_family

    cfg = model.checkpoint_config
    fam = get_family(cfg["family"])
    data, train = cfg.get("data", {}), cfg.get("train", {})
    counts = model.param_counts()
    arch = fam.hf_architecture or "a transformers causal LM"
    dataset = data.get("dataset", "unknown")
    if dataset == "builtin":
        dataset_text = f"SmolHub's built-in offline story corpus ({data.get('builtin_stories')} stories)"
    else:
        dataset_text = f"`{dataset}`" + (f" (config `{data['dataset_config']}`)" if data.get("dataset_config") else "")
    tokenizer = (f"byte-level BPE trained on the corpus ({len(model.tokenizer)} ids)" if data.get("tokenizer") == "bpe"
                 else f"`{data.get('tokenizer')}` ({len(model.tokenizer)} ids)")
    moe = counts["active"] != counts["total"]
    arch_rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in cfg["model"].items())
    ppl = "" if summary.val_loss is None else f" (perplexity {math.exp(min(summary.val_loss, 30)):.2f})"
    lines = [
        _front_matter(cfg["family"], arch, dataset, no_export is None),
        f"# {repo_id.split('/')[-1]}",
        "",
        f"A **{cfg['family']}** language model trained from scratch with SmolHub "
        f"— {fam.description}",
        "",
        "## Model",
        "",
        f"- Architecture: {cfg['family']} " + (f"(exported as transformers `{arch}`)" if no_export is None
                                               else f"(no transformers export: {no_export})"),
        f"- Parameters: {counts['total']:,} ({_human(counts['total'])})"
        + (f", {counts['active']:,} active per token (mixture of experts)" if moe else ""),
        f"- Context length: {model.max_seq_len} tokens",
        f"- Tokenizer: {tokenizer}",
        "",
        "<details><summary>Full configuration</summary>",
        "",
        "| field | value |",
        "|---|---|",
        arch_rows,
        "",
        "</details>",
        "",
        "## Training",
        "",
        f"- Dataset: {dataset_text}",
        f"- Steps: {summary.steps:,}; tokens seen: {summary.tokens:,}",
        f"- Batch: {train.get('batch_size')} sequences x {train.get('seq_len') or model.max_seq_len} tokens"
        + (f", {train['total_batch_tokens']:,} tokens per optimizer step" if train.get("total_batch_tokens") else ""),
        f"- Optimizer: {train.get('optimizer', 'adamw')}, peak learning rate {train.get('lr')}, "
        f"warmup {train.get('warmup_steps')} steps, cosine to {train.get('min_lr')}",
        "",
        "## Results",
        "",
        "| metric | value |",
        "|---|---|",
        f"| final train loss | {_fmt(summary.train_loss)} |",
        f"| final held-out loss | {_fmt(summary.val_loss)}{ppl} |",
        "",
        "Losses are next-token cross-entropy in nats per token; the held-out split is made by document.",
        "",
    ]
    if has_loss_curve:
        lines += ["![loss curve](loss_curve.png)", ""]
    lines += ["## How to use", ""]
    if no_export is None:
        lines += [
            "With transformers (the repository root is a transformers model folder):",
            "",
            "```python",
            "from transformers import pipeline",
            f'generate = pipeline("text-generation", model="{repo_id}")',
            'print(generate("Once upon a time", max_new_tokens=100, do_sample=True, temperature=0.7)[0]["generated_text"])',
            "```",
            "",
        ]
    lines += [
        "With SmolHub (reads the native checkpoint in `smolhub/`):",
        "",
        "```python",
        "from smolhub_hub.inference import load_model, generate_text",
        f'model = load_model("{repo_id}")',
        'print(generate_text(model, "Once upon a time", max_length=100, temperature=0.7))',
        "```",
        "",
        "or from the shell:",
        "",
        "```bash",
        f'smolhub generate {repo_id} --prompt "Once upon a time" --top-p 0.9',
        f"smolhub pull {repo_id} ./{repo_id.split('/')[-1]}     # everything, for offline use",
        "```",
        "",
        "## Files",
        "",
        *(["- `config.json`, `model.safetensors`, `generation_config.json`, tokenizer files: the transformers export"]
          if no_export is None else []),
        "- `smolhub/`: the SmolHub checkpoint (`model.safetensors`, `config.json`, tokenizer, `metrics.csv`)",
        "",
        "## Limitations",
        "",
        "A small model trained from scratch: it continues text in the style of its training data, "
        "makes factual and logical mistakes, and has had no safety tuning.",
        "",
    ]
    return "\n".join(lines)
