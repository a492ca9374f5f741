"""A tiny upcycled MoE the MoE tests share (read only: every run writes to its own folder)."""

import pytest

from smol_experiments.moe.fixtures import save_tiny_moe


@pytest.fixture(scope="session")
def tiny_moe(tmp_path_factory):
    return save_tiny_moe(tmp_path_factory.mktemp("moe") / "upcycled")
