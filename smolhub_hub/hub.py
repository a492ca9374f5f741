"""Hugging Face Hub, the download side: fetch a pushed repo (or any repo holding a SmolHub checkpoint).

`load_model("user/repo")` and `smolhub pull` come here; `smolhub push` is `smolhub_hub.publish`.
"""

from __future__ import annotations

from pathlib import Path

from smolhub_hub.checkpoint import NATIVE_SUBFOLDER, checkpoint_in
from smolhub_hub.errors import UserError


# --- pull ----------------------------------------------------------------------------------------
def _snapshot(repo_id: str, local_dir, revision, allow_patterns=None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        HTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_dir=local_dir,
                                      allow_patterns=allow_patterns))
    except GatedRepoError:
        raise UserError(f"'{repo_id}' is gated: accept its terms on the Hub and log in (`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise UserError(f"no Hub repo '{repo_id}' (or it is private: log in with `hf auth login`); "
                        "for a local checkpoint, pass its folder path") from None
    except RevisionNotFoundError:
        raise UserError(f"'{repo_id}' has no revision '{revision}'") from None
    except HFValidationError:
        raise UserError(f"'{repo_id}' is not a valid Hub repo id (expected user/name)") from None
    except LocalEntryNotFoundError:
        from huggingface_hub.constants import is_offline_mode

        why = "HF_HUB_OFFLINE is set" if is_offline_mode() else "the Hugging Face Hub cannot be reached"
        raise UserError(f"cannot fetch '{repo_id}' ({why}) and it is not cached; check the network, "
                        "or pass a local checkpoint folder") from None
    except (OSError, HTTPError) as e:
        raise UserError(f"could not download '{repo_id}' ({str(e)[:200]}); check the network, "
                        "or pass a local checkpoint folder") from None


def download(repo_id: str, local_dir: str | None = None, revision: str | None = None) -> Path:
    """The SmolHub checkpoint of a Hub repo, fetched into the cache (or `local_dir`); what load_model uses.

    Only `smolhub/` is fetched from a pushed repo (not the transformers copy of the weights); a repo
    that holds a checkpoint at its root is fetched whole."""
    root = _snapshot(repo_id, local_dir, revision, allow_patterns=[f"{NATIVE_SUBFOLDER}/*"])
    if not (root / NATIVE_SUBFOLDER / "config.json").exists():
        root = _snapshot(repo_id, local_dir, revision)
    return checkpoint_in(root)


def pull(repo_id: str, local_dir: str | None = None, revision: str | None = None) -> tuple[Path, Path]:
    """Download a whole repo; returns (its folder, the SmolHub checkpoint in it)."""
    if local_dir is not None:
        out = Path(local_dir)
        if out.exists() and any(out.iterdir()) and not (out / ".cache" / "huggingface").exists():
            raise UserError(f"{out} is not empty and holds no earlier download; choose a new folder")
    root = _snapshot(repo_id, local_dir, revision)
    return root, checkpoint_in(root)
