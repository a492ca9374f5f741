"""The model families SmolHub knows, found by the module path each one declares.

A model folder registers itself in pyproject.toml, the way torchtitan's model specs and pytest's plugins do:

    [project.entry-points."smolhub.families"]
    StoryLlama = "StoryLlama.config:FAMILY"

so `smolhub_hub` never names a model folder: it reads the entry points, and imports `<folder>.config` only when a
family is asked for. An editable install made before a folder's entry point was added has no metadata for it;
then the same table is read from the repository's pyproject.toml, the one place it is written.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from smolhub_hub.errors import UserError

GROUP = "smolhub.families"
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def load_object(path: str):
    """The object that "package.module:name" points at, imported as an entry point is (nothing is run but the
    module's own import)."""
    return EntryPoint(name=path, value=path, group=GROUP).load()


def declared_families() -> dict[str, str]:
    """{family name: "Folder.config:FAMILY"} in the order pyproject.toml declares them.

    The installed entry points say which families exist; pip writes them sorted by name, so their order comes
    from pyproject.toml where it is present (families it does not list follow, in installed order)."""
    installed = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    written = _from_pyproject()
    if not installed:
        return written
    order = [name for name in written if name in installed] + [name for name in installed if name not in written]
    return {name: installed[name] for name in order}


def _from_pyproject() -> dict[str, str]:
    import tomllib

    if not PYPROJECT.exists():
        return {}
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    return dict(project.get("entry-points", {}).get(GROUP, {}))


def family_names() -> list[str]:
    return list(declared_families())


def available_families() -> list[str]:
    """Families whose folder can be imported (a folder still being built is simply absent)."""
    out = []
    for name in family_names():
        try:
            get_family(name)
            out.append(name)
        except UserError:
            pass
    return out


def get_family(name: str):
    """The `ModelFamily` a folder's config.py defines."""
    declared = declared_families()
    if name not in declared:
        raise UserError(f"unknown model family '{name}'; SmolHub has {', '.join(declared)}")
    try:
        return load_object(declared[name])
    except ModuleNotFoundError as e:
        raise UserError(f"model family {name} is not installed ({e}); run `pip install -e .` in the "
                        "repository") from None
