"""Fail at once, with a clear message, when the Hugging Face Hub cannot be reached.

The check asks the Hub through huggingface_hub's own HTTP session, so it sees what every later download
sees: HF_ENDPOINT, HF_HUB_OFFLINE, proxies (HTTPS_PROXY, ...) and certificates. huggingface_hub retries
a failed connection for about a minute, printing a warning each time; a user with no network wants one
line saying what to use instead, so this asks once, with a short timeout, and remembers the answer.
"""

from __future__ import annotations

import functools

from smolhub_hub.errors import UserError


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.is_offline_mode():
        return False
    try:
        response = get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # any failure of the probe (DNS, refused, timeout, TLS, proxy) means: not reachable now
        return False
    return response.status_code < 500  # a proxy that cannot reach the Hub answers 502 / 503


def require_hub(what: str, instead: str):
    """Raise a UserError naming `instead` when the Hub is unreachable and nothing is cached locally."""
    if not hub_reachable():
        raise UserError(f"cannot reach the Hugging Face Hub for {what} (offline); {instead}")
