"""Training and data configuration, model families, and a CLI generated from the dataclasses.

Every trainer takes the same flags: one per field of its model config, of `TrainConfig` and of
`DataConfig` (`--n-layers`, `--lr`, `--dataset` ...), applied on top of a named preset. There is no
hand-kept list of flags to drift out of date.

A model-config field is either *architecture* (what the network computes: saved with the checkpoint,
must match on --resume, taken from the source on --init-from) or a *training setting* declared with
`opt(..., training=True)` (dropout, kernel choices, auxiliary-loss coefficients: free to change on
--resume and taken from this run's flags on --init-from), as are all `TrainConfig` fields.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from smolhub_hub.errors import ArgumentParser, UserError
from smolhub_hub.modeling import ConfigMixin
from smolhub_hub.registry import load_object


def opt(default, help: str, *, training: bool = False, min=None, max=None, above=None, below=None, **kw):
    """A config field with its --help text; `training=True` marks a model field as a training setting.
    A number declares its range: `min` / `max` inclusive, `above` / `below` exclusive (checked by `check_ranges`)."""
    bounds = {k: v for k, v in {"min": min, "max": max, "above": above, "below": below}.items() if v is not None}
    return field(default=default, metadata={"help": help, "training": training, "range": bounds, **kw})


BOUNDS = (("min", ">="), ("above", ">"), ("max", "<="), ("below", "<"))


def _range_text(bounds: dict) -> str:
    """'>= 1', '> 0', '>= 0 and < 1', or 'a finite number' for a field that declares no bound."""
    return " and ".join(f"{op} {bounds[name]}" for name, op in BOUNDS if name in bounds) or "a finite number"


def out_of_range(config) -> tuple[str, Any, str] | None:
    """The first number of `config` outside the range its field declares (or not finite): (name, value, range)."""
    for f in dataclasses.fields(config):
        value, bounds = getattr(config, f.name), f.metadata.get("range", {})
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not (math.isfinite(value) and value >= bounds.get("min", value) and value <= bounds.get("max", value)
                and value > bounds.get("above", -math.inf) and value < bounds.get("below", math.inf)):
            return f.name, value, _range_text(bounds)
    return None


def check_ranges(config, file: Path | str | None = None):
    """Every number of `config` inside its declared range, else one UserError line: naming the flag, or with
    `file` the damaged file the config was read from."""
    bad = out_of_range(config)
    if bad is None:
        return
    name, value, allowed = bad
    if file is not None:
        raise UserError(f"{file} is corrupt ({name} = {value!r}, must be {allowed}); use an earlier checkpoint")
    raise UserError(f"{flag(name)} must be {allowed} (got {value})")


def training_settings(cls) -> list[str]:
    """The model-config fields declared `training=True`: how the model is trained, not what it computes."""
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("training")]


def architecture_fields(cls) -> list[str]:
    """Every other model-config field: what the network computes."""
    return [f.name for f in dataclasses.fields(cls) if not f.metadata.get("training")]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def differences(old, new, names) -> dict[str, tuple]:
    """{field: (old value, new value)} for the `names` whose values differ between two configs."""
    return {n: (getattr(old, n), getattr(new, n)) for n in names if getattr(old, n) != getattr(new, n)}


def describe(diffs: dict[str, tuple], old: str, new: str) -> str:
    """'--dim 64 (checkpoint) vs 128 (given), ...' for a UserError."""
    return ", ".join(f"{flag(n)} {a!r} ({old}) vs {b!r} ({new})" for n, (a, b) in diffs.items())


@dataclass
class TrainConfig(ConfigMixin):
    out_dir: str = opt("", "where checkpoints, metrics.csv and plots go (default runs/<family>-<preset>)", path=True)
    max_steps: int = opt(5000, "optimizer steps to train for", min=1)
    batch_size: int = opt(32, "sequences per micro-batch on each process", min=1)
    seq_len: int = opt(0, "training sequence length (0 = the model's max_seq_len)", min=0)
    total_batch_tokens: int = opt(0, "tokens per optimizer step across all processes; sets gradient "
                                     "accumulation (0 = one micro-batch per process)", min=0)
    lr: float = opt(6e-4, "peak learning rate", above=0)
    min_lr: float = opt(6e-5, "learning rate at the end of the cosine", min=0)
    warmup_steps: int = opt(200, "linear warmup steps", min=0)
    lr_restarts: int = opt(0, "cosine restarts after the first cycle (SGDR style)", min=0)
    weight_decay: float = opt(0.1, "AdamW weight decay (2-D weights only)", min=0)
    beta1: float = opt(0.9, "AdamW beta1", min=0, below=1)
    beta2: float = opt(0.95, "AdamW beta2", min=0, below=1)
    grad_clip: float = opt(1.0, "clip the global gradient norm to this (0 = off)", min=0)
    seq_len_warmup: int = opt(0, "grow the sequence length from 64 to seq_len over this many steps (0 = off)", min=0)
    optimizer: str = opt("adamw", "adamw, or muon: Muon for the 2-D matrices inside the blocks (and stacked "
                                  "experts), AdamW at --lr for embeddings, head, norms, biases and routers",
                         choices=["adamw", "muon"])
    muon_lr: float = opt(0.02, "Muon learning rate with --muon-adjust-lr original", above=0)
    muon_momentum: float = opt(0.95, "Muon momentum (Nesterov)", min=0, below=1)
    muon_weight_decay: float = opt(0.0, "Muon decoupled weight decay", min=0)
    muon_adjust_lr: str = opt("original", "Muon per-matrix step (torch.optim.Muon's adjust_lr_fn), for an (A, B) "
                              "matrix: original (Keller Jordan) = --muon-lr * sqrt(max(1, A/B)); match_rms_adamw "
                              "(Moonshot) = --lr * 0.2 * sqrt(max(A, B)), an update of AdamW's RMS at AdamW's "
                              "--lr (--muon-lr is not used)", choices=["original", "match_rms_adamw"])
    eval_interval: int = opt(250, "evaluate every N steps", min=1)
    eval_batches: int = opt(20, "held-out batches per evaluation", min=1)
    sample_interval: int = opt(500, "print a generated sample every N steps (0 = off)", min=0)
    sample_prompt: str = opt("Once upon a time", "prompt for the samples printed during training")
    log_interval: int = opt(10, "log metrics every N steps", min=1)
    save_interval: int = opt(500, "checkpoint every N steps (and always at the end)", min=1)
    keep_last: int = opt(2, "checkpoints to keep", min=1)
    seed: int = opt(1337, "random seed", min=0)
    device: str = opt("auto", "cpu, cuda, cuda:N or auto")
    dtype: str = opt("auto", "auto (bf16 on GPUs that have it, else fp16; on CPU bf16 autocast where it multiplies "
                     "bf16 natively (AMX / AVX512-BF16), else fp32), bfloat16, float16, float32",
                     choices=["auto", "bfloat16", "float16", "float32"])
    compile: str = opt("auto", "torch.compile: auto (on for CUDA), on, off", choices=["auto", "on", "off"])
    grad_checkpointing: bool = opt(False, "activation checkpointing (less memory, ~30% more compute)")
    loss_chunk_size: int = opt(-1, "compute the training loss in chunks of this many tokens without holding the "
                                   "full logits: 2.3-4x less memory for the head at a 49k vocabulary "
                                   "(smolhub_hub/losses.py); 0 = plain cross-entropy over the full logits; -1 = auto: "
                                   "chunks of 256 once a micro-batch's fp32 logits would pass 256 MB, plain below",
                               min=-1)
    max_bad_steps: int = opt(5, "stop after this many non-finite losses in a row (each is skipped)", min=1)
    resume: bool = opt(False, "continue the latest checkpoint in --out-dir exactly where it stopped; "
                              "architecture and data flags must match it, training settings may change")
    allow_data_change: bool = opt(False, "with --resume: continue although the dataset changed since the run "
                                         "started (its fingerprint differs)")
    overwrite: bool = opt(False, "allow starting fresh in an --out-dir that already holds checkpoints")
    init_from: str = opt("", "start from another model's weights: a transformers folder, a Hub id, a .gguf file, "
                             "smollm2 or a SmolHub checkpoint (as `smolhub import` takes); the architecture and, "
                             "unless --tokenizer is given, the tokenizer come from it, training settings from this "
                             "run's flags", path=True)
    wandb: bool = opt(False, "log to Weights & Biases (--resume continues the same wandb run)")
    wandb_project: str = opt("smolhub", "wandb project")
    wandb_mode: str = opt("env", "wandb mode: env (wandb's own WANDB_MODE, else online), online, offline, "
                                 "disabled", choices=["env", "online", "offline", "disabled"])


@dataclass
class DataConfig(ConfigMixin):
    dataset: str = opt("builtin", "'builtin' (offline stories), a local .txt/.jsonl/.parquet file or folder, "
                                   "or a Hugging Face dataset id", path=True)
    dataset_config: str = opt("", "Hugging Face dataset config name (e.g. sample-10BT for FineWeb)")
    text_field: str = opt("text", "field holding the text in .jsonl / .parquet / Hub datasets")
    max_documents: int = opt(0, "use at most this many documents (0 = all; Hub datasets are streamed)", min=0)
    builtin_stories: int = opt(10000, "stories to generate for --dataset builtin", min=1)
    val_fraction: float = opt(0.02, "share of documents held out for evaluation", above=0, below=0.5)
    tokenizer: str = opt("bpe", "'bpe' (train a byte-level BPE on the corpus) or a tokenizer id / folder", path=True)
    vocab_size: int = opt(8192, "vocabulary size when training a BPE", min=1)
    cache_dir: str = opt("", "where packed token files are cached (default ~/.cache/smolhub)", path=True)


# TrainConfig fields that belong to one invocation, not to the run: --resume never takes them from the checkpoint.
INVOCATION_FIELDS = ("out_dir", "resume", "overwrite", "allow_data_change")

MUON_FIELDS = ("muon_lr", "muon_momentum", "muon_weight_decay", "muon_adjust_lr")


def check_flags_act(tcfg: TrainConfig, dcfg: DataConfig, explicit: dict[str, dict[str, Any]]):
    """A flag given explicitly that nothing would read in this configuration is refused, never ignored."""
    given = {**explicit.get("train", {}), **explicit.get("data", {})}
    local = Path(dcfg.dataset).expanduser()
    dataset_kind = "builtin" if dcfg.dataset == "builtin" else "local" if local.exists() else "hub"
    needs = {  # flag: (what it needs, whether this run has it)
        **{n: ("--optimizer muon", tcfg.optimizer == "muon") for n in MUON_FIELDS},
        "wandb_project": ("--wandb", tcfg.wandb), "wandb_mode": ("--wandb", tcfg.wandb),
        "allow_data_change": ("--resume", tcfg.resume),
        "vocab_size": ("--tokenizer bpe (a tokenizer trained here)", dcfg.tokenizer == "bpe"),
        "builtin_stories": ("--dataset builtin", dataset_kind == "builtin"),
        "dataset_config": ("a Hugging Face dataset id as --dataset", dataset_kind == "hub"),
        "text_field": ("--dataset with .jsonl/.parquet files or a Hugging Face dataset id",
                       dataset_kind == "hub" or (dataset_kind == "local" and _has_records(local))),
    }
    for name, (need, present) in needs.items():
        if name in given and not present:
            raise UserError(f"{flag(name)} only acts with {need}; drop it or add that")
    if "muon_lr" in given and tcfg.muon_adjust_lr == "match_rms_adamw":
        raise UserError("--muon-lr is not used with --muon-adjust-lr match_rms_adamw (Muon's base rate is then "
                        "AdamW's --lr); drop one of them")
    if tcfg.resume and given.get("init_from"):
        raise UserError("--resume continues the run in --out-dir from its own weights; --init-from starts a new "
                        "one: give one of them")


def _has_records(path: Path) -> bool:
    suffixes = {".jsonl", ".json", ".parquet"}
    return path.suffix in suffixes or (path.is_dir() and any(p.suffix in suffixes for p in path.rglob("*")))


@dataclass
class ModelFamily:
    """Everything the shared tools need to know about one model folder. The model and its converter are named by
    module path and imported when asked for, so a folder's config.py never imports its model.py."""

    name: str
    model_config: type
    model: str                                 # "StoryLlama.model:StoryLlama": the nn.Module class
    train: TrainConfig
    data: DataConfig
    presets: dict[str, dict[str, dict[str, Any]]]
    converter: str = ""                        # "StoryLlama.convert": to_hf / from_hf / hf_config for transformers
    hf_architecture: str = ""                  # the transformers class `smolhub export` writes
    description: str = ""

    def model_class(self) -> type:
        return load_object(self.model)

    def converter_module(self) -> ModuleType:
        if not self.converter:
            raise UserError(f"no transformers export for model family '{self.name}'")
        return importlib.import_module(self.converter)

    def build(self, preset: str = "default", **model_overrides):
        mcfg, _, _ = self.resolve(preset)
        return mcfg.replace(**model_overrides)

    def resolve(self, preset: str, overrides: dict[str, dict[str, Any]] | None = None):
        """Defaults, then the preset, then explicit overrides: (model cfg, train cfg, data cfg)."""
        if preset not in self.presets and preset != "default":
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
# Derived, never a flag: the model's vocabulary comes from the tokenizer (`--vocab-size` sizes a BPE).
DERIVED_MODEL_FIELDS = {"vocab_size"}


