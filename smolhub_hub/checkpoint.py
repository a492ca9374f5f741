"""Checkpoints are directories, written atomically and read without pickle.

    run_dir/
      LATEST                 name of the newest complete checkpoint (replaced atomically)
      step_000400/
        model.safetensors    weights
        config.json          {"family", "model", "train", "data", "step", ...}: rebuilds the model alone
        tokenizer files
        training_state.safetensors + training_state.json   optimizer, scheduler, RNG, step (for --resume)

A checkpoint is written to a temporary folder and renamed into place, and LATEST is switched only
after that, so a kill during a save leaves the previous checkpoint as it was; a write that fails (a full
disk, no permission) removes its temporary folder and ends in one line. config.json records the
tokenizer's fingerprint, so weights are never used with another tokenizer. Nested training state
(optimizer state dicts) is split into tensors (safetensors) and a JSON skeleton: loading never
executes code.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from smolhub_hub.config import DataConfig, TrainConfig, check_ranges
from smolhub_hub.data.tokenizer import tokenizer_fingerprint
from smolhub_hub.errors import UserError

LATEST = "LATEST"
NATIVE_SUBFOLDER = "smolhub"  # where a repo pushed to the Hub keeps the SmolHub checkpoint (beside its export)
FORMAT = "smolhub-checkpoint-1"
TOKENIZER_KEY = "tokenizer_sha256"  # absent in checkpoints written before it was recorded
RUN_SECTIONS = {"train": TrainConfig, "data": DataConfig}


# --- nested state <-> (tensors, json) ------------------------------------------------------------
def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "t") -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}.{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError("state dict keys must be str or int")
        return {"__dict__": [[k, flatten_state(v, tensors, prefix)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__" if isinstance(obj, list) else "__tuple__": [flatten_state(v, tensors, prefix) for v in obj]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: unflatten_state(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [unflatten_state(v, tensors) for v in obj["__list__"]]
        if "__tuple__" in obj:
            return tuple(unflatten_state(v, tensors) for v in obj["__tuple__"])
        raise ValueError(f"unknown entry {sorted(obj)}")
    return obj


# --- writing ---------------------------------------------------------------------------------------
def _fsync_dir(path: Path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: str | Path, step: int, model, config: dict, tokenizer=None,
                    training_state: dict | None = None, keep_last: int = 2) -> Path:
    """Write step_<step>/ atomically, point LATEST at it, prune old ones. Returns the folder.

    Any failure removes the temporary folder; a full disk or a permission error is one UserError line.
    The previous checkpoint and LATEST stay as they were."""
    run_dir = Path(run_dir)
    name = f"step_{step:07d}"
    final, tmp = run_dir / name, run_dir / f".{name}.tmp"
    if tokenizer is not None:
        config = {**config, TOKENIZER_KEY: tokenizer_fingerprint(tokenizer)}
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _write_files(tmp, model, config, tokenizer, training_state)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        _fsync_dir(run_dir)
        latest_tmp = run_dir / f".{LATEST}.tmp"
        latest_tmp.write_text(name + "\n")
        os.replace(latest_tmp, run_dir / LATEST)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk gets its space back
        if isinstance(e, (OSError, SafetensorError)):  # safetensors reports a full disk as its own error type
            kept = "The previous checkpoint is intact." if (run_dir / LATEST).exists() else "No checkpoint was written."
            raise UserError(f"could not write a checkpoint to {run_dir} ({_reason(e)}); free disk space or fix "
                            f"permissions. {kept}") from None
        raise
    _prune(run_dir, keep_last, keep=name)
    return final


def _reason(e: Exception) -> str:
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return str(e).split(": ")[-1]  # "Error while serializing: I/O error: No space left on device (os error 28)"


def _write_files(tmp: Path, model, config: dict, tokenizer, training_state: dict | None):
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(_untie(state), tmp / "model.safetensors", metadata={"format": FORMAT})
    (tmp / "config.json").write_text(json.dumps({"format": FORMAT, **config}, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp)
    if training_state is not None:
        tensors: dict[str, torch.Tensor] = {}
        skeleton = flatten_state(training_state, tensors)
        save_file(tensors, tmp / "training_state.safetensors")
        (tmp / "training_state.json").write_text(json.dumps(skeleton))
    for f in tmp.iterdir():
        with open(f, "rb+") as fh:
            os.fsync(fh.fileno())


def _untie(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses shared storage: store a tied matrix once (the model re-ties it on load)."""
    seen: dict[int, str] = {}
    out = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        if ptr in seen and v.numel() > 0:
            continue
        seen[ptr] = k
        out[k] = v
    return out


def _prune(run_dir: Path, keep_last: int, keep: str):
    ckpts = sorted(p for p in run_dir.glob("step_*") if p.is_dir())
    for p in ckpts[:-max(keep_last, 1)]:
        if p.name != keep:
            shutil.rmtree(p, ignore_errors=True)


# --- reading ---------------------------------------------------------------------------------------
def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (its LATEST checkpoint)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"checkpoint '{path}' does not exist; pass a checkpoint folder or a run folder "
                        "(e.g. runs/StoryLlama-quick), or train one first")
    if (p / LATEST).exists():
        try:
            name = (p / LATEST).read_text().strip()
        except UnicodeDecodeError:
            name = ""
        if not name.startswith("step_") or Path(name).name != name:
            raise UserError(f"{p / LATEST} is corrupt; write the name of a checkpoint folder in it "
                            f"(one of: {', '.join(sorted(c.name for c in p.glob('step_*'))) or 'none here'})")
        p = p / name
    elif (p / NATIVE_SUBFOLDER / "config.json").exists():  # a repo pulled from the Hub
        p = p / NATIVE_SUBFOLDER
    if not (p / "config.json").exists() or not (p / "model.safetensors").exists():
        raise UserError(f"'{path}' is not a SmolHub checkpoint (no config.json + model.safetensors in it)")
    return p


