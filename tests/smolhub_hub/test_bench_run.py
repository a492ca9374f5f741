"""bench/run.py's flags: the sizes each family module is run at, and the combinations it refuses."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import run  # noqa: E402


def _module_args(key: str, *flags: str):
    """The family module's parsed arguments for `bench/run.py FLAGS` (argparse: the last of a repeated flag wins)."""
    import importlib

    fam = run.FAMILIES[key]
    return importlib.import_module(fam.module).parse_args(run.module_argv(fam, run.parse_args(list(flags))))


@pytest.mark.parametrize("key", sorted(run.FAMILIES))
def test_default_size_runs_each_familys_default_config_at_a_cpu_batch(key):
    small, default = _module_args(key), _module_args(key, "--size", "default", "--dtype", "bfloat16")
    assert (default.batch_size, default.seq_len, default.new_tokens, default.repeats) == (2, 256, 32, 2)
    assert default.dtype == "bfloat16" and small.dtype == "float32" and default.device == "cpu"
    assert default.vocab_size >= 32000 > small.vocab_size  # the default configs, not the 1-3M CPU sizes
    assert _module_args(key, "--size", "default").dtype == "float32"


@pytest.mark.parametrize("flags", [["--real", "--size", "default"], ["--real", "--dtype", "bfloat16"],
                                   ["--size", "default", "--device", "cuda"], ["--new-tokens", "8"]])
def test_flags_that_would_not_act_are_refused(flags, capsys):
    with pytest.raises(SystemExit):
        run.parse_args(flags)
    assert "error:" in capsys.readouterr().err
