"""No flag is accepted and ignored: every flag of every family's trainer acts, or is refused (issue 14).

The flags are walked from the trainer's own parser, so a field added to a config is covered the day it
is added. Each flag gets values other than the run's and the Trainer is built, not trained: the flag
must change what the run would do (the model it builds, the optimizer's groups, the rate each group
gets at each step, the batches, the data, the run folder, the wandb run), or be refused (UserError).
A flag that only the training loop reads (intervals, --keep-last, --grad-clip ...) is observed in a
few steps of a tiny model instead, with two non-finite steps injected so that --max-bad-steps matters.
Three situations, each set up so that its permission flags matter:
  new     a new run over an old one (--overwrite);
  resume  --resume after the dataset grew (--allow-data-change);
  init    --init-from a transformers export of the old run (and its tokenizer), over it (--overwrite).
On --resume and --init-from a loop-only flag must reach the config the loop reads; every other flag
must change what the run does there too, which is how "--resume --lr" once reached only the log.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub.config import build_parser
from smolhub_hub.data.builtin import generate_stories
from smolhub_hub.errors import UserError
from smolhub_hub.registry import get_family
from smolhub_hub.training import configs_from_cli, engine
from smolhub_hub.training.metrics import read_metrics

FAMILIES = ["StoryLlama", "SmolTransformer", "SmolMixtral", "StoryMixtral", "StoryKimi"]
ARCH = {
    "StoryLlama": ["--n-kv-heads", "1"],
    "SmolTransformer": ["--norm", "layernorm", "--bias"],  # what GPT-2 (its --init-from format) has
    "SmolMixtral": ["--n-kv-heads", "1", "--n-experts", "4", "--expert-hidden", "16"],
    "StoryMixtral": ["--n-kv-heads", "1", "--n-experts", "4", "--expert-hidden", "16"],
    "StoryKimi": ["--n-layers", "2", "--kv-lora-rank", "8", "--qk-nope-head-dim", "8", "--qk-rope-head-dim", "4",
                  "--v-head-dim", "8", "--n-experts", "4", "--expert-hidden", "16", "--ffn-hidden", "32"],
}
COMMON = ["--preset", "quick", "--dim", "32", "--n-heads", "2", "--max-seq-len", "32"]
TRAIN = ["--batch-size", "2", "--max-steps", "4", "--warmup-steps", "2", "--eval-interval", "2", "--eval-batches", "2",
         "--save-interval", "2", "--sample-interval", "2", "--log-interval", "1", "--keep-last", "2"]


def _write_documents(folder: Path, first: int, count: int):
    """Stories as a .txt and a .jsonl file (whose rows also have an upper-case "body", for --text-field)."""
    folder.mkdir(exist_ok=True)
    stories = generate_stories(first + count, seed=0)[first:]
    (folder / f"part{first}.txt").write_text("\n\n".join(stories[: count // 2]))
    rows = [{"text": s, "body": s.upper()} for s in stories[count // 2:]]
    (folder / f"part{first}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


class FakeWandb:
    """Records wandb.init's arguments: the wandb run a flag opens is part of what it changes."""

    def __init__(self):
        self.calls = []

    def init(self, **kw):
        self.calls.append({k: v for k, v in kw.items() if k != "config"})
        return argparse.Namespace(id="fake-id", log=lambda *a, **k: None, finish=lambda: None)


class NoBar:
    def update(self, n):
        pass

    def set_postfix(self, **kw):
        pass

    def write(self, s):
        pass

    def close(self):
        pass


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Shared by the families: the data (grown after the old runs were trained), another dataset and
    tokenizer, and per family an old run and its transformers export. Plots, progress bars, fsync and
    re-reading a tokenizer or the --init-from source (neither is changed by its reader) cost time and are
    no flag's effect: they are left out."""
    import transformers
    import wandb

    from smolhub_hub.cli import export_to_hf
    from smolhub_hub.data import packed
    from smolhub_hub.data import tokenizer as tokenizer_module

    root, fake_wandb, loaded = tmp_path_factory.mktemp("every-flag"), FakeWandb(), {}
    real_from_pretrained = transformers.AutoModelForCausalLM.from_pretrained

    def from_pretrained(path, **kw):
        if path not in loaded:
            loaded[path] = real_from_pretrained(path, **kw)
        return loaded[path]

    load_tokenizer = functools.lru_cache(maxsize=None)(tokenizer_module.load_tokenizer)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(engine, "plot_run", lambda run_dir: None)
        mp.setattr(engine, "_progress", lambda *a, **k: NoBar())
        mp.setattr(ckpt_io.os, "fsync", lambda fd: None)
        mp.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
        mp.setattr(engine, "load_tokenizer", load_tokenizer)
        mp.setattr(packed, "load_tokenizer", load_tokenizer)
        mp.setattr(wandb, "init", fake_wandb.init)
        w = argparse.Namespace(root=root, data=root / "docs", other_data=root / "other-docs",
                               other_tokenizer=root / "tokenizer", wandb=fake_wandb, old_runs={}, hf={})
        _write_documents(w.data, 0, 240)
        _write_documents(w.other_data, 1000, 60)
        tokenizer_module.train_bpe(generate_stories(200, seed=1), vocab_size=320).save_pretrained(w.other_tokenizer)
        for name in FAMILIES:
            family, w.old_runs[name], w.hf[name] = get_family(name), root / f"old-{name}", root / f"hf-{name}"
            args = situation_args(w, family, "new", w.old_runs[name])
            engine.Trainer(family, *configs_from_cli(family, args)).fit()
            export_to_hf(str(w.old_runs[name]), str(w.hf[name]))
        _write_documents(w.data, 240, 40)  # the dataset grows after the runs started
        yield w
    torch.set_num_threads(threads)


