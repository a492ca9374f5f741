"""Which model-config fields are training settings comes from their own declarations, the CLI says so,
and checkpoints written before StoryKimi's Muon settings moved to TrainConfig still load."""

import json

import pytest

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub.config import RULE, architecture_fields, build_parser, training_settings
from smolhub_hub.registry import get_family
from smolhub_hub.training import engine

TRAINING = {
    "StoryLlama": {"dropout", "attn_impl"},
    "SmolTransformer": {"dropout", "attn_impl"},
    "SmolMixtral": {"noisy_topk", "balance_coef", "z_loss_coef", "moe_impl", "dropout", "attn_impl"},
    "StoryMixtral": {"noisy_topk", "balance_coef", "z_loss_coef", "moe_impl", "dropout", "attn_impl"},
    "StoryKimi": {"bias_update_rate", "seq_aux_loss_coef", "moe_impl", "dropout", "qk_clip_tau"},
}


@pytest.mark.parametrize("name", sorted(TRAINING))
def test_training_settings_are_declared_on_the_fields(name):
    cls = get_family(name).model_config
    assert set(training_settings(cls)) == TRAINING[name]
    assert {"dim", "n_layers", "vocab_size"} <= set(architecture_fields(cls))
    assert not set(training_settings(cls)) & set(architecture_fields(cls))
    assert not hasattr(engine, "TRAINING_ONLY_FIELDS")  # no hand-kept list beside the declarations
    parser = build_parser(get_family(name))
    groups = {g.title: {a.dest for a in g._group_actions} for g in parser._action_groups}
    assert TRAINING[name] <= next(v for k, v in groups.items() if k.startswith("model training settings"))
    assert parser.epilog == RULE and "--resume" in RULE and "--init-from" in RULE


def test_a_checkpoint_with_muon_settings_in_its_model_section_reads_as_before(tmp_path):
    """StoryKimi checkpoints of 4d6f37b kept muon_* in "model"; they are TrainConfig fields now."""
    old = {"format": ckpt_io.FORMAT, "family": "StoryKimi", "model": {"dim": 64, "muon_lr": 0.05,
                                                                      "muon_adjust_lr": "original"},
           "train": {"optimizer": "muon", "lr": 6e-3}, "data": {}}
    (tmp_path / "config.json").write_text(json.dumps(old))
    cfg = ckpt_io.read_config(tmp_path)
    assert cfg["model"] == {"dim": 64}
    assert cfg["train"] == {"optimizer": "muon", "lr": 6e-3, "muon_lr": 0.05, "muon_adjust_lr": "original"}
