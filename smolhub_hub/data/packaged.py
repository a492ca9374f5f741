"""Real text that ships in packages, as local datasets: `python -m smolhub_hub.data.packaged NAME OUT`.

    python-docs    English prose: the Python 3.11 documentation (Debian python3.11-doc, PSF-2.0), one document
                   per section of its reStructuredText sources
    python-stdlib  code: the running CPython's standard library (PSF-2.0), one document per top-level def or
                   class, and one for the rest of each module (docstring, imports, constants)
    sympy-docs     mathematics: the SymPy documentation (Debian python-sympy-doc, BSD-3-Clause), one document
                   per section of its reStructuredText / MyST sources
    jargon         English prose outside programming manuals: the Jargon File 4.4.7 (Debian jargon-text, public
                   domain), one document per glossary entry, short entries joined to the next

OUT gets NAME.jsonl, one {"text", "source"} record per document in a fixed order (the same files give the same
bytes), and SOURCE.md: package, version, license and how the text was cut. A Debian package that is not
installed is fetched with `apt-get download` and unpacked with `dpkg -x` into the cache (nothing is installed
system-wide); `--root DIR` reads the files from a folder that holds them instead.

reST is turned into plain text conservatively: section titles start documents; roles become their text
(:func:`~json.dumps` -> dumps, :rfc:`7159` -> RFC 7159, :math:`x^2` -> $x^2$); ``literals`` become `literals`;
links keep their text; code (literal blocks, code-block, doctest ...) is kept, indented by four spaces; math
blocks are kept between $$ lines; note, versionadded and the like keep their text with a short prefix; API
entries (function, class, method ...) keep their signature line; what renders as no text (index, toctree,
module, audit-event, autodoc stubs, comments, link targets, images, grammar productions) is dropped.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import os
import platform
import re
import shutil
import subprocess
import sysconfig
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from smolhub_hub.errors import UserError, exit_on_user_error

MIN_SECTION_CHARS = 400  # a shorter section is joined to the next one (a title and one line teach little)


@dataclass(frozen=True)
class Corpus:
    kind: str
    package: str          # the Debian package; "" for the running Python's standard library
    license: str
    folder: str           # where its files are under the package root
    suffixes: tuple[str, ...]
    cut: str              # how the files become documents, for SOURCE.md


CORPORA = {
    "python-docs": Corpus("English prose", "python3.11-doc", "PSF-2.0", "usr/share/doc/python3.11/html/_sources",
                          (".rst.txt",), "one document per section of each reStructuredText page"),
    "python-stdlib": Corpus("Python source code", "", "PSF-2.0", "", (".py",),
                            "one document per top-level def or class, one for the rest of each module; test "
                            "suites and site-packages left out"),
    "sympy-docs": Corpus("mathematics", "python-sympy-doc", "BSD-3-Clause",
                         "usr/share/doc/python-sympy-doc/html/_sources", (".rst.txt", ".md.txt"),
                         "one document per section of each reStructuredText or MyST page"),
    "jargon": Corpus("English prose", "jargon-text", "public domain", "usr/share/doc/jargon-text", (".txt.gz",),
                     "one document per glossary entry (entries shorter than 400 characters joined to the next); "
                     "the front matter, appendices and cross-reference braces left out"),
}
SKIPPED_CODE_FOLDERS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


# --- reStructuredText -> plain text ----------------------------------------------------------------
SECTION = "\x00"  # marks a section title in rendered lines
CODE_LINE = "\x01"  # marks a line of code: inline markup is not touched there
ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1{2,}\s*$")  # a line of one punctuation character, 3 or more
DIRECTIVE = re.compile(r"^\.\.\s+([\w:-]+)::\s*(.*)$")
OPTION = re.compile(r"^:[\w -]+:(\s|$)")
DROPPED = {"index", "toctree", "module", "currentmodule", "moduleauthor", "sectionauthor", "highlight", "testsetup",
           "testcleanup", "raw", "image", "figure", "include", "literalinclude", "tabularcolumns", "productionlist",
           "audit-event", "audit-event-table", "contents", "program", "default-role", "role", "meta", "plot",
           "graphviz", "limited-api-list", "miscnews", "sectnum", "autosummary", "automodule", "autoclass",
           "autofunction", "automethod", "autoattribute", "autodata", "autoexception"}
CODE = {"code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "parsed-literal", "jupyter-execute"}
PREFIXED = {"versionadded": "New in version {}.", "versionchanged": "Changed in version {}.",
            "deprecated": "Deprecated since version {}.", "availability": "Availability: {}",
            "note": "Note:", "warning": "Warning:", "seealso": "See also:", "caution": "Caution:",
            "important": "Important:", "tip": "Tip:", "hint": "Hint:", "attention": "Attention:",
            "class": "class {}", "exception": "exception {}"}
ROLE = re.compile(r":(?:[\w.-]+:)?([\w.-]+):`([^`]*)`")


def _role_text(name: str, body: str) -> str:
    link = re.fullmatch(r"(.*?)\s*<([^<>]*)>", body, re.S)
    text = link.group(1) if link and link.group(1) else body
    if name == "math":
        return f"${text}$"
    if name in ("rfc", "pep"):
        return f"{name.upper()} {text}"
    if name in ("issue", "gh"):  # CPython's bug trackers, as the rendered docs write them
        return f"{'bpo' if name == 'issue' else 'gh'}-{text}"
    if name == "samp":
        text = re.sub(r"\{(\w+)\}", r"\1", text)
    if text.startswith("~"):  # Sphinx shows the last component only
        text = text[1:].split(".")[-1]
    return text.lstrip("!")


def inline(text: str) -> str:
    """Inline markup of one paragraph (it may span lines) -> its text."""
    text = ROLE.sub(lambda m: _role_text(m.group(1), m.group(2)), text)
    text = re.sub(r"``(.+?)``", r"`\1`", text, flags=re.S)
    text = re.sub(r"`([^`<]+?)\s*<[^`>]*>`__?", r"\1", text)      # `text <url>`_
    text = re.sub(r"`([^`]+)`__?", r"\1", text)                      # `reference`_
    text = re.sub(r"\s?\[(#[\w-]*|\d+|\*)\]_", "", text)             # footnote references
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)
    return text.replace("\\ ", "").replace("\\*", "*")


def plain_text(lines: list[str]) -> str:
    """Rendered lines -> text: inline markup resolved paragraph by paragraph, code lines kept as they are."""
    chunks, prose = [], []
    for line in [*lines, CODE_LINE]:
        if line.startswith(CODE_LINE):
            chunks += ["\n\n".join(inline(p) for p in re.split(r"\n[ \t]*\n", "\n".join(prose)))] if prose else []
            chunks.append(line[len(CODE_LINE):])
            prose = []
        else:
            prose.append(line)
    return re.sub(r"\n{3,}", "\n\n", "\n".join(chunks[:-1])).strip()


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """The first line after `start` that is not blank and not indented more than `indent`."""
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    return end


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _code(lines: list[str]) -> list[str]:
    body = textwrap.dedent("\n".join(lines)).strip("\n")
    return ["", *(CODE_LINE + ("    " + x if x.strip() else "") for x in body.splitlines()), ""] if body else []


def _directive(name: str, arg: str, content: list[str]) -> list[str]:
    while content and OPTION.match(content[0].strip()):  # :synopsis:, :linenos: ...
        content = content[1:]
    if name in DROPPED or name.startswith("auto"):
        return []
    if name in CODE:
        return _code(content)
    if name == "math":
        formula = textwrap.dedent("\n".join(content)).strip().splitlines()
        return ["", *(CODE_LINE + x for x in ["$$", *formula, "$$"]), ""]
    body = render(textwrap.dedent("\n".join(content)).splitlines())
    if name == "deprecated-removed":
        first, _, removed = arg.partition(" ")
        head = f"Deprecated since version {first}, will be removed in version {removed}."
    elif name in PREFIXED:
        head = PREFIXED[name].format(arg) if "{}" in PREFIXED[name] else PREFIXED[name]
    else:  # API entries (function, class, c:function ...), rubric, topic, admonition: their argument is text
        head = arg
    return ["", *([head] if head else []), *body, ""]


def _is_title(lines: list[str], i: int) -> bool:
    line = lines[i]
    return (i + 1 < len(lines) and bool(line.strip()) and not line[0].isspace() and not ADORNMENT.match(line)
            and bool(ADORNMENT.match(lines[i + 1])) and len(lines[i + 1].rstrip()) >= len(line.rstrip())
            and (i == 0 or not lines[i - 1].strip()))


def render(lines: list[str]) -> list[str]:
    """reST lines -> plain text lines; section titles come out as SECTION + title."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _is_title(lines, i):
            out.append(SECTION + line.strip())
            i += 2
        elif ADORNMENT.match(line) and i + 1 < len(lines) and _is_title(lines, i + 1):
            i += 1  # the overline of a title
        elif ADORNMENT.match(line):
            i += 1  # a transition
        elif (m := DIRECTIVE.match(line)) is not None:
            end = _block_end(lines, i, 0)
            out += _directive(m.group(1), m.group(2).strip(), lines[i + 1:end])
            i = end
        elif line.startswith(".."):  # a comment, a link target, a footnote or a substitution definition
            i = _block_end(lines, i, 0)
        elif line.rstrip().endswith("::") and _indent(line) == 0:
            text = line.rstrip()[:-2]
            text = text.rstrip() if not text or text.endswith(" ") else text + ":"
            if text:
                out.append(text)
            end = _block_end(lines, i, 0)
            out += _code(lines[i + 1:end])
            i = end
        elif _indent(line) > 0 and line.strip():  # a block quote, a definition or a list item's body: rendered
            end, pad = _block_end(lines, i, _indent(line) - 1), " " * _indent(line)
            out += [_indented(x, pad) for x in render(textwrap.dedent("\n".join(lines[i:end])).splitlines())]
            i = end
        else:
            out.append(line)
            i += 1
    return out


