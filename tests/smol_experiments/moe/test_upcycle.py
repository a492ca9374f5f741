"""Upcycling: exact parity with the dense model, standard save/load, and why top-2 (router gets LM gradient)."""

import contextlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from smol_experiments.moe.fixtures import tiny_llama, tiny_tokenizer
from smol_experiments.moe.upcycle import main as upcycle_main
from smol_experiments.moe.upcycle import parameter_counts, parity_report, upcycle
from smolhub_hub.errors import UserError

PROMPTS = ["def compute_list(total, key):\n    for i in", "Question: What is 12 + 7?\nAnswer:",
           "Once upon a time, Lily went to the park"]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def dense(tokenizer):
    return tiny_llama(tokenizer, seed=0)


def test_upcycled_logits_and_greedy_text_match_dense(dense, tokenizer):
    moe = upcycle(dense, num_experts=3, top_k=2, seed=0)
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        d = dense(**batch).logits
        m = moe(**batch).logits
    real = batch.attention_mask.bool()
    assert (d - m)[real].abs().max().item() < 1e-5
    for prompt in PROMPTS:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        report = parity_report(dense, moe, ids, new_tokens=15)
        assert report["greedy_identical"], report
        assert report["max_abs_logit_diff"] < 1e-5


def test_every_expert_is_the_dense_mlp_and_parameter_counts(dense):
    moe = upcycle(dense, num_experts=4, top_k=2)
    for s, d in zip(dense.model.layers, moe.model.layers, strict=True):
        gate_up = torch.cat([s.mlp.gate_proj.weight, s.mlp.up_proj.weight])
        for e in range(4):
            assert torch.equal(d.mlp.experts.gate_up_proj[e], gate_up)
            assert torch.equal(d.mlp.experts.down_proj[e], s.mlp.down_proj.weight)
    counts = parameter_counts(moe)
    mlp = sum(p.numel() for layer in dense.model.layers for p in layer.mlp.parameters())
    routers = sum(layer.mlp.gate.weight.numel() for layer in moe.model.layers)
    dense_total = sum(p.numel() for p in dense.parameters())
    assert counts["total"] == dense_total + 3 * mlp + routers
    assert counts["active_per_token"] == dense_total + mlp + routers


def test_saved_moe_loads_with_automodel_and_no_custom_code(dense, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, MixtralForCausalLM

    moe = upcycle(dense)
    moe.save_pretrained(tmp_path)
    config = (tmp_path / "config.json").read_text()
    assert '"model_type": "mixtral"' in config and "auto_map" not in config
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is MixtralForCausalLM
    ids = tokenizer(PROMPTS[0], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, moe(ids).logits)
        assert (loaded(ids).logits - dense(ids).logits).abs().max() < 1e-5


def _router_grad_norm(moe, ids) -> float:
    moe.zero_grad()
    moe(ids, labels=ids).loss.backward()  # output_router_logits is off: the LM loss alone
    grads = [layer.mlp.gate.weight.grad for layer in moe.model.layers]
    return sum(float(g.abs().sum()) for g in grads if g is not None)


def test_top2_router_learns_from_lm_loss_top1_cannot(dense, tokenizer):
    ids = tokenizer(PROMPTS[1], return_tensors="pt").input_ids
    for top_k in (2, 1):
        with pytest.warns(UserWarning) if top_k == 1 else contextlib.nullcontext():
            moe = upcycle(dense, num_experts=3, top_k=top_k)
        # Identical experts: routing cannot change the output, so no gradient yet (this is the parity).
        assert _router_grad_norm(moe, ids) < 1e-5
        with torch.no_grad():  # experts diverge, as they do after a few training steps
            for layer in moe.model.layers:
                layer.mlp.experts.down_proj[0].mul_(1.5)
        grad = _router_grad_norm(moe, ids)
        # top-2: d loss / d w ∝ E_a(x) - E_b(x) ≠ 0. top-1: the renormalised weight p/p = 1 is constant.
        assert grad > 1e-2 if top_k == 2 else grad < 1e-5


def test_user_errors(dense, tmp_path):
    with pytest.raises(UserError, match="top-k"):
        upcycle(dense, num_experts=2, top_k=3)
    with pytest.raises(SystemExit) as exit_info:
        upcycle_main(["--model", str(tmp_path / "missing"), "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2


def test_parity_on_real_documents_is_measured_and_recorded(tmp_path, capsys):
    from smol_experiments.moe.fixtures import save_tiny_dense

    dense_dir = save_tiny_dense(tmp_path / "dense")
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(f'{{"text": "Question: What is {i} + {i}?\\nAnswer: {i} + {i} = {2 * i}."}}\n'
                            for i in range(10, 40)))
    out = tmp_path / "moe"
    report = upcycle_main(["--model", str(dense_dir), "--output", str(out), "--parity-data", str(docs),
                           "--parity-docs", "4"])
    parity = report["text_parity"]
    assert parity["documents"] == 4 and parity["tokens"] > 20 and parity["greedy_identical"]
    assert parity["loss_moe"] == pytest.approx(parity["loss_dense"], abs=1e-5) and parity["max_abs_logit_diff"] < 1e-5
    assert "parity on 4 documents of" in capsys.readouterr().out
    again = upcycle_main(["--model", str(dense_dir), "--output", str(out), "--parity-data", str(docs),
                          "--parity-docs", "4"])
    assert again == report and "reusing the finished run" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # other parity documents: other settings, refused
        upcycle_main(["--model", str(dense_dir), "--output", str(out), "--parity-data", str(docs)])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        upcycle_main(["--model", str(dense_dir), "--output", str(tmp_path / "other"), "--parity-data",
                      str(tmp_path / "missing.jsonl")])
    assert "--parity-data" in capsys.readouterr().err
