"""Simulated preemption for the resume tests: the N-th call of a training function sends this process a signal."""

import os
import signal


def signal_at_call(monkeypatch, owner, name: str, call: int, signum=signal.SIGTERM):
    """Patch `owner.name` so that its `call`-th call first sends `signum` to this process (as a scheduler or
    Ctrl-C would, mid-step); returns the original function."""
    original, calls = getattr(owner, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)
    return original