def _indented(line: str, pad: str) -> str:
    """A line of an indented block, indented back; a title inside the block is plain text there."""
    line = line.replace(SECTION, "")
    code = line.startswith(CODE_LINE)
    text = line[len(CODE_LINE):] if code else line
    return (CODE_LINE if code else "") + (pad + text if text.strip() else "")


def markdown_lines(text: str) -> list[str]:
    """MyST markdown -> lines for `sections`: headings become SECTION titles, {role}`x` its text, code fences
    are code, directive fences go (their content stays)."""
    out, fences = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("```{"):
            fences.append("directive")
        elif stripped == "```" and fences and fences[-1] == "directive":
            fences.pop()
        elif stripped.startswith("```"):
            fences.pop() if stripped == "```" and fences else fences.append("code")
            out.append(CODE_LINE + line)
        elif fences and fences[-1] == "code":
            out.append(CODE_LINE + line)
        elif fences and OPTION.match(stripped):
            continue  # a directive's :option:
        elif re.match(r"^#{1,6} ", line):
            out.append(SECTION + line.lstrip("#").strip())
        else:
            out.append(re.sub(r"\{([\w:.-]+)\}`([^`]*)`", lambda m: _role_text(m.group(1).split(":")[-1], m.group(2)),
                              line))
    return out


