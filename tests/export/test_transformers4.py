"""Exports read the same under transformers 4.x: every architecture, loaded with the Auto classes in the
isolated 4.x environment that `bash install.sh --dev` makes (.venv-tf4), gives SmolHub's logits and greedy
tokens. One subprocess reads all four exports."""

import json
import os
import subprocess

import pytest
import torch

from smolhub_hub.cli import export_to_hf
from smolhub_hub.generation import SamplingConfig, generate
from smolhub_hub.inference import load_model
from tests.export.conftest import ARCHITECTURES, PROMPT
from tests.helpers import REPO

TF4_PYTHON = REPO / ".venv-tf4" / "bin" / "python"
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def read_by_transformers4(checkpoints, tmp_path_factory):
    if not TF4_PYTHON.exists():
        pytest.skip(f"no transformers 4.x environment at {TF4_PYTHON}: run `bash install.sh --dev`")
    out = tmp_path_factory.mktemp("tf4")
    jobs = [{"folder": str(export_to_hf(str(checkpoints[f]), out / f)), "prompt": PROMPT, "new_tokens": NEW_TOKENS}
            for f in ARCHITECTURES]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": "", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run([str(TF4_PYTHON), str(REPO / "tests" / "export" / "transformers4_reader.py")],
                          input=json.dumps(jobs), capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(zip(ARCHITECTURES, json.loads(proc.stdout.splitlines()[-1]), strict=True))


@pytest.mark.parametrize("family", list(ARCHITECTURES))
def test_transformers4_reads_the_export_as_smolhub_computes_it(family, checkpoints, read_by_transformers4):
    theirs = read_by_transformers4[family]
    assert theirs["transformers"].startswith("4.")
    ours = load_model(str(checkpoints[family]), device="cpu")
    assert theirs["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert theirs["ids"] == ours.tokenizer(PROMPT)["input_ids"]
    assert theirs["model_max_length"] == ours.max_seq_len
    rope = getattr(ours.config, "rope_base", None)
    assert theirs["rope_theta"] == rope  # None for GPT-2 (learned positions)
    ids = torch.tensor([theirs["ids"]])
    with torch.no_grad():
        logits = ours(ids).logits[0]
    assert (torch.tensor(theirs["logits"]) - logits).abs().max() < 1e-4
    greedy = generate(ours, ids, SamplingConfig(max_new_tokens=NEW_TOKENS, greedy=True))[0, ids.shape[1]:]
    assert theirs["greedy"] == greedy.tolist()
