"""The training loop every model folder uses.

DDP through torchrun, gradient accumulation to a token budget (all-reduce on the last micro-step
only), bf16 autocast on GPU (fp16 + GradScaler where bf16 is missing), clipping with the norm
logged, warmup + cosine, optional sequence-length warmup, activation checkpointing and torch.compile,
evaluation over many held-out batches, samples, CSV / wandb / plots, atomic checkpoints, exact
resume, non-finite steps skipped, and a clean stop on SIGTERM, SIGINT (Ctrl-C) or SIGHUP. Everything that
can be checked is checked before the first step, and one trainer at a time owns a run folder.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub.config import (
    DERIVED_MODEL_FIELDS,
    INVOCATION_FIELDS,
    DataConfig,
    ModelFamily,
    TrainConfig,
    architecture_fields,
    check_flags_act,
    check_ranges,
    describe,
    differences,
    flag,
    training_settings,
)
from smolhub_hub.data.packed import PackedData, cached_data, prepare_data, window_starts, windows_to_batch
from smolhub_hub.data.tokenizer import check_fingerprint, load_tokenizer, tokenizer_fingerprint
from smolhub_hub.errors import UserError
from smolhub_hub.losses import resolve_chunk_size
from smolhub_hub.training import distributed
from smolhub_hub.training.cpu_bf16 import native_bf16_features
from smolhub_hub.training.metrics import RUN_FILES, MetricsLog, plot_run
from smolhub_hub.training.optim import build_optimizers
from smolhub_hub.training.precision import amp_dtype, autocast
from smolhub_hub.training.schedule import SEQ_LEN_WARMUP_START, lr_factor, scale_lr, seq_len_at

EVAL_SEED = 987_654_321
LOCK_FILE = ".smolhub-run.lock"
# Each saves a checkpoint at the next step boundary and exits 0: kill, Ctrl-C, a closed terminal.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class RunState:
    step: int = 0
    tokens: int = 0
    bad_steps: int = 0
    skipped_steps: int = 0
    last_val_loss: float = float("nan")
    history: dict = field(default_factory=dict)


def round_vocab(n: int, multiple: int = 64) -> int:
    """Pad the embedding to a multiple of 64 (faster matmuls); extra rows are never produced by data."""
    return multiple * math.ceil(n / multiple)


class Trainer:
    """`explicit` holds the flags given on the command line ({"model": {...}, "train": ..., "data": ...}):
    a flag that would do nothing, or an architecture flag that contradicts --init-from's source, is refused."""

    def __init__(self, family: ModelFamily, mcfg, tcfg: TrainConfig, dcfg: DataConfig, preset: str = "default",
                 explicit: dict | None = None):
        self.explicit = {"model": {}, "train": {}, "data": {}, **(explicit or {})}
        self.init_source = _locate_init_source(tcfg.init_from) if tcfg.init_from and not tcfg.resume else None
        if self.init_source and self.init_source.has_tokenizer() and "tokenizer" not in self.explicit["data"]:
            # the source's own tokenizer: no BPE is trained
            dcfg = dcfg.replace(tokenizer=str(self.init_source.path))
        self.family, self.tcfg, self.dcfg = family, tcfg, dcfg
        _check_flag_values(mcfg, tcfg, dcfg)
        check_flags_act(tcfg, dcfg, self.explicit)
        self.dist = distributed.setup(tcfg.device)
        self.device = self.dist.device
        self.run_dir, self.preset = run_dir_of(family, tcfg, preset), preset
        self.state = RunState()
        self._stop_signal = None
        self._saved_step = -1
        self.resume_from = resume_from = self._check_run_dir()
        self.saved = self._check_resume(mcfg) if resume_from else None  # the checkpoint's config.json
        self.wandb_id = self.saved.get("wandb_run_id") if self.saved else None
        self.data: PackedData = self._prepare_data()
        self.tokenizer = self.data.tokenizer
        self.requested_mcfg = mcfg  # with --init-from, its training settings still apply (_init_from_hf)
        self.mcfg = self._model_config(mcfg, resume_from)
        self.seq_len = self._check_seq_len()
        torch.manual_seed(tcfg.seed)  # identical initial weights on every rank
        self.raw_model = self._build_model().to(self.device)
        self.raw_model.gradient_checkpointing = tcfg.grad_checkpointing
        self.raw_model.loss_chunk_size = resolve_chunk_size(tcfg.loss_chunk_size, tcfg.batch_size * self.seq_len,
                                                            self.mcfg.vocab_size)
        self.optimizers = build_optimizers(self.raw_model, tcfg, self.device)
        self.accum = self._grad_accum_steps()
        self.amp_dtype, self.scaler = self._precision()
        self.model = self._wrap(self.raw_model)
        self._check_before_first_step()
        torch.manual_seed(tcfg.seed + self.dist.rank)  # dropout / router noise differ per rank
        if resume_from is not None:
            self._load(resume_from)
        elif tcfg.overwrite:
            self._clear_previous_run()  # only now that every check has passed
        self.metrics = None  # rank 0 alone writes metrics.csv: another rank would rewrite it under rank 0's rows
        if self.dist.is_main:
            self.metrics = MetricsLog(self.run_dir, self.state.step if resume_from else None, self._wandb())

    # --- setup ---------------------------------------------------------------------------------------
    def _check_run_dir(self) -> Path | None:
        has_ckpt = (self.run_dir / ckpt_io.LATEST).exists()
        if has_ckpt and _restarted_by_torchrun():
            return ckpt_io.resolve_checkpoint(self.run_dir)  # same flags as the failed attempt: continue it
        if self.tcfg.resume:
            if not has_ckpt:
                raise UserError(f"--resume: no checkpoint in {self.run_dir}; drop --resume to start a new run, "
                                "or point --out-dir at the run to continue")
            return ckpt_io.resolve_checkpoint(self.run_dir)
        checkpoints = sorted(p.name for p in self.run_dir.glob("step_*") if p.is_dir())
        if (has_ckpt or checkpoints) and not self.tcfg.overwrite:  # with LATEST lost, the folders still count
            raise UserError(f"{self.run_dir} already holds a checkpoint ({', '.join(checkpoints) or ckpt_io.LATEST}); "
                            "pass --resume to continue it, --out-dir to start elsewhere, or --overwrite to replace it")
        return None

    def _check_resume(self, mcfg) -> dict:
        """What the network computes and the data it learns from must be the checkpoint's: a flag that
        differs is refused, naming each one. Training settings may change (reported in `_load`)."""
        saved = ckpt_io.read_config(self.resume_from, sections=("model", "train", "data"))
        if saved["family"] != self.family.name:
            raise UserError(f"{self.resume_from} is a {saved['family']} checkpoint, not {self.family.name}; "
                            f"resume it with {saved['family']}/trainer.py")
        self.preset = saved.get("preset", self.preset)  # absent in checkpoints written before it was recorded
        if self.explicit.get("preset", self.preset) != self.preset:
            raise UserError(f"--resume: --preset {self.explicit['preset']} differs from the run's preset "
                            f"{self.preset}; drop --preset (the run continues with its own settings)")
        arch = [n for n in architecture_fields(self.family.model_config) if n not in DERIVED_MODEL_FIELDS]
        diffs = differences(self._saved_model_config(saved), mcfg, arch)
        diffs |= differences(DataConfig.from_dict(saved["data"]), self.dcfg,
                             [n for n in DataConfig.__dataclass_fields__ if n != "cache_dir"])
        if diffs:
            raise UserError(f"--resume: {describe(diffs, 'checkpoint', 'given')}. The architecture and data of a run "
                            "cannot change: drop these flags, or start a new run in another --out-dir")
        return saved

    def _saved_model_config(self, saved: dict):
        return ckpt_io.model_config(self.resume_from, saved, self.family.model_config)

    def _prepare_data(self) -> PackedData:
        """On --resume: the run's own tokenizer, and the data it started with (checked by fingerprint)."""
        rank, barrier = self.dist.rank, self.dist.barrier
        if self.saved is None:
            return prepare_data(self.dcfg, rank, barrier)
        want, tokenizer = self.saved.get("data_fingerprint"), load_tokenizer(str(self.resume_from))
        data = cached_data(self.dcfg)  # the cache the run started with, if it is still there
        if data is None or (want and data.meta.get("fingerprint") != want):
            data = prepare_data(self.dcfg, rank, barrier, tokenizer=tokenizer)
        now = data.meta.get("fingerprint")
        if want and now != want:
            if not self.tcfg.allow_data_change:
                raise UserError(f"--resume: the dataset changed since this run started (fingerprint {want} -> {now}, "
                                f"now {data.meta['train_documents']:,} training documents); resume on the data "
                                "it started with, or pass --allow-data-change to continue on the new data")
            if self.dist.is_main:
                print(f"note: the dataset changed since this run started (fingerprint {want} -> {now}); "
                      "continuing on the new data (--allow-data-change)")
        data.tokenizer = tokenizer
        return data

    def _check_before_first_step(self):
        """What would otherwise fail at the first evaluation or sample, after steps that no checkpoint holds."""
        for split, tokens in (("training", self.data.train), ("held-out", self.data.val)):
            if len(tokens) <= self.seq_len + 1:
                more = "raise --val-fraction, " if split == "held-out" else ""
                raise UserError(f"the {split} split has {len(tokens):,} tokens, fewer than one window of "
                                f"{self.seq_len + 1} (--seq-len {self.seq_len} + 1); use more data, {more}"
                                "or lower --seq-len")
        n = self._prompt_ids().shape[1]  # the run ends with a sample, whatever --sample-interval says
        if n == 0:
            raise UserError("--sample-prompt is empty; give a few words for the samples to continue")
        if n >= self.mcfg.max_seq_len:
            raise UserError(f"--sample-prompt is {n} tokens, and the model's context is {self.mcfg.max_seq_len}: "
                            "no room to sample; shorten it")

    def _clear_previous_run(self):
        """--overwrite: the old run's checkpoints (complete or half-written), metrics and plots go, so none of
        them is mistaken for this run's. Other files in the folder (the user's own, wandb's) stay."""
        if self.dist.is_main:
            for path in [*self.run_dir.glob("step_*"), *self.run_dir.glob(".step_*.tmp")]:
                shutil.rmtree(path, ignore_errors=True)
            for name in (ckpt_io.LATEST, *RUN_FILES):
                (self.run_dir / name).unlink(missing_ok=True)
        self.dist.barrier()

    def _model_config(self, mcfg, resume_from: Path | None):
        if resume_from is not None:  # the checkpoint's architecture, this run's training settings
            training = {n: getattr(mcfg, n) for n in training_settings(self.family.model_config)}
            return self._saved_model_config(self.saved).replace(**training)
        if self.tcfg.init_from:
            return None  # the architecture comes from the Hugging Face checkpoint, in _build_model
        return mcfg.replace(vocab_size=round_vocab(self.data.meta["vocab_size"]))

    def _check_seq_len(self) -> int:
        if self.mcfg is None:
            return self.tcfg.seq_len
        limit = self.mcfg.max_seq_len
        seq = self.tcfg.seq_len or limit
        if seq > limit:
            raise UserError(f"--seq-len {seq} is longer than the model's context (--max-seq-len {limit}); "
                            f"lower --seq-len or raise --max-seq-len")
        if self.tcfg.seq_len_warmup and seq <= SEQ_LEN_WARMUP_START:
            raise UserError(f"--seq-len-warmup grows the sequence length from {SEQ_LEN_WARMUP_START}, and this run's "
                            f"is already {seq}; drop --seq-len-warmup or train longer sequences")
        return seq

    def _build_model(self):
        if self.tcfg.init_from and self.resume_from is None:
            model = self._init_from_hf()
            self.mcfg = model.config
            self.seq_len = self._check_seq_len()
        else:
            try:
                model = self.family.model_class()(self.mcfg)
            except (AssertionError, ValueError, ZeroDivisionError, RuntimeError) as e:  # e.g. heads not dividing dim
                raise UserError(f"{self.family.name} cannot be built with these settings ({type(e).__name__}: "
                                f"{str(e)[:160] or 'inconsistent sizes'}); check --dim, --n-heads and related "
                                "flags") from None
        if self.data.meta["vocab_size"] > self.mcfg.vocab_size:
            raise UserError(f"the tokenizer has {self.data.meta['vocab_size']} ids but the model embeds only "
                            f"{self.mcfg.vocab_size}; use the tokenizer the model was trained with (--tokenizer)")
        return model

    def _init_from_hf(self):
        from smolhub_hub.importer import import_model

        where = f"--init-from {self.tcfg.init_from}"
        given_tokenizer = "tokenizer" in self.explicit["data"]  # else the data was tokenized with the source's own
        model = import_model(self.init_source, self.family.name, tokenizer=given_tokenizer)
        if model.tokenizer is not None:
            check_fingerprint(self.tokenizer, tokenizer_fingerprint(model.tokenizer), where,
                              f"drop --tokenizer to train with its own (or pass --tokenizer {self.tcfg.init_from})")
        cls, source = self.family.model_config, model.config
        given = {n: v for n, v in self.explicit["model"].items() if n in architecture_fields(cls)}
        clash = {n: (getattr(source, n), v) for n, v in given.items() if getattr(source, n) != v}
        if clash:
            raise UserError(f"{where}: {describe(clash, 'source', 'given')}. The "
                            "architecture comes from the source: drop these flags")
        # Training settings (dropout, kernels, loss coefficients, ...) come from this run's flags and defaults.
        wanted = source.replace(**{n: getattr(self.requested_mcfg, n) for n in training_settings(cls)})
        if wanted != source:
            rebuilt = self.family.model_class()(wanted)
            # strict=False: a parameter that only training uses (Mixtral's router noise) comes and goes with
            # its setting, starting from the model's own initialisation.
            rebuilt.load_state_dict(model.state_dict(), strict=False)
            model = rebuilt
        return model.train()

    def _grad_accum_steps(self) -> int:
        per_micro = self.tcfg.batch_size * self.seq_len * self.dist.world_size
        if not self.tcfg.total_batch_tokens:
            return 1
        accum = max(1, round(self.tcfg.total_batch_tokens / per_micro))
        if accum * per_micro != self.tcfg.total_batch_tokens and self.dist.is_main:
            print(f"note: {self.tcfg.total_batch_tokens} tokens per step is not a multiple of "
                  f"{per_micro}; using {accum * per_micro} ({accum} micro-steps)")
        return accum

    def _precision(self):
        dtype, cuda = amp_dtype(self.tcfg.dtype, self.device), self.device.startswith("cuda")
        if dtype is torch.float16 and not cuda and self.dist.is_main:
            print("note: --dtype float16 on a CPU exercises the loss-scaled fp16 path of GPUs without bf16; "
                  "bfloat16 or float32 suit a CPU better")
        scaler = torch.amp.GradScaler(self.device.split(":")[0]) if dtype is torch.float16 else None
        return dtype, scaler

    def _precision_name(self) -> str:
        name = "fp32" if self.amp_dtype is None else f"{str(self.amp_dtype).removeprefix('torch.')} autocast"
        if self.tcfg.dtype == "auto" and not self.device.startswith("cuda"):
            native = ", ".join(native_bf16_features()) or "no native bf16 multiply"
            name += f" (--dtype auto on this CPU: {native}; --dtype float32 or bfloat16 to choose)"
        return name

    def _wrap(self, model):
        use_compile = self.tcfg.compile == "on" or (self.tcfg.compile == "auto" and self.device.startswith("cuda"))
        if use_compile:
            model = torch.compile(model)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[self.dist.local_rank] if self.device.startswith("cuda") else None)
        return model

    def _wandb(self):
        if not (self.tcfg.wandb and self.dist.is_main):
            return None
        from smolhub_hub.extras import require

        wandb = require("wandb", "--wandb")
        kw = dict(project=self.tcfg.wandb_project, name=self.run_dir.name, config=self._config_dict(),
                  id=self.wandb_id, resume="allow")  # --resume continues the same wandb run
        if self.tcfg.wandb_mode != "env":  # else wandb's own WANDB_MODE (or its default) decides
            kw["mode"] = self.tcfg.wandb_mode
        if "WANDB_DIR" not in os.environ:
            kw["dir"] = str(self.run_dir)
        try:
            run = wandb.init(**kw)
        except Exception as e:  # wandb raises its own types for a missing login or network
            raise UserError(f"wandb could not start ({type(e).__name__}: {str(e)[:160]}); log in with `wandb login`, "
                            "or run offline with WANDB_MODE=offline or --wandb-mode offline") from None
        self.wandb_id = run.id
        return run

    # --- checkpoints ---------------------------------------------------------------------------------
    def _config_dict(self) -> dict:
        return {"family": self.family.name, "preset": self.preset, "model": self.mcfg.to_dict(),
                "train": self.tcfg.to_dict(), "data": self.dcfg.to_dict(),
                "data_fingerprint": self.data.meta.get("fingerprint"), "wandb_run_id": self.wandb_id,
                "step": self.state.step, "tokens_seen": self.state.tokens, "val_loss": self.state.last_val_loss,
                "param_counts": self.raw_model.param_counts()}

    def save(self):
        if self.state.step == self._saved_step:
            return  # already on disk; rewriting it would replace the folder LATEST points at
        rng = self._rng_states()  # every rank takes part
        if self.dist.is_main:
            training_state = {
                "step": self.state.step, "tokens": self.state.tokens, "skipped_steps": self.state.skipped_steps,
                "optimizers": [o.state_dict() for o in self.optimizers],
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "rng": rng,
            }
            # A failed write (full disk, no permission) is already one UserError line, its folder removed.
            ckpt_io.save_checkpoint(self.run_dir, self.state.step, self.raw_model, self._config_dict(),
                                    self.tokenizer, training_state, self.tcfg.keep_last)
        self._saved_step = self.state.step
        self.dist.barrier()

    def _rng_states(self) -> list[dict]:
        """Every rank's CPU and CUDA generator states (dropout, router noise), indexed by rank."""
        mine = {"cpu": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if self.device.startswith("cuda") else None}
        if not self.dist.enabled:
            return [mine]
        states = [None] * self.dist.world_size
        torch.distributed.all_gather_object(states, mine)
        return states

    def _load(self, path: Path):
        changed = self._changed_training_settings()
        self._check_same_parameters(changed)
        ckpt_io.load_weights(path, self.raw_model)
        check_fingerprint(self.tokenizer, ckpt_io.read_config(path).get(ckpt_io.TOKENIZER_KEY), str(path),
                          "resume with the dataset and --tokenizer the run started with")
        try:
            self._load_training_state(path)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:  # parsed, but not this run's state
            raise UserError(f"the training state in {path} is corrupt or from another run ({type(e).__name__}: "
                            f"{str(e)[:120]}); resume from an earlier checkpoint") from None
        if self.dist.is_main:
            print(f"resumed {path} at step {self.state.step}")
            for name, (old, new) in changed.items():
                print(f"resume: {flag(name)} {old!r} -> {new!r}")

    def _changed_training_settings(self) -> dict[str, tuple]:
        saved_train = TrainConfig.from_dict(self.saved["train"])
        changed = differences(saved_train, self.tcfg, [n for n in TrainConfig.__dataclass_fields__
                                                       if n not in INVOCATION_FIELDS])
        return changed | differences(self._saved_model_config(self.saved), self.mcfg,
                                     training_settings(self.family.model_config))

    def _check_same_parameters(self, changed: dict):
        """A training setting that adds or removes parameters (Mixtral's router noise) cannot change on resume:
        the checkpoint has no weights or optimizer state for them."""
        model_changes = [n for n in changed if n in training_settings(self.family.model_config)]
        if not model_changes:
            return
        with torch.device("meta"):
            saved_model = self.family.model_class()(self._saved_model_config(self.saved))
        if {n for n, _ in saved_model.named_parameters()} != {n for n, _ in self.raw_model.named_parameters()}:
            raise UserError(f"--resume: {', '.join(flag(n) for n in model_changes)} would add or remove parameters "
                            "the checkpoint trained; resume with the checkpoint's value, or start a new run")

    def _load_training_state(self, path: Path):
        """--resume restores everything the next step depends on, so that a resumed run takes the steps the
        uninterrupted one would: the weights (loaded before), each optimizer's moments, the fp16 loss scale, the
        step and token counters (they place the LR schedule and the data windows) and every rank's RNG state."""
        st = ckpt_io.load_training_state(path)
        if len(st["optimizers"]) != len(self.optimizers):
            raise UserError(f"{path} was trained with {len(st['optimizers'])} optimizer(s), this run builds "
                            f"{len(self.optimizers)}; resume with the same --optimizer")
        for opt, sd in zip(self.optimizers, st["optimizers"], strict=False):
            settings = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            opt.load_state_dict(sd)
            for group, mine in zip(opt.param_groups, settings, strict=False):
                group.update(mine)  # this run's lr, weight decay, betas...: only the state comes from the checkpoint
        if self.scaler and st.get("scaler"):
            self.scaler.load_state_dict(st["scaler"])
        self.state.step, self.state.tokens = st["step"], st["tokens"]
        self.state.skipped_steps = st.get("skipped_steps", 0)
        self._saved_step = self.state.step
        self._restore_rng(st)

    def _restore_rng(self, st: dict):
        states = st.get("rng") or [{"cpu": st["rng_cpu"], "cuda": st.get("rng_cuda")}]  # before: rank 0's only
        rank = self.dist.rank
        if rank >= len(states):  # more processes than the run had: a fresh stream for the new ranks
            torch.manual_seed(self.tcfg.seed + rank + 7919 * self.state.step)
            return
        torch.set_rng_state(states[rank]["cpu"])
        if states[rank].get("cuda") is not None and self.device.startswith("cuda"):
            torch.cuda.set_rng_state(states[rank]["cuda"])

    # --- the loop ------------------------------------------------------------------------------------
    def _set_lr(self, step: int) -> float:
        f = lr_factor(step, self.tcfg.warmup_steps, self.tcfg.max_steps, self.tcfg.min_lr / self.tcfg.lr,
                      self.tcfg.lr_restarts)
        scale_lr(self.optimizers, f)  # each group scales its own base lr
        return self.tcfg.lr * f

    def _micro_batches(self, step: int, seq: int):
        """This rank's share of the step's windows: the same draw on every rank, each taking its own slices."""
        b, world = self.tcfg.batch_size, self.dist.world_size
        starts = window_starts(len(self.data.train), seq, b * self.accum * world, self.tcfg.seed, step)
        for m in range(self.accum):
            lo = (m * world + self.dist.rank) * b
            yield m, windows_to_batch(self.data.train, starts[lo:lo + b], seq, self.device)

    def _autocast(self):
        return autocast(self.device, self.amp_dtype)

    def train_step(self, step: int) -> dict:
        """One optimizer step over `self.accum` micro-batches on every rank, or none if it is not finite."""
        seq = seq_len_at(step, self.seq_len, self.tcfg.seq_len_warmup)
        lm_sum = torch.zeros((), device=self.device)
        aux_sum = torch.zeros((), device=self.device)
        has_aux = False
        for m, (x, y) in self._micro_batches(step, seq):
            last = m == self.accum - 1
            # DDP all-reduces the gradients in every backward; no_sync skips that on all micro-batches but the
            # last, whose backward then averages the accumulated sum across processes: one all-reduce per step.
            sync = contextlib.nullcontext() if (last or not self.dist.enabled) else self.model.no_sync()
            with sync:
                with self._autocast():
                    out = self.model(x, y)
                # Gradients add up over the micro-batches: dividing each loss by their number makes the sum the
                # gradient of the mean loss over the whole batch, as if it had been one big micro-batch.
                loss = out.loss / self.accum
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            lm_sum += out.lm_loss.detach()  # stays on the device: no sync per micro-step
            if out.aux_loss is not None:
                aux_sum += out.aux_loss.detach()
                has_aux = True
        # The order matters: unscale the fp16 gradients first (clipping scaled ones would clip at the wrong norm),
        # then clip, then step, then let the scaler adapt its scale to whether this step overflowed.
        if self.scaler:
            for opt in self.optimizers:
                self.scaler.unscale_(opt)
        clip = self.tcfg.grad_clip if self.tcfg.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip)
        # The one host sync per step (bool() waits for the GPU): whether to apply this update must be known
        # before it is applied. A non-finite loss or gradient (one inf in any gradient makes the norm inf)
        # skips the update instead of poisoning the weights, on every rank together (each rank's loss is its
        # own; a rank that stepped alone would leave the replicas apart). Everything else stays on the device
        # until a logged step reads it.
        finite = self.dist.all_true(torch.isfinite(norm) & torch.isfinite(lm_sum))
        if finite:
            for opt in self.optimizers:
                (self.scaler.step(opt) if self.scaler else opt.step())
            self.raw_model.on_optimizer_step()
        else:
            self.raw_model.on_step_skipped()
        if self.scaler:
            self.scaler.update()  # on skipped steps too: an overflow halves the scale, that is how fp16 backs off
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)  # the next backward writes .grad instead of adding to it
        return {"finite": finite, "loss": lm_sum / self.accum, "aux": aux_sum / self.accum, "norm": norm,
                "seq": seq, "has_aux": has_aux}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        model = self.raw_model
        model.eval()
        b, world = self.tcfg.batch_size, self.dist.world_size
        n = self.tcfg.eval_batches * b
        starts = window_starts(len(self.data.val), self.seq_len, n, EVAL_SEED, 0)
        mine = starts[self.dist.rank::world]
        total = torch.zeros((), device=self.device)
        stats: dict[str, float] = {}
        batches = 0
        model.routing_stats()  # drop routing counted in training since the last log
        for i in range(0, len(mine), b):
            x, y = windows_to_batch(self.data.val, mine[i:i + b], self.seq_len, self.device)
            with self._autocast():
                out = model(x, y)
            total += out.lm_loss.float()
            batches += 1
            for k, v in model.routing_stats().items():
                stats[k] = stats.get(k, 0.0) + v
        model.train()
        loss = self.dist.mean(total / max(batches, 1)).item()
        result = {"val/loss": loss, "val/ppl": math.exp(min(loss, 30))}
        result.update({f"val/{k}": v / max(batches, 1) for k, v in stats.items()})
        return result

    def _prompt_ids(self) -> torch.Tensor:
        return self.tokenizer(self.tcfg.sample_prompt, return_tensors="pt")["input_ids"]

    def sample(self, max_new_tokens: int = 80) -> str:
        from smolhub_hub.generation import SamplingConfig, generate

        ids = self._prompt_ids().to(self.device)
        limit = self.mcfg.max_seq_len - ids.shape[1]
        cfg = SamplingConfig(max_new_tokens=max(1, min(max_new_tokens, limit)), temperature=0.8, top_k=50)
        g = torch.Generator(device=self.device).manual_seed(self.tcfg.seed)
        out = generate(self.raw_model, ids, cfg, eos_id=self.tokenizer.eos_token_id, generator=g)
        return self.tokenizer.decode(out[0], skip_special_tokens=True)

    def _on_signal(self, signum, frame):
        # Only noted here: the loop checks at the next step boundary, where the weights, optimizer and data
        # position agree, and saves there. Stopping mid-step would save half an update.
        self._stop_signal = signum

    def _stop_requested(self) -> bool:
        """Ranks see a signal at different steps (torchrun forwards it to each process, which may be anywhere in
        its step); save() gathers every rank's RNG and ends in a barrier, so all must stop at the same step: the
        flags are max-reduced, and if any rank was signalled, every rank stops and saves now."""
        if not self.dist.enabled:
            return self._stop_signal is not None
        stop = torch.tensor(float(self._stop_signal or 0), device=self.device)
        torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
        self._stop_signal = int(stop.item()) or None
        return self._stop_signal is not None

    def _catch_stop_signals(self) -> dict:
        """A signal that the launcher set to be ignored stays ignored (nohup ignores SIGHUP, a shell's background
        job SIGINT). Returns the handlers to put back."""
        if not _in_main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS
                if signal.getsignal(sig) is not signal.SIG_IGN}

    def fit(self) -> dict:
        t = self.tcfg
        is_main = self.dist.is_main
        old_handlers = self._catch_stop_signals()
        if is_main:
            pc = self.raw_model.param_counts()
            print(f"{self.family.name}: {pc['total'] / 1e6:.2f}M parameters ({pc['active'] / 1e6:.2f}M active), "
                  f"{self.data.meta['train_tokens']:,} training tokens, {self.accum} micro-step(s) x "
                  f"{t.batch_size} x {self.seq_len} tokens x {self.dist.world_size} process(es), device {self.device}, "
                  f"{self._precision_name()}")
        bar = _progress(t.max_steps, self.state.step, disable=not is_main)
        if t.init_from and self.state.step == 0:  # the source's own held-out loss: what fine-tuning starts from
            self._evaluate_and_log(bar)
        tokens_at_log, time_at_log = self.state.tokens, time.perf_counter()
        try:
            while self.state.step < t.max_steps:
                if self._stop_requested():
                    if is_main:
                        print(f"\nreceived signal {self._stop_signal} ({signal.Signals(self._stop_signal).name}): "
                              f"saving a checkpoint at step {self.state.step}")
                    self.save()
                    return self._summary(stopped=True)
                step = self.state.step
                lr = self._set_lr(step)
                out = self.train_step(step)
                if not out["finite"]:
                    self._on_bad_step(step)
                    continue
                self.state.bad_steps = 0
                self.state.step += 1
                self.state.tokens += t.batch_size * out["seq"] * self.accum * self.dist.world_size
                bar.update(1)
                done = self.state.step == t.max_steps
                if self.state.step % t.log_interval == 0 or done:  # .item() waits for the device: logged steps only
                    now = time.perf_counter()
                    tps = (self.state.tokens - tokens_at_log) / max(now - time_at_log, 1e-9)
                    tokens_at_log, time_at_log = self.state.tokens, now
                    loss = self.dist.mean(out["loss"].clone()).item()
                    row = {"train/loss": loss, "train/lr": lr, "train/grad_norm": out["norm"].item(),
                           "train/tokens_per_s": tps, "train/seq_len": out["seq"]}
                    if out["has_aux"]:
                        row["train/aux_loss"] = self.dist.mean(out["aux"].clone()).item()
                    row.update({f"train/{k}": v for k, v in self.raw_model.routing_stats().items()})
                    if is_main:
                        self.metrics.log(self.state.step, self.state.tokens, row)
                        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tps:,.0f}")
                if self.state.step % t.eval_interval == 0 or done:
                    self._evaluate_and_log(bar)
                if t.sample_interval and self.state.step % t.sample_interval == 0 and not done and is_main:
                    bar.write(f"sample: {self.sample()}")
                if self.state.step % t.save_interval == 0 or done:
                    self.save()
        finally:
            bar.close()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        return self._summary(stopped=False)

    def _evaluate_and_log(self, bar):
        ev = self.evaluate()
        self.state.last_val_loss = ev["val/loss"]
        if self.dist.is_main:
            self.metrics.log(self.state.step, self.state.tokens, ev)
            bar.write(f"step {self.state.step}: held-out loss {ev['val/loss']:.4f}")

    def _on_bad_step(self, step: int):
        self.state.bad_steps += 1
        self.state.skipped_steps += 1
        if self.dist.is_main:
            print(f"\nwarning: non-finite loss or gradient at step {step}; update skipped "
                  f"({self.state.bad_steps} in a row)")
        if self.state.bad_steps >= self.tcfg.max_bad_steps:
            if self._state_is_finite():  # nothing was applied since the last good step, unless a hook broke it
                self.save()
                kept = f"the last good state is saved in {self.run_dir}"
            else:
                kept = f"the weights or optimizer state are not finite, so they were not saved; {self.run_dir} " \
                       "keeps its earlier checkpoints"
            raise UserError(f"{self.state.bad_steps} non-finite steps in a row at step {step}: training stopped; "
                            f"{kept}. Lower --lr or check the data, then --resume")

    def _state_is_finite(self) -> bool:
        """Weights, buffers and optimizer state, all finite: only such a state may be saved as the last good one."""
        tensors = list(self.raw_model.state_dict().values())
        for opt in self.optimizers:
            tensors += [t for state in opt.state.values() for t in state.values() if torch.is_tensor(t)]
        return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())

    def _summary(self, stopped: bool) -> dict:
        summary = {"out_dir": str(self.run_dir), "step": self.state.step, "tokens": self.state.tokens,
                   "val_loss": self.state.last_val_loss, "stopped": stopped,
                   "skipped_steps": self.state.skipped_steps}
        if self.dist.is_main and not stopped:
            plot_run(self.run_dir)
            summary["sample"] = self.sample(120)
        return summary


