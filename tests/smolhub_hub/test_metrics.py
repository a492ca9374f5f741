"""metrics.csv survives a kill in the middle of a row: the cut row is dropped, resume and plots work."""

import pytest

from smolhub_hub.errors import UserError
from smolhub_hub.training.metrics import MetricsLog, read_metrics, series


def test_a_row_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    log = MetricsLog(tmp_path)
    log.log(10, 1280, {"train/loss": 2.5, "lr": 1e-3})
    log.log(20, 2560, {"train/loss": 2.0, "lr": 1e-3})
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("30,3840,train/lo")  # the process died here, mid-row, no newline

    assert [r["step"] for r in read_metrics(tmp_path / "metrics.csv")] == ["10", "10", "20", "20"]
    resumed = MetricsLog(tmp_path, resume_step=20)
    resumed.log(30, 3840, {"train/loss": 1.5})
    steps, values = series(tmp_path / "metrics.csv")["train/loss"]
    assert (steps, values) == ([10, 20, 30], [2.5, 2.0, 1.5])
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 6  # header + 5 complete rows


def test_resume_drops_rows_after_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path)
    for step in (10, 20, 30):
        log.log(step, step * 128, {"train/loss": 1.0 / step})
    MetricsLog(tmp_path, resume_step=20)
    assert series(tmp_path / "metrics.csv")["train/loss"][0] == [10, 20]


def test_a_header_cut_short_reads_as_empty_and_another_file_is_refused(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,tok")
    assert read_metrics(tmp_path / "metrics.csv") == []
    (tmp_path / "metrics.csv").write_text("epoch,loss\n1,2.0\n")
    with pytest.raises(UserError, match="not a SmolHub metrics file"):
        read_metrics(tmp_path / "metrics.csv")
