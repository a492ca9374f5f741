"""Checkpoints written by 4d6f37b (before each model.py owned its forward pass) still load and compute the same.

`layouts_4d6f37b.json` was written by 4d6f37b's code: for each family and a few configs, the state-dict layout
(names and shapes) and the model's outputs with weights drawn from each tensor's own name. Here a checkpoint in
that layout is written without any model, loaded strictly into today's model, and must give the same outputs.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from smolhub_hub import checkpoint as ckpt_io
from smolhub_hub.registry import get_family

LAYOUTS = json.loads((Path(__file__).parent / "layouts_4d6f37b.json").read_text())
IDS = torch.tensor([[3, 17, 5, 9, 33, 2, 60, 11, 8, 4]])


def weight(name: str, shape: list[int]) -> torch.Tensor:
    """The value 4d6f37b's run gave this tensor: a function of its name, so build order does not matter."""
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(zlib.crc32(name.encode())))
    if len(shape) == 1:
        return 1.0 + 0.1 * noise if "norm" in name else 0.05 * noise
    return 0.15 * noise


def outputs(model) -> dict:
    with torch.no_grad():
        full = model(IDS).logits
        loss = model(IDS, IDS.roll(-1, 1)).loss
        cache = model.new_cache(1, 16)
        model(IDS[:, :7], cache=cache)
        step = model(IDS[:, 7:8], cache=cache).logits
    return {"last": full[0, -1, :12], "mid": full[0, 4, :12], "loss": loss, "cached_step": step[0, -1, :12]}


@pytest.mark.parametrize("key", sorted(LAYOUTS))
def test_a_4d6f37b_checkpoint_loads_strictly_and_computes_the_same(key, tmp_path):
    family, saved = key.split("/")[0], LAYOUTS[key]
    fam = get_family(family)
    state = {name: weight(name, shape) for name, shape in saved["state"].items()}
    if saved["config"].get("tie_embeddings", fam.model_config().tie_embeddings):
        state["tok_emb.weight"] = state.pop("lm_head.weight")  # one matrix, stored once under the embedding's name
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"format": ckpt_io.FORMAT, "family": family,
                                                      "model": saved["config"]}))
    cfg = ckpt_io.read_config(tmp_path)
    model = fam.model_class()(ckpt_io.model_config(tmp_path, cfg, fam.model_config))
    assert {n: list(t.shape) for n, t in model.state_dict().items()} == saved["state"]
    ckpt_io.load_weights(tmp_path, model)  # strict: no name missing, none unexpected
    got = outputs(model.eval())
    for name, value in got.items():
        torch.testing.assert_close(value, torch.tensor(saved[name]), rtol=0, atol=1e-5, msg=f"{key} {name}")
    torch.testing.assert_close(got["cached_step"], torch.tensor(saved["full_at_7"]), rtol=0, atol=1e-5)
