"""The registry finds the families by the module paths pyproject.toml declares (entry points), never by a name
written in smolhub_hub; a folder's config.py does not import its model.py."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint

import pytest
import tomllib

from smolhub_hub import registry
from smolhub_hub.errors import UserError
from tests.helpers import REPO

DECLARED = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][registry.GROUP]


def test_the_families_are_the_entry_points_declared_in_pyproject():
    assert registry.family_names() == list(DECLARED) == ["SmolTransformer", "StoryLlama", "SmolMixtral",
                                                          "StoryMixtral", "StoryKimi"]
    for name, path in DECLARED.items():
        family = registry.get_family(name)
        assert path == f"{name}.config:FAMILY" and family.name == name
        assert family.model_class().__module__ == family.model.split(":")[0]


def test_installed_entry_points_are_used_and_pyproject_is_the_fallback(monkeypatch):
    """An editable install made before the entry points existed has none: pyproject.toml is read instead."""
    monkeypatch.setattr(registry, "entry_points", lambda group: [])
    assert registry.family_names() == list(DECLARED)
    # pip writes entry_points.txt sorted by name; the families still come in the order pyproject.toml gives
    alphabetical = [EntryPoint(name=name, value=path, group=registry.GROUP) for name, path in sorted(DECLARED.items())]
    monkeypatch.setattr(registry, "entry_points", lambda group: alphabetical)
    assert registry.family_names() == list(DECLARED)
    installed = [EntryPoint(name="StoryLlama", value="StoryLlama.config:FAMILY", group=registry.GROUP)]
    monkeypatch.setattr(registry, "entry_points", lambda group: installed)
    assert registry.family_names() == ["StoryLlama"]
    with pytest.raises(UserError, match="unknown model family 'StoryKimi'; SmolHub has StoryLlama"):
        registry.get_family("StoryKimi")


def test_a_declared_family_whose_folder_is_missing_is_left_out(monkeypatch):
    declared = {**DECLARED, "NotBuiltYet": "NotBuiltYet.config:FAMILY"}
    monkeypatch.setattr(registry, "declared_families", lambda: declared)
    assert registry.available_families() == list(DECLARED)
    with pytest.raises(UserError, match="NotBuiltYet is not installed"):
        registry.get_family("NotBuiltYet")


def test_a_config_imports_no_model():
    code = ("import sys\n" + "".join(f"import {name}.config\n" for name in DECLARED)
            + f"print(sorted(m for m in sys.modules if m.split('.')[0] in {list(DECLARED)!r} and m.count('.') == 1))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    configs = sorted(f"{name}.config" for name in DECLARED)
    assert proc.returncode == 0 and proc.stdout.strip() == str(configs), proc.stdout + proc.stderr[-2000:]