def checkpoint_in(root: Path) -> Path:
    """The SmolHub checkpoint inside a downloaded repo: `smolhub/` in a pushed repo, else the root."""
    native = Path(root) / NATIVE_SUBFOLDER
    return native if (native / "config.json").exists() else Path(root)


def run_dir_of(ckpt: Path) -> Path | None:
    """The training run a checkpoint belongs to (where metrics.csv and loss_curve.png live), if any."""
    for d in (ckpt, ckpt.parent):
        if (d / "metrics.csv").exists():
            return d
    return None


def read_config(ckpt: Path, sections: tuple[str, ...] = ("model",)) -> dict:
    """config.json, with each of `sections` present (resuming needs "train" and "data" too)."""
    try:
        cfg = json.loads((ckpt / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{ckpt / 'config.json'} is corrupt ({e}); use an earlier checkpoint") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT or "family" not in cfg:
        raise UserError(f"{ckpt} was not written by SmolHub (unknown config format)")
    if isinstance(cfg.get("model"), dict):
        cfg = _moved_to_train(cfg)
    for name in sections:
        if not isinstance(cfg.get(name), dict):
            raise UserError(f"{ckpt / 'config.json'} is corrupt (no {name} section); use an earlier checkpoint")
        if name in RUN_SECTIONS:
            _check_fields(ckpt, RUN_SECTIONS[name].from_dict(cfg[name]))
    return cfg


def _moved_to_train(cfg: dict) -> dict:
    """Settings that moved from a family's model config to `TrainConfig` (StoryKimi's muon_* until 4d6f37b)
    are read from the old "model" section into the "train" one, so older checkpoints load and resume."""
    moved = {f.name for f in dataclasses.fields(TrainConfig)} & set(cfg["model"])
    if moved and isinstance(cfg.get("train"), dict):
        cfg["train"] = {**{k: cfg["model"][k] for k in moved}, **cfg["train"]}
    cfg["model"] = {k: v for k, v in cfg["model"].items() if k not in moved}
    return cfg


def model_config(ckpt: Path, cfg: dict, config_class):
    """The saved architecture as `config_class`; a value of the wrong type, or outside its field's declared
    range, means a damaged file."""
    try:
        mcfg = config_class.from_dict(cfg["model"])
    except UserError as e:  # sizes that do not fit together (a family's own checks)
        raise UserError(f"{ckpt / 'config.json'} is corrupt ({e}); use an earlier checkpoint") from None
    _check_fields(ckpt, mcfg)
    return mcfg


def _check_fields(ckpt: Path, config):
    for f in dataclasses.fields(config):
        value, want = getattr(config, f.name), type(f.default)
        if f.default is dataclasses.MISSING or value is None:
            continue
        wrong_type = isinstance(value, bool) != (want is bool) or not isinstance(
            value, (int, float) if want is float else want)
        if wrong_type:
            raise UserError(f"{ckpt / 'config.json'} is corrupt ({f.name} = {value!r}); use an earlier checkpoint")
    check_ranges(config, file=ckpt / "config.json")


def build_model(ckpt: Path, model_class, mcfg):
    """The model of a checkpoint's config; sizes that do not fit together mean a damaged config.json."""
    try:
        return model_class(mcfg)
    except (AssertionError, ValueError, ZeroDivisionError, RuntimeError) as e:
        raise UserError(f"{ckpt / 'config.json'} is corrupt (the model cannot be built: {type(e).__name__}: "
                        f"{str(e)[:120]}); use an earlier checkpoint") from None


def load_weights(ckpt: Path, model, strict: bool = True):
    try:
        state = load_file(ckpt / "model.safetensors")
    except Exception as e:  # truncated or corrupt file
        raise UserError(f"{ckpt / 'model.safetensors'} cannot be read ({e}); the file is truncated or corrupt. "
                        "Use an earlier checkpoint.") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # same names, other shapes
        raise UserError(f"{ckpt} does not fit this model ({str(e).splitlines()[-1].strip()[:200]}); "
                        "its weights do not match its config.json") from None
    tied = {k for k in missing if _is_tied_alias(model, k)}
    missing = [k for k in missing if k not in tied]
    if strict and (missing or unexpected):
        raise UserError(f"{ckpt} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                        "is it a checkpoint of another model or config?")


def _is_tied_alias(model, key: str) -> bool:
    params = dict(model.named_parameters(remove_duplicate=False))
    unique = dict(model.named_parameters())
    return key in params and key not in unique


def load_training_state(ckpt: Path) -> dict:
    st, js = ckpt / "training_state.safetensors", ckpt / "training_state.json"
    if not st.exists() or not js.exists():
        raise UserError(f"{ckpt} has no training state to resume from (it may be an exported or pruned "
                        "checkpoint); start a new run instead of --resume")
    try:
        return unflatten_state(json.loads(js.read_text()), load_file(st))
    except Exception as e:
        raise UserError(f"the training state in {ckpt} is corrupt ({type(e).__name__}); "
                        "resume from an earlier checkpoint") from None