def _locate_init_source(init_from: str):
    from smolhub_hub.importer import locate

    try:
        return locate(init_from)
    except UserError as e:
        raise UserError(f"--init-from: {e}") from None


def _check_flag_values(mcfg, tcfg: TrainConfig, dcfg: DataConfig):
    """Values argparse accepts but no run can use: one clear line instead of a crash deep inside."""
    for config in (mcfg, tcfg, dcfg):
        check_ranges(config)
    if tcfg.resume and tcfg.overwrite:
        raise UserError("--resume continues the run in --out-dir and --overwrite replaces it; give one of them")


def run_dir_of(family: ModelFamily, tcfg: TrainConfig, preset: str) -> Path:
    return Path(tcfg.out_dir or f"runs/{family.name}-{preset}").expanduser()


@contextlib.contextmanager
def _owning(run_dir: Path):
    """One trainer per run folder: an exclusive flock on a file in it for the whole run, so that a second trainer
    is refused instead of interleaving metrics and replacing checkpoints. The kernel drops the lock when the
    process ends, however it ends (SIGKILL included): a dead run never blocks the folder."""
    import fcntl

    _make_writable_folder(run_dir)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            raise UserError(f"{run_dir} is in use by another trainer (pid {holder}); wait for it to finish, or "
                            "give this run another --out-dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _make_writable_folder(run_dir: Path):
    """--out-dir must be a folder this process can write (created if missing): found now, not at the first save."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out-dir {run_dir} is a file; give a folder (it is created if missing)")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as e:
        raise UserError(f"--out-dir {run_dir} is not writable ({e.strerror or e}); give a folder you can write "
                        "to") from None


def _restarted_by_torchrun() -> bool:
    """torchrun --max-restarts relaunches every rank with the original flags after a failure."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _progress(total: int, initial: int, disable: bool):
    """A bar on a terminal, plain periodic lines in a log file."""
    from smolhub_hub.training.metrics import progress_bar

    return progress_bar(total, initial, disable)


def train(family: ModelFamily, mcfg, tcfg: TrainConfig, dcfg: DataConfig, preset: str = "default",
          explicit: dict | None = None) -> dict:
    """One run. Under torchrun every rank runs this; they are one run, so only global rank 0 takes the run
    folder's lock (a second trainer, not a second rank, is refused) and only it writes metrics and checkpoints,
    while the others join the collective calls (evaluation means, the stop decision, the RNG gather in save)."""
    is_first_process = distributed.global_rank() == 0  # torchrun's rank 0 owns the folder for all ranks
    with _owning(run_dir_of(family, tcfg, preset)) if is_first_process else contextlib.nullcontext():
        trainer = Trainer(family, mcfg, tcfg, dcfg, preset, explicit)
        try:
            return trainer.fit()
        finally:
            distributed.teardown()
