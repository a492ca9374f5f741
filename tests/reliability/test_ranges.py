"""Declared ranges: every number of every config names its range where it is declared (`opt(min=...)`), and
one function, `check_ranges`, holds both the flags (before anything runs) and a checkpoint's config.json to it."""

import dataclasses
from pathlib import Path

import pytest

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub.config import DataConfig, TrainConfig, check_ranges
from smolhub_hub.errors import UserError
from smolhub_hub.registry import family_names, get_family

CONFIGS = [TrainConfig, DataConfig, *(get_family(name).model_config for name in family_names())]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_number_declares_its_range_and_its_default_is_inside(cls):
    numbers = [f for f in dataclasses.fields(cls) if f.type in ("int", "float", int, float)]
    assert numbers
    for f in numbers:
        assert f.metadata.get("range"), f"{cls.__name__}.{f.name} declares no range: opt(..., min=...)"
    check_ranges(cls())


def test_a_value_outside_its_range_names_the_flag_or_the_file():
    with pytest.raises(UserError, match=r"^--dropout must be >= 0 and < 1 \(got 1.5\)$"):
        check_ranges(get_family("StoryLlama").model_config(dropout=1.5))
    with pytest.raises(UserError, match=r"^--warmup-steps must be >= 0 \(got -1\)$"):
        check_ranges(TrainConfig(warmup_steps=-1))
    with pytest.raises(UserError, match=r"^run/config.json is corrupt \(n_heads = 0, must be >= 1\); use an earlier"):
        check_ranges(get_family("StoryKimi").model_config(n_heads=0), file="run/config.json")
    check_ranges(TrainConfig(seq_len=0, grad_clip=0.0, beta1=0.0))  # zero where the range allows it


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_refused_even_without_an_upper_bound(value):
    with pytest.raises(UserError, match="--grad-clip must be >= 0"):
        check_ranges(TrainConfig(grad_clip=value))


@pytest.mark.parametrize("name, field", [("SmolTransformer", "n_heads"), ("StoryKimi", "n_group")])
def test_a_zero_divisor_is_a_range_error_not_a_crash_in_the_configs_own_checks(name, field):
    """The families' cross-field checks (dim % n_heads, n_experts % n_group) wait for the range check."""
    config_class = get_family(name).model_config
    with pytest.raises(UserError, match=rf"^--{field.replace('_', '-')} must be >= 1 \(got 0\)$"):
        check_ranges(config_class(**{field: 0}))
    with pytest.raises(UserError, match=rf"run/config.json is corrupt \({field} = 0, must be >= 1\)"):
        ckpt_io.model_config(Path("run"), {"model": {field: 0}}, config_class)
