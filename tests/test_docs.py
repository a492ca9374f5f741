"""The docs stay true to the tree: the files README's "Reading the code" names exist, and every relative link or
repository path in a committed markdown file points inside the repository, at a file that is there."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def markdown_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, check=True)
    return [REPO / line for line in out.stdout.split()]


def test_reading_the_code_names_files_that_exist():
    text = (REPO / "README.md").read_text()
    section = text.split("## Reading the code", 1)[1].split("\n## ", 1)[0]
    named = [p for p in re.findall(r"`([\w/.]+\.(?:py|md|toml))`", section)]
    assert len(named) > 10
    assert [p for p in named if not (REPO / p).is_file()] == []


def test_markdown_links_stay_inside_the_repository():
    bad = []
    for md in markdown_files():
        text = md.read_text()
        # markdown links, and paths in backticks that climb out of the file's folder
        for target in re.findall(r"\]\(([^)#\s]+)", text) + re.findall(r"`(\.\./[^`\s]+)`", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path = (md.parent / target).resolve()
            if not path.is_relative_to(REPO) or not path.exists():
                bad.append(f"{md.relative_to(REPO)}: {target}")
    assert bad == []
