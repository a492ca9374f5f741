"""The shared training engine: `main(FAMILY)` is all a model folder's trainer.py calls."""

from __future__ import annotations

from pathlib import Path

from smolhub_hub.errors import UserError, exit_on_user_error


def _resume_configs(family, preset, overrides, tcfg):
    """On --resume, the run's own saved configs win; flags given now override the training ones."""
    from smolhub_hub import checkpoint as ckpt_io
    from smolhub_hub.config import DataConfig, TrainConfig

    run_dir = Path(tcfg.out_dir or f"runs/{family.name}-{preset}")
    if not (run_dir / ckpt_io.LATEST).exists():
        raise UserError(f"--resume: no checkpoint in {run_dir}; drop --resume to start a new run, "
                        "or point --out-dir at the run to continue")
    saved = ckpt_io.read_config(ckpt_io.resolve_checkpoint(run_dir), sections=("model", "train", "data"))
    if saved["family"] != family.name:
        raise UserError(f"{run_dir} holds a {saved['family']} run; resume it with {saved['family']}/trainer.py")
    train = TrainConfig.from_dict(saved["train"]).replace(**{**overrides["train"], "out_dir": str(run_dir)})
    return DataConfig.from_dict(saved["data"]), train


def train(family, mcfg, tcfg, dcfg, preset: str = "default") -> dict:
    from smolhub_hub.training.engine import train as _train

    return _train(family, mcfg, tcfg, dcfg, preset)


@exit_on_user_error
def main(family, argv=None) -> dict:
    from smolhub_hub.config import parse_cli

    mcfg, tcfg, dcfg, preset, overrides = parse_cli(family, argv, prog=f"{family.name}/trainer.py")
    if tcfg.resume:
        dcfg, tcfg = _resume_configs(family, preset, overrides, tcfg)
    summary = train(family, mcfg, tcfg, dcfg, preset)
    if "sample" in summary:
        print(f"\nheld-out loss {summary['val_loss']:.4f} after {summary['step']} steps "
              f"({summary['tokens']:,} tokens); checkpoint in {summary['out_dir']}")
        print(f"sample: {summary['sample']}")
    return summary
