"""The shared training engine: `main(FAMILY)` is all a model folder's trainer.py calls."""

from __future__ import annotations

from pathlib import Path

from smolhub_hub.errors import UserError, exit_on_user_error


def _resume_configs(family, preset, overrides, tcfg):
    """On --resume the run's own saved configs are the base and the flags given now go on top. The engine
    then refuses architecture and data flags that differ from the checkpoint and reports changed
    training settings; settings of this invocation alone (--resume, --out-dir ...) are never taken from it."""
    from smolhub_hub import checkpoint as ckpt_io
    from smolhub_hub.config import INVOCATION_FIELDS, DataConfig, TrainConfig

    run_dir = Path(tcfg.out_dir or f"runs/{family.name}-{preset}")
    if not (run_dir / ckpt_io.LATEST).exists():
        raise UserError(f"--resume: no checkpoint in {run_dir}; drop --resume to start a new run, "
                        "or point --out-dir at the run to continue")
    ckpt = ckpt_io.resolve_checkpoint(run_dir)
    saved = ckpt_io.read_config(ckpt, sections=("model", "train", "data"))
    if saved["family"] != family.name:
        raise UserError(f"{run_dir} holds a {saved['family']} run; resume it with {saved['family']}/trainer.py")
    model = ckpt_io.model_config(ckpt, saved, family.model_config).replace(**overrides["model"])
    this_invocation = {n: getattr(tcfg, n) for n in INVOCATION_FIELDS}
    train = TrainConfig.from_dict(saved["train"]).replace(**{**this_invocation, **overrides["train"],
                                                               "out_dir": str(run_dir)})
    return model, train, DataConfig.from_dict(saved["data"]).replace(**overrides["data"])


def configs_from_cli(family, argv=None):
    """(model cfg, train cfg, data cfg, preset, explicit flags): what `Trainer` takes, as the CLI resolves it."""
    from smolhub_hub.config import parse_cli

    mcfg, tcfg, dcfg, preset, explicit = parse_cli(family, argv, prog=f"{family.name}/trainer.py")
    if tcfg.resume:
        mcfg, tcfg, dcfg = _resume_configs(family, preset, explicit, tcfg)
    return mcfg, tcfg, dcfg, preset, explicit


def train(family, mcfg, tcfg, dcfg, preset: str = "default", explicit: dict | None = None) -> dict:
    from smolhub_hub.training.engine import train as _train

    return _train(family, mcfg, tcfg, dcfg, preset, explicit)


@exit_on_user_error
def main(family, argv=None) -> dict:
    summary = train(family, *configs_from_cli(family, argv))
    if "sample" in summary:
        print(f"\nheld-out loss {summary['val_loss']:.4f} after {summary['step']} steps "
              f"({summary['tokens']:,} tokens); checkpoint in {summary['out_dir']}")
        print(f"sample: {summary['sample']}")
    return summary
