"""Training progress: tqdm's bar on a terminal; plain lines (no carriage returns) in a log file."""

from __future__ import annotations

import io
import sys

from smolhub_hub.training.engine import _progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _train(bar, steps=20, log_interval=5):
    """What the engine does with the bar: update each step, set_postfix each logged step, write evaluations."""
    for step in range(1, steps + 1):
        bar.update(1)
        if step % log_interval == 0:
            bar.set_postfix(loss=f"{1 / step:.3f}")
        if step == 10:
            bar.write("step 10: held-out loss 0.1000")
    bar.close()


def test_in_a_log_file_a_plain_line_per_logged_step(capsys):
    _train(_progress(20, 0, disable=False))  # pytest's captured stdout and stderr are not terminals
    out, err = capsys.readouterr()
    assert "\r" not in out + err and err == ""
    lines = out.splitlines()
    for step in (5, 10, 15, 20):
        assert len([line for line in lines if f"step {step}/20" in line]) == 1, lines
    assert "step 10: held-out loss 0.1000" in lines and "loss=0.050" in lines[-1]


def test_on_a_terminal_the_bar_redraws_itself(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    _train(_progress(20, 0, disable=False))
    assert "\r" in terminal.getvalue() and "20/20" in terminal.getvalue()


def test_only_the_main_process_shows_progress(capsys):
    _train(_progress(20, 0, disable=True))
    out, err = capsys.readouterr()
    assert out == "step 10: held-out loss 0.1000\n" and err == ""
