"""Hugging Face Hub, the upload side: push a SmolHub checkpoint with its transformers export and a model card.

A pushed repo serves both worlds from one place:

    README.md  loss_curve.png                      model card and its loss curve
    config.json  model.safetensors  tokenizer*     the transformers export (AutoModelForCausalLM,
    generation_config.json                         pipeline("text-generation"), the Hub widget)
    smolhub/                                       the SmolHub checkpoint: model.safetensors,
                                                   config.json, tokenizer, metrics.csv

so `AutoModelForCausalLM.from_pretrained("user/repo")` and SmolHub's `load_model("user/repo")` both
work. The access token is looked up by huggingface_hub (HF_TOKEN, then `hf auth login`), passed to
its calls, and never printed or written anywhere by SmolHub.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from smolhub_hub.checkpoint import NATIVE_SUBFOLDER, run_dir_of
from smolhub_hub.compare import plot_loss_curves, summarize_checkpoint
from smolhub_hub.errors import UserError
from smolhub_hub.hf_folder import ensure_empty, write_hf_folder
from smolhub_hub.inference import load_model
from smolhub_hub.model_card import render_model_card

_NOT_UPLOADED = ("training_state.safetensors", "training_state.json")  # optimizer state: large, resume-only


def stage(checkpoint: str, out: Path, repo_id: str) -> Path:
    """Write everything `push` uploads into `out` (which must be new or empty)."""
    out = Path(out)
    ensure_empty(out, "staging folder")
    model = load_model(checkpoint, device="cpu")
    ckpt: Path = model.checkpoint_path
    out.mkdir(parents=True, exist_ok=True)
    try:
        write_hf_folder(model, out)
        no_export = None
    except UserError as e:  # e.g. an RMSNorm SmolTransformer has no GPT-2 equivalent: share it natively
        no_export = str(e)
        print(f"warning: no transformers export ({no_export}); pushing the SmolHub checkpoint only", file=sys.stderr)
    native = out / NATIVE_SUBFOLDER
    native.mkdir()
    for f in sorted(ckpt.iterdir()):
        if f.is_file() and f.name not in _NOT_UPLOADED:
            shutil.copy2(f, native / f.name)
    run = run_dir_of(ckpt)
    summary = summarize_checkpoint(ckpt, run)
    image = None
    if run is not None:
        shutil.copy2(run / "metrics.csv", native / "metrics.csv")
        image = out / "loss_curve.png"
        plot_loss_curves([summary], image)
    (out / "README.md").write_text(render_model_card(model, summary, image is not None, repo_id, no_export))
    return out


def push(checkpoint: str, repo_id: str, private: bool = False, revision: str | None = None,
         commit_message: str | None = None) -> str:
    """Stage the checkpoint in a temporary folder and upload it; returns the repo URL."""
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise UserError("no Hugging Face token: run `hf auth login` or set HF_TOKEN to a token with write "
                        "access (https://huggingface.co/settings/tokens)")
    api = HfApi()
    with tempfile.TemporaryDirectory(prefix="smolhub-push-") as tmp:
        folder = stage(checkpoint, Path(tmp) / "repo", repo_id)  # a bad checkpoint fails before any upload
        with _hub_errors(repo_id):
            # private=None keeps an existing repo's visibility; --private makes a new one private.
            url = api.create_repo(repo_id, token=token, private=True if private else None, exist_ok=True)
            api.upload_folder(repo_id=url.repo_id, folder_path=folder, token=token, revision=revision,
                              commit_message=commit_message or f"Upload {Path(checkpoint).name} with smolhub push")
    return str(url)


class _hub_errors:
    """Turn huggingface_hub failures into one line naming the fix (never echoing the token)."""

    def __init__(self, repo_id: str):
        self.repo_id = repo_id

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None:
            return False
        from huggingface_hub.errors import HfHubHTTPError, HFValidationError, HTTPError, OfflineModeIsEnabled

        if isinstance(exc, OfflineModeIsEnabled):
            raise UserError("HF_HUB_OFFLINE is set, so the Hub cannot be reached; unset it to push "
                            "(or use --dry-run DIR to see what would be uploaded)") from None
        if isinstance(exc, HFValidationError):
            raise UserError(f"'{self.repo_id}' is not a valid Hub repo id (expected user/name)") from None
        if isinstance(exc, HfHubHTTPError):
            status = exc.response.status_code if exc.response is not None else None
            if status == 401:
                raise UserError("the Hub rejected the token (401); log in again with `hf auth login` "
                                "or set HF_TOKEN to a valid token") from None
            if status == 403:
                raise UserError(f"the token may not write to '{self.repo_id}' (403); use a token with write "
                                "access, or a repo in your own namespace") from None
            raise UserError(f"the Hub refused the upload to '{self.repo_id}' (HTTP {status}): "
                            f"{str(exc).splitlines()[0][:200]}") from None
        if isinstance(exc, (HTTPError, OSError)):
            raise UserError(f"cannot reach the Hugging Face Hub ({type(exc).__name__}); check the network "
                            "(or use --dry-run DIR to see what would be uploaded)") from None
        return False
