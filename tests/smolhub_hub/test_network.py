"""Hub reachability goes through huggingface_hub's HTTP session: HF_ENDPOINT, HF_HUB_OFFLINE and proxies count."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time

import pytest

from tests.browser import free_port

PROBE = "from smolhub_hub.network import hub_reachable; print(hub_reachable(), hub_reachable())"


@pytest.fixture
def server():
    """A local HTTP server that answers everything with 200 and records the request lines (a Hub or a proxy)."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            seen.append(self.requestline)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()


def _probe(**env) -> tuple[str, float]:
    clean = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip(), time.perf_counter() - start


def test_the_hub_is_asked_through_the_proxy_once(server):
    proxy, seen = server
    answer, _ = _probe(HF_HUB_OFFLINE="0", HF_ENDPOINT="http://hub.invalid", HTTP_PROXY=proxy, NO_PROXY="")
    assert answer == "True True"
    assert seen == ["HEAD http://hub.invalid/ HTTP/1.1"]  # through the proxy, and cached: asked once


def test_hf_endpoint_and_offline_mode_are_honoured(server):
    endpoint, seen = server
    assert _probe(HF_HUB_OFFLINE="0", HF_ENDPOINT=endpoint)[0] == "True True" and len(seen) == 1
    assert _probe(HF_HUB_OFFLINE="1", HF_ENDPOINT=endpoint)[0] == "False False" and len(seen) == 1


def test_an_unreachable_hub_fails_fast():
    answer, seconds = _probe(HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    assert answer == "False False" and seconds < 20
