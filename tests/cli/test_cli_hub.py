"""`smolhub push / pull / generate`: the staged repo, the model card, and the Hub calls up to the network."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smolhub_hub import cli, publish
from smolhub_hub.checkpoint import NATIVE_SUBFOLDER
from smolhub_hub.inference import generate_text, load_model
from tests.helpers import REPO, run_cli, tiny_run_args

SECRET = "hf_notARealToken_1234567890"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub") / "run"
    run_cli("StoryLlama/trainer.py", *tiny_run_args(out, steps=10, extra=["--dim", "64", "--n-layers", "2"]),
            check=True)
    return out


@pytest.fixture(scope="module")
def staged(run, tmp_path_factory):
    return publish.stage(str(run), tmp_path_factory.mktemp("stage") / "repo", "me/tiny-llama")


def _smolhub(*args, env=None):
    full = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "smolhub_hub.cli", *map(str, args)], capture_output=True,
                          text=True, env=full, cwd=REPO, timeout=300)


def _exit_code(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    return e.value.code, capsys.readouterr().err


def test_staged_repo_is_a_transformers_folder_and_a_smolhub_checkpoint(run, staged):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    names = {str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file()}
    assert {"README.md", "loss_curve.png", "config.json", "model.safetensors", "generation_config.json",
            "tokenizer.json", "smolhub/config.json", "smolhub/model.safetensors", "smolhub/metrics.csv"} <= names
    assert not any("training_state" in n for n in names)  # optimizer state stays local
    assert all(not n.endswith((".bin", ".pt", ".pkl")) for n in names)  # nothing loaded with pickle
    hf = AutoModelForCausalLM.from_pretrained(staged).eval()
    tok = AutoTokenizer.from_pretrained(staged)
    ours = load_model(staged / NATIVE_SUBFOLDER, device="cpu")
    ids = tok("Once upon a time", return_tensors="pt")["input_ids"]
    assert (hf(ids).logits - ours(ids).logits).abs().max() < 1e-4


def test_model_card_reports_the_run(run, staged):
    from smolhub_hub.compare import summarize_run

    card = (staged / "README.md").read_text()
    s = summarize_run(run)
    assert card.startswith('---\nlicense: "mit"\nlibrary_name: "transformers"')
    for text in ["LlamaForCausalLM", f"{s.params_total:,}", f"tokens seen: {s.tokens:,}", f"{s.train_loss:.4f}",
                 f"{s.val_loss:.4f}", "built-in offline story corpus", "![loss curve](loss_curve.png)",
                 'pipeline("text-generation", model="me/tiny-llama")', 'load_model("me/tiny-llama")']:
        assert text in card, text


def test_push_dry_run_cli_and_non_empty_folder(run, tmp_path, capsys):
    cli.main(["push", str(run), "me/tiny", "--dry-run", str(tmp_path / "d")])
    assert (tmp_path / "d" / "smolhub" / "model.safetensors").exists()
    code, err = _exit_code(["push", str(run), "me/tiny", "--dry-run", str(tmp_path / "d")], capsys)
    assert code == 2 and "is not empty" in err and "Traceback" not in err


def test_push_uploads_the_staged_folder_with_the_login_token(run, monkeypatch, capsys):
    from huggingface_hub import HfApi, RepoUrl

    calls = {}

    def create_repo(self, repo_id, *, token=None, private=None, exist_ok=False, **kw):
        calls["create"] = dict(repo_id=repo_id, token=token, private=private, exist_ok=exist_ok)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, token=None, **kw):
        files = {p.relative_to(folder_path).as_posix(): p.read_bytes()
                 for p in Path(folder_path).rglob("*") if p.is_file()}
        calls["upload"] = dict(repo_id=repo_id, token=token, files=files)

    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    cli.main(["push", str(run), "me/tiny-llama", "--private"])
    out = capsys.readouterr()
    assert calls["create"] == dict(repo_id="me/tiny-llama", token=SECRET, private=True, exist_ok=True)
    assert calls["upload"]["repo_id"] == "me/tiny-llama" and calls["upload"]["token"] == SECRET
    assert "smolhub/model.safetensors" in calls["upload"]["files"] and "README.md" in calls["upload"]["files"]
    assert not any(SECRET.encode() in b for b in calls["upload"]["files"].values())  # never written
    assert SECRET not in out.out + out.err and "huggingface.co/me/tiny-llama" in out.out


def test_push_without_token_or_network_fails_in_one_line(run, tmp_path):
    no_login = {"HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": "", "HF_HUB_OFFLINE": "0"}
    proc = _smolhub("push", run, "me/tiny", env=no_login)
    assert proc.returncode == 2 and "no Hugging Face token" in proc.stderr and "Traceback" not in proc.stderr
    # A closed local port stands in for "no network": the real client, a real connection refused.
    offline = {**no_login, "HF_TOKEN": SECRET, "HF_ENDPOINT": "http://127.0.0.1:9"}
    proc = _smolhub("push", run, "me/tiny", env=offline)
    assert proc.returncode == 2 and "cannot reach the Hugging Face Hub" in proc.stderr, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    # (library log lines such as torch's deprecation notes may precede it; no other error does)
    errors = [line for line in proc.stderr.splitlines() if line.lower().startswith("error") or "Error:" in line]
    assert errors == [proc.stderr.strip().splitlines()[-1]]


def test_push_and_generate_missing_checkpoint(tmp_path, capsys):
    code, err = _exit_code(["push", str(tmp_path / "nope"), "me/x", "--dry-run", str(tmp_path / "d")], capsys)
    assert code == 2 and "does not exist" in err
    code, err = _exit_code(["generate", str(tmp_path / "nope"), "--prompt", "hi"], capsys)
    assert code == 2 and "does not exist" in err


@pytest.fixture
def fake_hub(staged, monkeypatch):
    """snapshot_download served from the staged folder (honouring allow_patterns), as if it were pushed."""
    import fnmatch

    import huggingface_hub

    def snapshot_download(repo_id, *, revision=None, local_dir=None, allow_patterns=None, **kw):
        dest = Path(local_dir) if local_dir else staged.parent / "cache" / repo_id.replace("/", "--")
        for f in staged.rglob("*"):
            rel = f.relative_to(staged).as_posix()
            if f.is_file() and (allow_patterns is None or any(fnmatch.fnmatch(rel, p) for p in allow_patterns)):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest / rel)
        dest.mkdir(parents=True, exist_ok=True)
        return str(dest)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)


def test_load_model_and_pull_from_a_pushed_repo(run, fake_hub, tmp_path, capsys):
    model = load_model("me/tiny-llama", device="cpu")
    assert model.checkpoint_path.name == NATIVE_SUBFOLDER
    assert not (model.checkpoint_path.parent / "model.safetensors").exists()  # load_model skips the HF copy
    local = load_model(run, device="cpu")
    assert generate_text(model, "Once upon", 8, greedy=True) == generate_text(local, "Once upon", 8, greedy=True)
    cli.main(["pull", "me/tiny-llama", str(tmp_path / "pulled")])
    assert f"SmolHub checkpoint: {tmp_path / 'pulled' / 'smolhub'}" in capsys.readouterr().out
    assert (tmp_path / "pulled" / "model.safetensors").exists()
    code, err = _exit_code(["pull", "me/tiny-llama", str(tmp_path / "pulled" / "smolhub")], capsys)
    assert code == 2 and "not empty" in err


def test_generate_takes_the_inference_sampling_flags(run, capsys):
    argv = ["generate", str(run), "--prompt", "Once upon", "--prompt", "Lily", "--max-length", "6",
            "--temperature", "0.9", "--top-k", "20", "--top-p", "0.9", "--seed", "3", "--device", "cpu"]
    cli.main(argv)
    first = capsys.readouterr().out
    cli.main(argv)
    assert capsys.readouterr().out == first and first.count("\n") == 2
    code, err = _exit_code(["generate", str(run), "--prompt", "x", "--top-p", "2"], capsys)
    assert code == 2 and "top_p" in err
