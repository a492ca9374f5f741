"""Hugging Face Hub: pull a SmolHub checkpoint; push one with a model card (see `smolhub push`)."""

from __future__ import annotations

from pathlib import Path

from smolhub_hub.errors import UserError


def download(repo_id: str, local_dir: str | None = None, revision: str | None = None) -> Path:
    """Download a repo snapshot; a clear message when offline, the repo is missing, or access is denied."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_dir=local_dir))
    except GatedRepoError:
        raise UserError(f"'{repo_id}' is gated: accept its terms on the Hub and log in (`hf auth login`)") from None
    except RepositoryNotFoundError:
        raise UserError(f"no Hub repo '{repo_id}' (or it is private: log in with `hf auth login`); "
                        "for a local checkpoint, pass its folder path") from None
    except LocalEntryNotFoundError:
        raise UserError(f"cannot reach the Hugging Face Hub to fetch '{repo_id}' and it is not cached; "
                        "check the network, or pass a local checkpoint folder") from None
    except OSError as e:
        raise UserError(f"could not download '{repo_id}' ({str(e)[:200]}); check the network, "
                        "or pass a local checkpoint folder") from None
