"""Fail at once, with a clear message, when the Hugging Face Hub cannot be reached.

huggingface_hub retries a failed connection for about a minute, printing a warning each time; a user
with no network wants one line saying what to use instead.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

from smolhub_hub.errors import UserError


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def require_hub(what: str, instead: str):
    """Raise a UserError naming `instead` when the Hub is unreachable and nothing is cached locally."""
    if not hub_reachable():
        raise UserError(f"cannot reach the Hugging Face Hub for {what} (offline); {instead}")
