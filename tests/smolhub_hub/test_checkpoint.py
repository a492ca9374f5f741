"""Checkpoints: atomic, pickle-free, refusing what is corrupt or foreign."""

import json
import pickle

import pytest
import torch

from smolhub_hub import checkpoint as ck
from smolhub_hub.errors import UserError
from tests.helpers import tiny_llama


def _opt_state(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 97, (1, 8)), torch.randint(0, 97, (1, 8))).loss.backward()
    opt.step()
    return opt


def test_roundtrip_weights_and_optimizer_state(tmp_path):
    m = tiny_llama()
    opt = _opt_state(m)
    rng = torch.get_rng_state()
    path = ck.save_checkpoint(tmp_path, 7, m, {"family": "StoryLlama", "model": m.config.to_dict()},
                              training_state={"step": 7, "optimizers": [opt.state_dict()], "rng": rng})
    assert ck.resolve_checkpoint(tmp_path) == path
    m2 = tiny_llama()
    torch.nn.init.zeros_(m2.tok_emb.weight)
    ck.load_weights(path, m2)
    assert m2.lm_head.weight is m2.tok_emb.weight
    for a, b in zip(m.state_dict().values(), m2.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    st = ck.load_training_state(path)
    opt2 = torch.optim.AdamW(m2.parameters(), lr=1e-3)
    opt2.load_state_dict(st["optimizers"][0])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert st["step"] == 7 and torch.equal(st["rng"], rng)


def test_a_checkpoint_with_separate_qkv_weights_still_loads(tmp_path):
    """Checkpoints saved before q/k/v were fused into `wqkv` hold wq/wk/wv: load_weights fuses them."""
    from safetensors.torch import load_file, save_file

    from StoryLlama.model import unfused_state_dict

    m = tiny_llama()
    path = ck.save_checkpoint(tmp_path, 1, m, {"family": "StoryLlama", "model": m.config.to_dict()})
    weights = next(path.glob("*.safetensors"))
    saved = load_file(weights)
    older = {k: v.contiguous() for k, v in unfused_state_dict(m).items() if k in saved or ".attn.w" in k}
    assert "blocks.0.attn.wq.weight" in older and not any(".wqkv." in k for k in older)
    save_file(older, weights)
    m2 = tiny_llama()
    torch.nn.init.zeros_(m2.blocks[0].attn.wqkv.weight)
    ck.load_weights(path, m2)
    x = torch.randint(0, 97, (1, 9))
    assert torch.equal(m(x).logits, m2(x).logits)


def test_kill_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    m = tiny_llama()
    cfg = {"family": "StoryLlama", "model": m.config.to_dict()}
    good = ck.save_checkpoint(tmp_path, 1, m, cfg)

    def die(*a, **k):
        raise KeyboardInterrupt  # the process is killed half-way through writing
    monkeypatch.setattr(ck, "save_file", die)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(tmp_path, 2, m, cfg)
    assert ck.resolve_checkpoint(tmp_path) == good
    assert not list(tmp_path.glob(".step_*"))  # what it had written is removed on the way out
    ck.load_weights(good, tiny_llama())


def test_corrupt_weights_and_config_are_refused(tmp_path):
    m = tiny_llama()
    path = ck.save_checkpoint(tmp_path, 1, m, {"family": "StoryLlama", "model": m.config.to_dict()})
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        ck.load_weights(path, tiny_llama())
    (path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt"):
        ck.read_config(path)


def test_training_state_never_unpickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, (f"open('{tmp_path}/pwned', 'w').write('x')",))

    m = tiny_llama()
    path = ck.save_checkpoint(tmp_path, 1, m, {"family": "StoryLlama", "model": m.config.to_dict()},
                              training_state={"step": 1})
    (path / "training_state.json").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UserError, match="corrupt"):
        ck.load_training_state(path)
    assert not (tmp_path / "pwned").exists()


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ck.resolve_checkpoint(tmp_path / "nope")
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError, match="not a SmolHub checkpoint"):
        ck.resolve_checkpoint(tmp_path / "x")
    (tmp_path / "x" / "config.json").write_text(json.dumps({"hello": 1}))
    (tmp_path / "x" / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="not written by SmolHub"):
        ck.read_config(tmp_path / "x")


def test_the_tokenizer_fingerprint_is_recorded_and_survives_saving(tmp_path):
    from smolhub_hub.data.builtin import generate_stories
    from smolhub_hub.data.tokenizer import load_tokenizer, tokenizer_fingerprint, train_bpe

    tok = train_bpe(generate_stories(200), vocab_size=300)
    m = tiny_llama()
    path = ck.save_checkpoint(tmp_path, 1, m, {"family": "StoryLlama", "model": m.config.to_dict()}, tok)
    recorded = ck.read_config(path)[ck.TOKENIZER_KEY]
    assert recorded == tokenizer_fingerprint(tok) == tokenizer_fingerprint(load_tokenizer(str(path)))
    other = train_bpe(generate_stories(200, seed=1), vocab_size=300)
    assert len(other) == len(tok) and tokenizer_fingerprint(other) != recorded