def sections(rendered: list[str]) -> Iterator[tuple[str, str]]:
    """(title, text) per section; a section shorter than MIN_SECTION_CHARS is joined to the next one."""
    title, body, pending = "", [], ""
    for line in [*rendered, SECTION]:
        if not line.startswith(SECTION):
            body.append(line.rstrip())
            continue
        text = plain_text(([title, ""] if title else []) + body)
        pending = f"{pending}\n\n{text}".strip() if text else pending
        if len(pending) >= MIN_SECTION_CHARS or (line == SECTION and pending):
            yield pending.splitlines()[0], pending
            pending = ""
        title, body = line[len(SECTION):], []


def _tidy(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# --- Python source -> documents ----------------------------------------------------------------------
def code_documents(source: str, name: str) -> Iterator[tuple[str, str]]:
    """One document per top-level def or class (with its decorators), and one for the rest of the module."""
    lines = source.splitlines()
    taken = [False] * len(lines)
    header = f"# {name}\n"
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
            for k in range(start, node.end_lineno):
                taken[k] = True
            yield f"{name}:{node.name}", header + "\n".join(lines[start:node.end_lineno])
    rest = _tidy("\n".join(line for line, used in zip(lines, taken, strict=True) if not used))
    if rest:
        yield f"{name}:<module>", header + rest


# --- the Jargon File -> documents -----------------------------------------------------------------------
ENTRY = re.compile(r"^ {3}:(.+?):(.*)$")  # "   :cruft: /kruhft/, n." starts a glossary entry
GLOSSARY_END = re.compile(r"^\s*Part\sIII\.\s+Appendices")  # no-break spaces in the file, hence \s


def jargon_documents(text: str) -> Iterator[tuple[str, str]]:
    """(headword, entry) per glossary entry of jargon.txt: the first entry line is the headword and its usage
    (pronunciation, part of speech); `{see also}` braces lose their braces; the text after the glossary
    (appendices, bibliography) is left out. Short entries are joined to the next, as short sections are."""
    pending, head, body = "", None, []

    def flush():
        nonlocal pending
        if head is None:
            return None
        entry = _tidy(textwrap.dedent("\n".join(body)))
        entry = re.sub(r"\{([^{}\n]+)\}", r"\1", f"{head}\n\n{entry}" if entry else head)
        pending = f"{pending}\n\n{entry}".strip()
        if len(pending) >= MIN_SECTION_CHARS:
            out, pending = pending, ""
            return out
        return None

    for line in text.splitlines():
        if GLOSSARY_END.match(line):
            break
        m = ENTRY.match(line)
        if m:
            done = flush()
            if done:
                yield done.splitlines()[0], done
            usage = m.group(2).strip()
            head, body = f"{m.group(1)}{': ' + usage if usage else ''}", []
        elif head is not None:
            body.append(line)
    done = flush()
    if done or pending:
        yield (done or pending).splitlines()[0], done or pending


# --- documents of a corpus -----------------------------------------------------------------------------
def documents(name: str, root: Path) -> Iterator[dict]:
    """Every document of corpus `name` whose files lie under `root`, in sorted file order."""
    corpus = CORPORA[name]
    base = root / corpus.folder
    if not base.is_dir():
        raise UserError(f"{base} does not exist: {root} does not hold the files of {corpus.package or 'the stdlib'}")
    for path in sorted(p for p in base.rglob("*") if p.is_file() and p.name.endswith(corpus.suffixes)):
        rel = path.relative_to(base).as_posix()
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
                text = f.read()
        else:
            text = path.read_text(encoding="utf-8", errors="replace")
        if name == "jargon":
            parts = [(f"{rel} § {head}", body) for head, body in jargon_documents(text)]
        elif corpus.suffixes == (".py",):
            if SKIPPED_CODE_FOLDERS & set(path.relative_to(base).parts):
                continue
            try:
                parts = list(code_documents(text, rel))
            except (SyntaxError, ValueError):  # Python 2 examples and templates in the tree
                continue
        else:
            lines = markdown_lines(text) if rel.endswith(".md.txt") else render(text.splitlines())
            parts = [(f"{rel} § {title}", body) for title, body in sections(lines)]
        for source, body in parts:
            yield {"text": body, "source": source}


# --- fetching a package ----------------------------------------------------------------------------
def package_root(name: str, cache: Path) -> Path:
    """A folder holding the corpus's files: the system root when its package is installed, else the package
    downloaded (`apt-get download`) and unpacked (`dpkg -x`) under `cache`."""
    corpus = CORPORA[name]
    if not corpus.package:
        return Path(sysconfig.get_paths()["stdlib"])
    if (Path("/") / corpus.folder).is_dir():
        return Path("/")
    if not (shutil.which("apt-get") and shutil.which("dpkg")):
        raise UserError(f"{name} comes from the Debian package {corpus.package}, and this machine has no apt-get / "
                        f"dpkg; unpack the package elsewhere and pass --root DIR")
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob(f"{corpus.package}_*.deb"))
    if not debs:
        done = subprocess.run(["apt-get", "download", corpus.package], cwd=cache, capture_output=True, text=True)
        debs = sorted(cache.glob(f"{corpus.package}_*.deb"))
        if done.returncode != 0 or not debs:
            raise UserError(f"`apt-get download {corpus.package}` failed ({done.stderr.strip()[-200:]}); run "
                            "`apt-get update` first, or pass --root DIR holding the package's files")
    root = cache / debs[-1].name.removesuffix(".deb")
    if not (root / corpus.folder).is_dir():
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(tmp)], check=True)
        shutil.rmtree(root, ignore_errors=True)
        tmp.rename(root)
    return root


