"""What every stage of both pipelines shares: its folder's record, its inputs' identity, stopping on a signal.

Each stage writes `stage.json` in its output folder before anything else:
{"stage": ..., "done": false, "settings": {...}}. The settings are the resolved arguments that change the
stage's result plus the fingerprints of its inputs (an upstream model's weights, a data file), so a stage
whose upstream was redone sees different settings. `done` becomes true only when the output is complete.
Running a stage on its folder again:

- same settings, finished:   the run is reused (even with --overwrite: nothing would change);
- same settings, unfinished: it resumes from its last checkpoint;
- other settings:            refused, naming what differs, unless --overwrite (then the folder is cleared)
                             or the run stopped before writing anything but its record.

Nothing is written before the stage has loaded its inputs (`claim` decides, `begin` writes), so a bad input
leaves no folder behind.

A stop signal (SIGTERM from a scheduler, Ctrl-C, SIGHUP) never marks a stage finished: a training loop
saves a checkpoint after its current step, anything else stops at once (its outputs are written atomically
or redone), and the command ends with one line saying how to continue, exit code 128 + the signal number.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

from smolhub_hub.errors import UserError

MARKER = "stage.json"
FRESH, RESUME, REUSE = "fresh", "resume", "reuse"


def write_atomic(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so an interruption never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_marker(out: str | Path) -> dict | None:
    path = Path(out) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def write_marker(out: str | Path, marker: dict) -> None:
    write_atomic(Path(out) / MARKER, json.dumps(marker, indent=2) + "\n")


def mark_done(out: str | Path, summary: dict) -> None:
    write_marker(out, {**read_marker(out), "done": True, "summary": summary})


def reused(out: str | Path, stage: str) -> dict:
    """The summary of a finished run that a rerun with the same settings keeps."""
    print(f"{stage}: reusing the finished run in {out} (same settings and inputs)", flush=True)
    return read_marker(out)["summary"]


def fingerprint(source: str, patterns: tuple[str, ...]) -> str:
    """sha256 of a local file, or of a folder's files matching `patterns` (glob, `**/` for subfolders);
    a Hub id or a built-in name ('synthetic') stands for itself."""
    path = Path(source)
    if not path.exists():
        return source
    files = [path] if path.is_file() else sorted(
        {f for pattern in patterns for f in path.glob(pattern)
         if f.is_file() and f.name != MARKER and not any(part.startswith(".") for part in f.relative_to(path).parts)})
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_fingerprint(model: str) -> str:
    """sha256 of a local model folder's weights (a Hub id stands for itself)."""
    return fingerprint(model, ("*.safetensors",))


def write_folder_once(folder: Path, write) -> Path:
    """`write(tmp)` fills a temporary folder that then becomes `folder`, unless that exists already:
    an interruption never leaves half of one."""
    if not folder.exists():
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        write(tmp)
        tmp.rename(folder)
    return folder


def _shown(value) -> str:
    if isinstance(value, str) and len(value) == 64 and set(value) <= set("0123456789abcdef"):
        return value[:12] + "…"  # a fingerprint: its start is enough
    return json.dumps(value)


def describe_changes(saved: dict, requested: dict, limit: int = 6) -> str:
    """'lr 0.002 → 0.001, steps 120 → 50' for every setting that differs."""
    missing = object()
    keys = sorted(k for k in saved.keys() | requested.keys() if saved.get(k, missing) != requested.get(k, missing))
    parts = [f"{k} {_shown(saved.get(k))} → {_shown(requested.get(k))}" for k in keys[:limit]]
    return ", ".join(parts) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def check_output_folder(out: Path, flag: str) -> None:
    """A folder that is, or can be made, writable: not a file, not under a file, not read-only."""
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{flag} {out}: {existing} is a file; give a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {out}: {existing} is not writable; give a folder you can write to.")


def claim(out: Path, stage: str, settings: dict, *, overwrite: bool, flag: str) -> str:
    """What to do with `out` for this stage: FRESH (start: call `begin` once the inputs are loaded), RESUME
    (unfinished, same settings) or REUSE (finished, same settings). Writes nothing; refusals raise UserError."""
    check_output_folder(out, flag)
    marker = read_marker(out)
    if marker is None:
        if out.exists() and any(out.iterdir()):
            raise UserError(f"{flag} {out} is not empty and was not made by {stage}; use a new folder.")
        return FRESH
    if marker.get("stage") != stage:
        raise UserError(f"{flag} {out} holds a '{marker.get('stage')}' run; {stage} will not write there. "
                        "Use another folder.")
    if marker.get("settings") == json.loads(json.dumps(settings)):  # compared as stored (tuples become lists)
        return REUSE if marker.get("done") else RESUME
    if not overwrite and (marker.get("done") or [p.name for p in out.iterdir()] != [MARKER]):
        state = "a finished" if marker.get("done") else "an unfinished"
        raise UserError(f"{flag} {out} holds {state} {stage} run made with other settings "
                        f"({describe_changes(marker.get('settings') or {}, settings)}); add --overwrite to redo "
                        f"this stage, or use another {flag}.")
    return FRESH  # --overwrite, or a run that stopped before doing any work: nothing of value is lost


def begin(out: Path, stage: str, settings: dict) -> None:
    """Start a FRESH run in `out`: an older run of this stage there (see `claim`) is cleared first."""
    marker = read_marker(out)
    if marker is not None:
        changes = describe_changes(marker.get("settings") or {}, settings) or "an unfinished run with nothing to resume"
        print(f"clearing {out} ({changes})", flush=True)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, {"stage": stage, "done": False, "settings": settings})


# --- stopping on a signal --------------------------------------------------------------------------------

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StageInterrupted(Exception):
    """A stage stopped by a signal: nothing is marked finished, and the same command continues it."""

    def __init__(self, signum: int, detail: str = ""):
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}{detail}")


@contextlib.contextmanager
def _signal_handlers(handler):
    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _raise_interrupted(signum, _frame):
    raise StageInterrupted(signum)


class StopRequests:
    """Inside `with StopRequests() as stop:` a stop signal only sets `stop.signum`: the training loop ends its
    step, saves a checkpoint and calls `stop.interrupt(...)`. A second signal stops at once."""

    def __init__(self):
        self.signum = None
        self._handlers = _signal_handlers(self._request)

    def _request(self, signum, _frame):
        if self.signum is not None:
            raise StageInterrupted(signum, " (again, before the checkpoint; the previous one is kept)")
        self.signum = signum

    def __enter__(self):
        self._handlers.__enter__()
        return self

    def __exit__(self, *exc):
        return self._handlers.__exit__(*exc)

    def interrupt(self, detail: str):
        raise StageInterrupted(self.signum, detail)


def _command_line(fn, argv) -> str:
    module = sys.modules[fn.__module__]
    name = module.__spec__.name if module.__spec__ else module.__name__  # `python -m x` runs x as __main__
    return shlex.join(["python", "-m", name, *(sys.argv[1:] if argv is None else argv)])


def stage_main(fn):
    """A command's entry point: a UserError prints one line and exits 2; a stop signal ends in one line naming
    the command that continues the run, exit 128 + the signal number."""

    @functools.wraps(fn)
    def main(argv=None):
        try:
            with _signal_handlers(_raise_interrupted):
                return fn(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except StageInterrupted as e:
            print(f"{e}; finished work is kept. To continue, rerun: {_command_line(fn, argv)}", file=sys.stderr)
            sys.exit(e.exit_code)

    return main