RULE = ("--resume continues a run: architecture and data flags must equal the checkpoint's (a flag that "
        "differs is refused), training settings given now replace the saved ones. --init-from SOURCE takes "
        "the architecture from SOURCE (a differing architecture flag is refused) and every training setting "
        "from this run's flags.")


def add_fields(group, cls, defaults, only=None):
    """One flag per field of the dataclass `cls` (or of the names in `only`): `--field-name`, typed by the
    field, help from `opt(..., help)` with the value in `defaults`, `--x / --no-x` for booleans, `~` expanded
    for `path=True`. A flag not given is absent from the parsed namespace, so what was given is known.
    The trainers' flags and smol_experiments' stage flags are both made here."""
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        meta, default = dict(f.metadata), getattr(defaults, f.name)
        allowed = f"; {_range_text(meta['range'])}" if meta.get("range") else ""
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS,
                              "help": f"{meta.get('help', '')} (default: {default!r}{allowed})".replace("%", "%%")}
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        if f.type in ("bool", bool):
            group.add_argument(flag(f.name), action=argparse.BooleanOptionalAction, **kw)
        else:
            py_type = {"int": int, "float": float, "str": str}.get(f.type, type(default))
            if meta.get("path"):  # a path flag (path=True) reads ~ as the shell would, also where no shell ran
                py_type = os.path.expanduser
            group.add_argument(flag(f.name), type=py_type, metavar=f.name.upper(), **kw)


