"""Fixtures every smol_experiments test shares."""

import pytest

from smol_experiments.alignment.fixtures import torch_threads


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread for the module, set before its own fixtures train anything: the models here are tiny,
    so intra-op threads cost more than they give on shared cores. The count is put back afterwards."""
    with torch_threads(1):
        yield
