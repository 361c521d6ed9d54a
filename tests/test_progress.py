"""Progress bars: plain timed lines in a log file, the usual bar on a terminal, none when turned off."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from multiteacher.config import RecipeConfig
from multiteacher.engine.loop import FitConfig, fit
from multiteacher.errors import UserError
from multiteacher.progress import _LineWriter, progress
from multiteacher.runs import RunContext


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_work_within_one_interval_logs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTITEACHER_PROGRESS_INTERVAL", "1000")
    log = io.StringIO()
    for _ in progress(range(7), desc="label", file=log):
        pass
    assert log.getvalue() == ""  # a quick loop that ends in an error leaves the error line alone


def test_log_writer_lines_after_the_quiet_interval() -> None:
    now = [100.0]
    log = io.StringIO()
    writer = _LineWriter(log, quiet_s=30.0, clock=lambda: now[0])
    writer.write("\rx:   0%|     | 0/9 [00:00<?, ?it/s]")
    now[0] = 131.0
    writer.write("\rx:  44%|##   | 4/9 [00:31<00:39, 0.13it/s, loss=0.5]")
    writer.write("\r")  # tqdm clearing a line
    now[0] = 170.0
    writer.write("\rx: 100%|#####| 9/9 [01:10<00:00, 0.13it/s]")
    writer.write("\rx: 100%|####| 9/9 [01:10<00:00, 0.128it/s]")  # close() redraws the last count (narrower bar)
    assert log.getvalue() == ("x:  44%|##   | 4/9 [00:31<00:39, 0.13it/s, loss=0.5]\n"
                              "x: 100%|#####| 9/9 [01:10<00:00, 0.13it/s]\n")


def test_interval_zero_logs_every_count_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTITEACHER_PROGRESS_INTERVAL", "0")
    log = io.StringIO()
    for _ in progress(range(3), desc="x", file=log):
        pass
    counts = [ln.split(" [")[0].split("| ")[-1] for ln in log.getvalue().splitlines()]
    assert counts == ["0/3", "1/3", "2/3", "3/3"]  # close() redraws 3/3: written once


def test_terminal_keeps_the_redrawn_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTITEACHER_PROGRESS_INTERVAL", "1000")  # ignored on a terminal
    term = FakeTerminal()
    for _ in progress(range(3), desc="x", file=term):
        pass
    assert term.getvalue().startswith("\r") and "3/3" in term.getvalue()


@pytest.mark.parametrize("how", ["argument", "env"])
def test_turned_off(monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    if how == "env":
        monkeypatch.setenv("MULTITEACHER_PROGRESS", "0")
    log = io.StringIO()
    assert list(progress(range(3), file=log, enabled=how != "argument")) == [0, 1, 2]
    assert log.getvalue() == ""


def test_fit_in_a_log_file_reports_its_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A fit under nohup/SLURM (stderr not a terminal) logs its step count and loss, not nothing."""
    monkeypatch.setenv("MULTITEACHER_PROGRESS_INTERVAL", "0")
    torch.manual_seed(0)
    ds = TensorDataset(torch.randn(32, 3), torch.randn(32, 1))
    m = nn.Linear(3, 1)
    ctx = RunContext(run_dir=tmp_path, data_dir=tmp_path, cache_dir=tmp_path,
                     config=RecipeConfig(recipe="example", name="t", seed=0))
    cfg = FitConfig(max_steps=4, batch_size=8, lr=0.01, log_every=2)
    fit(ctx, "lin", m, ds, lambda mod, b: {"loss": nn.functional.mse_loss(mod(b[0]), b[1])}, cfg)
    fit_lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("fit lin:")]
    assert [ln.split(" [")[0].split("| ")[-1] for ln in fit_lines] == ["0/4", "1/4", "2/4", "3/4", "4/4"]
    assert "loss=" in fit_lines[-1]


@pytest.mark.parametrize("value", ["soon", "-5", "nan"])
def test_bad_interval_is_one_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MULTITEACHER_PROGRESS_INTERVAL", value)
    with pytest.raises(UserError, match=rf"^MULTITEACHER_PROGRESS_INTERVAL='{value}': give the seconds"):
        progress(range(3), file=io.StringIO())