def situation_args(w, family, situation: str, out: Path) -> list[str]:
    data = [*TRAIN, "--dataset", str(w.data), "--out-dir", str(out)]
    if situation == "resume":
        return ["--resume", "--out-dir", str(out), "--allow-data-change"]
    if situation == "init":
        hf = str(w.hf[family.name])
        return [*COMMON, *data, "--init-from", hf, "--tokenizer", hf, "--overwrite"]  # the source's own tokenizer
    return [*COMMON, *ARCH[family.name], *data, "--overwrite"]


def other_values(w, family, name: str, value) -> list:
    """Values other than the run's `value` for the flag of field `name`."""
    special = {"out_dir": [w.root / "elsewhere"], "sample_prompt": ["Two cats"], "dataset": [w.other_data],
               "dataset_config": ["sample"], "text_field": ["body"], "tokenizer": [w.other_tokenizer],
               "cache_dir": [w.root / "other-cache"], "init_from": [w.hf[family.name], ""], "wandb_project": ["other"],
               "max_documents": [100], "vocab_size": [400], "device": ["cpu" if torch.cuda.is_available() else "cuda"]}
    if name in special:
        candidates = [str(v) for v in special[name]]
    elif isinstance(value, bool):
        candidates = [not value]
    elif isinstance(value, int):
        candidates = [value // 2, value * 2, value + 1, 1000] if value >= 2 else [value + 1, 2, 1000]
    elif isinstance(value, float):
        candidates = [value / 2, value * 2] if value else [0.5, 0.01]
    else:
        raise AssertionError(f"add values for the flag --{name.replace('_', '-')} to other_values()")
    return [c for c in candidates if str(c) != str(value)]


def flags(family):
    """(field, option, choices) of every flag the trainer accepts, from its parser."""
    for action in build_parser(family)._actions:
        if action.dest not in ("help", "preset"):
            yield action.dest, action.option_strings[0], action.choices


def argv(option: str, value) -> list[str]:
    if isinstance(value, bool):
        return [option if value else "--no-" + option[2:]]
    return [option, str(value)]


def _link_or_copy(src: str, dst: str):
    """Checkpoint files are never rewritten in place (a save writes a new folder): a link is a copy to them."""
    if src.endswith(".csv"):
        shutil.copy2(src, dst)  # metrics.csv is rewritten in place
    else:
        os.link(src, dst)


def observe(trainer, wandb_calls, out: Path) -> str:
    """What the run would do, where a flag can act, without training (its own folder written <out>)."""
    opts, model = trainer.optimizers, trainer.raw_model
    groups = [(type(o).__name__, [{k: v for k, v in g.items() if k not in ("params", "lr")} | {"n": len(g["params"])}
                                  for g in o.param_groups]) for o in opts]
    rates = []
    for step in range(trainer.tcfg.max_steps):
        trainer._set_lr(step)
        rates.append([g["lr"] for o in opts for g in o.param_groups])
    batch = [x.tolist() for _, (x, _) in trainer._micro_batches(0, trainer.seq_len)]
    seen = {
        "model": (model.config.to_dict(), model.gradient_checkpointing, model.loss_chunk_size,
                  type(trainer.model).__name__, sum(float(p.detach().double().sum()) for p in model.parameters())),
        "optimizer": groups, "schedule": rates, "batches": (trainer.accum, trainer.seq_len, batch),
        # what was built from the data, not the config's echo of itself
        "data": (str(trainer.data.path.parent), {k: v for k, v in trainer.data.meta.items() if k != "data"},
                 len(trainer.tokenizer)),
        "run": (str(trainer.run_dir), trainer.device, str(trainer.amp_dtype), trainer.state.step),
        "wandb": list(wandb_calls),
    }
    return json.dumps(seen, default=str).replace(str(out), "<out>").replace(f'"{out.name}"', '"<out>"')


def trace(trainer) -> dict:
    """Four steps of the loop: what was logged, evaluated, sampled and kept, and how it ended."""
    forwards = {"n": 0}

    def two_bad_steps(module, inputs, out):
        if module.training and torch.is_grad_enabled():
            forwards["n"] += 1
            if forwards["n"] in (3, 4):
                out.loss, out.lm_loss = out.loss * math.nan, out.lm_loss * math.nan
        return out

    samples, real_sample = [], trainer.sample
    trainer.sample = lambda *a: samples.append(real_sample(8)) or samples[-1]  # 8 new tokens show the prompt
    trainer.raw_model.register_forward_hook(two_bad_steps)
    torch.manual_seed(trainer.tcfg.seed)  # as the Trainer left it: builds since then moved the global generator
    try:
        trainer.fit()
        ended = "finished"
    except UserError as e:
        ended = str(e).split(";")[0]
    rows = [(r["step"], r["name"], round(float(r["value"]), 4)) for r in read_metrics(trainer.run_dir / "metrics.csv")
            if "per_s" not in r["name"]]  # throughput is the machine's, not the flag's
    return {"rows": rows, "samples": samples, "ended": ended,
            "kept": sorted(p.name for p in trainer.run_dir.glob("step_*"))}


class Walk:
    def __init__(self, w, family, tmp_path: Path):
        self.w, self.family, self.tmp_path, self.n = w, family, tmp_path, 0
        self.base: dict[str, tuple[str, engine.Trainer]] = {}
        self.base_trace = None

    def build(self, situation: str, extra: list[str]):
        self.n += 1
        out = self.tmp_path / f"run{self.n}"
        shutil.copytree(self.w.old_runs[self.family.name], out, copy_function=_link_or_copy)
        self.w.wandb.calls.clear()
        cfgs = configs_from_cli(self.family, [*situation_args(self.w, self.family, situation, out), *extra])
        return engine.Trainer(self.family, *cfgs), out

    def base_value(self, situation: str, name: str):
        """The run's value without the flag (with --init-from: the source's architecture)."""
        if situation not in self.base:
            trainer, out = self.build(situation, [])
            self.base[situation] = (observe(trainer, self.w.wandb.calls, out), trainer)
        trainer = self.base[situation][1]
        return next(getattr(c, name) for c in (trainer.tcfg, trainer.dcfg, trainer.mcfg) if hasattr(c, name))

    def check(self, situation: str, name: str, option: str, choices, loop_only: set[str]) -> str:
        """'acts', 'loop' (acts in the training loop) or 'refused'; fails when some value is ignored."""
        base_value = self.base_value(situation, name)  # --vocab-size is the data's, not the model's
        ignored = []
        for value in [c for c in choices if c != base_value] if choices else other_values(self.w, self.family, name,
                                                                                            base_value):
            try:
                trainer, out = self.build(situation, argv(option, value))
            except UserError:
                continue  # refused: in this situation the value is not silently dropped
            if observe(trainer, self.w.wandb.calls, out) != self.base[situation][0]:
                return "acts"
            if situation != "new" and name in loop_only and getattr(trainer.tcfg, name) == value:
                return "loop"  # the loop reads trainer.tcfg, and the new-run walk saw it act on this field
            if situation == "new" and self.loop_acts(trainer):
                return "loop"
            ignored.append(repr(value))
        if ignored:
            pytest.fail(f"{self.family.name} ({situation}): {option} {', '.join(ignored)} is accepted and ignored")
        return "refused"

    def loop_acts(self, trainer) -> bool:
        if self.base_trace is None:
            self.base_trace = trace(self.build("new", [])[0])
        return trace(trainer) != self.base_trace


@pytest.mark.parametrize("family_name", FAMILIES)
def test_every_flag_acts_or_is_refused(family_name, world, tmp_path, capsys):
    family = get_family(family_name)
    walk, outcomes = Walk(world, family, tmp_path), {}
    for name, option, choices in flags(family):
        outcomes[option] = {"new": walk.check("new", name, option, choices, set())}
    loop_only = {name for name, option, _ in flags(family) if outcomes[option]["new"] == "loop"}
    for name, option, choices in flags(family):
        for situation in ("resume", "init"):
            outcomes[option][situation] = walk.check(situation, name, option, choices, loop_only)
    with capsys.disabled():  # the map of where each flag acts, for the reader of -s output
        print(f"\n{family_name} (new/resume/init): " + ", ".join(f"{o} {'/'.join(v.values())}"
                                                               for o, v in outcomes.items()))
