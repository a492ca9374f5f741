"""Autouse fixtures every alignment test module imports: the Hub is unreachable, one torch thread."""

import pytest

from smol_experiments.alignment.fixtures import force_offline_hub, torch_threads


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    with torch_threads(1):
        yield


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    force_offline_hub(monkeypatch)
