"""The CPU's default training precision: bf16 autocast where the CPU multiplies bf16 natively (AMX / AVX512-BF16,
as torch's probes report), fp32 elsewhere; an explicit --dtype always wins. Capabilities are faked: no timing."""

from types import SimpleNamespace

import pytest
import torch

from smolhub_hub.training import cpu_bf16
from smolhub_hub.training.engine import Trainer


@pytest.fixture
def fake_cpu(monkeypatch):
    """fake_cpu(amx=..., avx512_bf16=..., onednn_bf16=...): torch's CPU probes answer as told."""
    def set_probes(amx=False, avx512_bf16=False, onednn_bf16=True):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn_bf16)
        cpu_bf16.native_bf16_features.cache_clear()

    yield set_probes
    cpu_bf16.native_bf16_features.cache_clear()


@pytest.mark.parametrize("probes, features", [
    ({"amx": True, "avx512_bf16": True}, ("amx_bf16", "avx512_bf16")),
    ({"avx512_bf16": True}, ("avx512_bf16",)),
    ({}, ()),
    ({"amx": True, "onednn_bf16": False}, ()),  # oneDNN cannot use them: bf16 would be emulated
])
def test_native_bf16_features_come_from_torchs_probes(fake_cpu, probes, features):
    fake_cpu(**probes)
    assert cpu_bf16.native_bf16_features() == features
    assert cpu_bf16.cpu_default_dtype() == ("bfloat16" if features else "float32")


def _precision(dtype: str, device: str = "cpu"):
    """Trainer._precision on a stand-in trainer: (autocast dtype or None, grad scaler or None)."""
    return Trainer._precision(SimpleNamespace(tcfg=SimpleNamespace(dtype=dtype), device=device,
                                              dist=SimpleNamespace(is_main=True)))


@pytest.mark.parametrize("native, dtype, expected", [
    (True, "auto", torch.bfloat16),
    (False, "auto", None),
    (True, "float32", None),        # --dtype overrides the CPU default
    (False, "bfloat16", torch.bfloat16),
])
def test_cpu_training_precision_default_and_override(fake_cpu, native, dtype, expected):
    fake_cpu(amx=native)
    amp, scaler = _precision(dtype)
    assert amp is expected and scaler is None
