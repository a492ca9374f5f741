"""The alignment tests run as they would on a machine without network: the Hub is unreachable."""

import pytest

from smol_experiments.alignment.fixtures import force_offline_hub


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    force_offline_hub(monkeypatch)