def build_parser(family: ModelFamily, prog: str | None = None) -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog, description=f"Train {family.name}. {family.description}", epilog=RULE,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default=None, choices=family.preset_names,
                   help="named configuration; flags below override it (default: default; on --resume: the run's)")
    cls, defaults = family.model_config, family.model_config()
    add_fields(p.add_argument_group("model architecture (must match on --resume; from SOURCE on --init-from)"),
                cls, defaults, set(architecture_fields(cls)) - DERIVED_MODEL_FIELDS)
    add_fields(p.add_argument_group("model training settings (may change on --resume)"), cls, defaults,
                training_settings(cls))
    add_fields(p.add_argument_group("training (may change on --resume)"), TrainConfig, family.train)
    add_fields(p.add_argument_group("data (must match on --resume)"), DataConfig, family.data)
    return p


def parse_cli(family: ModelFamily, argv=None, prog=None):
    """Parse flags into (model cfg, train cfg, data cfg, preset name, explicit overrides); the overrides hold
    "preset" too when --preset was given (--resume compares it with the run's)."""
    ns = vars(build_parser(family, prog).parse_args(argv))
    given_preset = ns.pop("preset")
    preset = given_preset or "default"
    sections = [("model", family.model_config, DERIVED_MODEL_FIELDS), ("train", TrainConfig, set()),
                ("data", DataConfig, set())]
    fields = {k: {f.name for f in dataclasses.fields(c)} - skip for k, c, skip in sections}
    overrides = {k: {n: v for n, v in ns.items() if n in names} for k, names in fields.items()}
    if given_preset:
        overrides["preset"] = given_preset
    return (*family.resolve(preset, overrides), preset, overrides)