def version_of(name: str, root: Path) -> str:
    """The package version its Debian changelog names (the running Python's for the stdlib)."""
    corpus = CORPORA[name]
    if not corpus.package:
        return f"CPython {platform.python_version()}"
    changelog = root / "usr/share/doc" / corpus.package / "changelog.Debian.gz"
    if changelog.is_file():
        with gzip.open(changelog, "rt", errors="replace") as f:
            m = re.match(r"\S+ \(([^)]+)\)", f.readline())
        if m:
            return m.group(1)
    return "unknown"


def build(name: str, out: Path, root: Path | None = None, cache: Path | None = None) -> Path:
    """Write OUT/NAME.jsonl and OUT/SOURCE.md; returns the .jsonl path."""
    from smolhub_hub.data.packed import default_cache_dir

    root = root or package_root(name, cache or default_cache_dir().parent / "packages")
    records = list(documents(name, root))
    if not records:
        raise UserError(f"no {name} documents under {root}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.jsonl"
    with open(path.with_suffix(".tmp"), "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(path.with_suffix(".tmp"), path)
    (out / "SOURCE.md").write_text(_source_card(name, version_of(name, root), records))
    return path


def ensure(name: str, data_dir: Path) -> Path:
    """data_dir/NAME/NAME.jsonl, made first when it is missing (fetching the package if needed)."""
    path = Path(data_dir).expanduser() / name / f"{name}.jsonl"
    if not path.is_file():
        print(f"making {path} (python -m smolhub_hub.data.packaged {name} {path.parent})", flush=True)
        build(name, path.parent)
    return path


def _source_card(name: str, version: str, records: list[dict]) -> str:
    corpus = CORPORA[name]
    package = f"Debian package `{corpus.package}`" if corpus.package else "the standard library of the running CPython"
    chars = sum(len(r["text"]) for r in records)
    return (f"# {name}\n\n- Kind: {corpus.kind}\n- From: {package}, version {version}\n- License: {corpus.license}\n"
            f"- Documents: {len(records):,} ({chars:,} characters): {corpus.cut}\n"
            f"- Made by: `python -m smolhub_hub.data.packaged {name} OUT` (smolhub_hub/data/packaged.py says how "
            "markup is turned into text)\n")


@exit_on_user_error
def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m smolhub_hub.data.packaged",
                                description="Turn text shipped in a package into a local dataset (NAME.jsonl + "
                                            "SOURCE.md) for --dataset.")
    p.add_argument("name", choices=sorted(CORPORA), help="the corpus")
    p.add_argument("out", type=Path, help="folder for NAME.jsonl and SOURCE.md (e.g. data/python-docs)")
    p.add_argument("--root", type=Path, default=None,
                   help="a folder holding the package's files (default: the system's, else downloaded with apt-get)")
    args = p.parse_args(argv)
    path = build(args.name, args.out, args.root)
    print(f"wrote {path} and {args.out / 'SOURCE.md'}")


if __name__ == "__main__":
    main()
