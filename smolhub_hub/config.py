"""Training and data configuration, model families, and a CLI generated from the dataclasses.

Every trainer takes the same flags: one per field of its model config, of `TrainConfig` and of
`DataConfig` (`--n-layers`, `--lr`, `--dataset` ...), applied on top of a named preset. There is no
hand-kept list of flags to drift out of date.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from smolhub_hub.modeling import ConfigMixin


def opt(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig(ConfigMixin):
    out_dir: str = opt("", "where checkpoints, metrics.csv and plots go (default runs/<family>-<preset>)", path=True)
    max_steps: int = opt(5000, "optimizer steps to train for")
    batch_size: int = opt(32, "sequences per micro-batch on each process")
    seq_len: int = opt(0, "training sequence length (0 = the model's max_seq_len)")
    total_batch_tokens: int = opt(0, "tokens per optimizer step across all processes; sets gradient "
                                     "accumulation (0 = one micro-batch per process)")
    lr: float = opt(6e-4, "peak learning rate")
    min_lr: float = opt(6e-5, "learning rate at the end of the cosine")
    warmup_steps: int = opt(200, "linear warmup steps")
    lr_restarts: int = opt(0, "cosine restarts after the first cycle (SGDR style)")
    weight_decay: float = opt(0.1, "AdamW weight decay (2-D weights only)")
    beta1: float = opt(0.9, "AdamW beta1")
    beta2: float = opt(0.95, "AdamW beta2")
    grad_clip: float = opt(1.0, "clip the global gradient norm to this (0 = off)")
    seq_len_warmup: int = opt(0, "grow the sequence length from 64 to seq_len over this many steps (0 = off)")
    optimizer: str = opt("adamw", "optimizer", choices=["adamw", "muon"])
    eval_interval: int = opt(250, "evaluate every N steps")
    eval_batches: int = opt(20, "held-out batches per evaluation")
    sample_interval: int = opt(500, "print a generated sample every N steps (0 = off)")
    sample_prompt: str = opt("Once upon a time", "prompt for the samples printed during training")
    log_interval: int = opt(10, "log metrics every N steps")
    save_interval: int = opt(500, "checkpoint every N steps (and always at the end)")
    keep_last: int = opt(2, "checkpoints to keep")
    seed: int = opt(1337, "random seed")
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    dtype: str = opt("auto", "auto (bf16 on GPUs that have it, else fp16; fp32 on CPU), bfloat16, float16, float32",
                     choices=["auto", "bfloat16", "float16", "float32"])
    compile: str = opt("auto", "torch.compile: auto (on for CUDA), on, off", choices=["auto", "on", "off"])
    grad_checkpointing: bool = opt(False, "activation checkpointing (less memory, ~30% more compute)")
    max_bad_steps: int = opt(5, "stop after this many non-finite losses in a row (each is skipped)")
    resume: bool = opt(False, "continue the latest checkpoint in --out-dir exactly where it stopped")
    overwrite: bool = opt(False, "allow starting fresh in an --out-dir that already holds checkpoints")
    init_from: str = opt("", "start from Hugging Face weights of the same architecture (path or Hub id)", path=True)
    wandb: bool = opt(False, "log to Weights & Biases")
    wandb_project: str = opt("smolhub", "wandb project")
    wandb_mode: str = opt("online", "wandb mode", choices=["online", "offline", "disabled"])


@dataclass
class DataConfig(ConfigMixin):
    dataset: str = opt("builtin", "'builtin' (offline stories), a local .txt/.jsonl/.parquet file or folder, "
                                   "or a Hugging Face dataset id", path=True)
    dataset_config: str = opt("", "Hugging Face dataset config name (e.g. sample-10BT for FineWeb)")
    text_field: str = opt("text", "field holding the text in .jsonl / .parquet / Hub datasets")
    max_documents: int = opt(0, "use at most this many documents (0 = all; Hub datasets are streamed)")
    builtin_stories: int = opt(10000, "stories to generate for --dataset builtin")
    val_fraction: float = opt(0.02, "share of documents held out for evaluation")
    tokenizer: str = opt("bpe", "'bpe' (train a byte-level BPE on the corpus) or a tokenizer id / folder", path=True)
    vocab_size: int = opt(8192, "vocabulary size when training a BPE")
    cache_dir: str = opt("", "where packed token files are cached (default ~/.cache/smolhub)", path=True)


@dataclass
class ModelFamily:
    """Everything the shared tools need to know about one model folder."""

    name: str
    model_config: type
    model_class: Callable[[], type]            # lazy: importing a config never imports torch models
    train: TrainConfig
    data: DataConfig
    presets: dict[str, dict[str, dict[str, Any]]]
    hf_architecture: str = ""                  # the transformers class `smolhub export` writes
    description: str = ""

    def build(self, preset: str = "default", **model_overrides):
        mcfg, _, _ = self.resolve(preset)
        return mcfg.replace(**model_overrides)

    def resolve(self, preset: str, overrides: dict[str, dict[str, Any]] | None = None):
        """Defaults, then the preset, then explicit overrides: (model cfg, train cfg, data cfg)."""
        if preset not in self.presets and preset != "default":
            from smolhub_hub.errors import UserError
            raise UserError(f"unknown preset '{preset}' for {self.name}; choose from {', '.join(self.preset_names)}")
        layers = [self.presets.get(preset, {}), overrides or {}]
        cfgs = {"model": self.model_config(), "train": self.train, "data": self.data}
        for layer in layers:
            for key in cfgs:
                if layer.get(key):
                    cfgs[key] = cfgs[key].replace(**layer[key])
        return cfgs["model"], cfgs["train"], cfgs["data"]

    @property
    def preset_names(self) -> list[str]:
        return ["default", *self.presets]


# --- a CLI from dataclasses -------------------------------------------------------------------------
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# Derived, never a flag: the model's vocabulary comes from the tokenizer (`--vocab-size` sizes a BPE).
DERIVED_MODEL_FIELDS = {"vocab_size"}


def _add_fields(group, cls, defaults, skip=frozenset()):
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        meta, default = dict(f.metadata), getattr(defaults, f.name)
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                              "help": f"{meta.get('help', '')} (default: {default!r})".replace("%", "%%")}
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        if f.type in ("bool", bool):
            group.add_argument(_flag(f.name), action=argparse.BooleanOptionalAction, **kw)
        else:
            py_type = {"int": int, "float": float, "str": str}.get(f.type, type(default))
            if meta.get("path"):  # a path flag (path=True) reads ~ as the shell would, also where no shell ran
                py_type = os.path.expanduser
            group.add_argument(_flag(f.name), type=py_type, metavar=f.name.upper(), **kw)


def build_parser(family: ModelFamily, prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=f"Train {family.name}. {family.description}",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="default", choices=family.preset_names,
                   help="named configuration; flags below override it")
    _add_fields(p.add_argument_group("model"), family.model_config, family.model_config(), DERIVED_MODEL_FIELDS)
    _add_fields(p.add_argument_group("training"), TrainConfig, family.train)
    _add_fields(p.add_argument_group("data"), DataConfig, family.data)
    return p


def parse_cli(family: ModelFamily, argv=None, prog=None):
    """Parse flags into (model cfg, train cfg, data cfg, preset name, explicit overrides)."""
    ns = vars(build_parser(family, prog).parse_args(argv))
    preset = ns.pop("preset")
    fields = {k: {f.name for f in dataclasses.fields(c)}
              for k, c in [("model", family.model_config), ("train", TrainConfig), ("data", DataConfig)]}
    overrides = {k: {n: v for n, v in ns.items() if n in names} for k, names in fields.items()}
    return (*family.resolve(preset, overrides), preset, overrides)
