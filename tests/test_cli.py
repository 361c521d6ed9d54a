"""CLI: run / resume / eval / report / data, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from multiteacher.cli import main
from multiteacher.io import leftover_temp_files
from multiteacher.runs import comparable_results

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "example-tiny.yaml")
FAST = ["teacher_fit.max_steps=60", "student_fit.max_steps=60", "teacher_fit.val_every=20", "student_fit.val_every=20"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "multiteacher.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, cwd=REPO, timeout=300)


def test_run_eval_report_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "r"
    assert main(["run", TINY, "--run-dir", str(run), "--set", *FAST]) == 0
    res = json.loads((run / "results.json").read_text())
    assert res["config_hash"] and res["commit"] and res["seed"] == 0 and res["wall_time_s"] > 0
    assert (run / "report.md").read_text().startswith("# Run") and list((run / "plots").glob("*.png"))
    assert (run / "config.yaml").exists()
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    ev = json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")
    assert ev["teacher/test_acc"] == pytest.approx(res["metrics"]["teacher/test_acc"])
    # a second seed, then a report over both
    run2 = tmp_path / "r2"
    assert main(["run", TINY, "--run-dir", str(run2), "--set", *FAST, "seed=1"]) == 0
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- results:ex -->\nSTALE\n<!-- /results:ex -->\ny\n")
    assert main(["report", str(run), str(run2 / "results.json"), "--out", str(tmp_path / "t.md"),
                 "--readme", str(readme), "--marker", "ex"]) == 0
    table = (tmp_path / "t.md").read_text()
    assert "student_kd" in table and "±" in table and "n=2" in table
    assert "STALE" not in readme.read_text() and "student_kd" in readme.read_text()
    # resuming a finished run re-creates the same results
    assert main(["run", "--resume", str(run)]) == 0
    again = json.loads((run / "results.json").read_text())
    assert comparable_results(again) == comparable_results(res) and again["sessions"] == 2


@pytest.mark.parametrize("args,match", [
    (["run", "nope.yaml"], "config file not found"),
    (["run", TINY, "--set", "teacher_fit.lrr=1"], "unknown key 'teacher_fit.lrr'"),
    (["run", TINY, "--set", "data.n_train=-1"], "data.n_train"),
    (["run"], "give a CONFIG"),
    (["run", "--resume", "/nonexistent/run"], "no config.yaml"),
    (["eval", "/nonexistent/run"], "no config.yaml"),
    (["report", "/nonexistent/run"], "no results.json|no run here"),
    (["report", TINY, "--readme", "x.md"], "not valid JSON|--marker"),
    (["data", "check", "no-such-set"], "unknown dataset"),
])
def test_user_errors_exit_2_one_line(args: list[str], match: str, capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    import re

    assert re.search(match, err), err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_existing_run_dir_is_not_clobbered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "r"
    run.mkdir()
    (run / "keep.txt").write_text("mine")
    assert main(["run", TINY, "--run-dir", str(run)]) == 2
    assert "--resume" in capsys.readouterr().err and (run / "keep.txt").read_text() == "mine"


def test_resume_with_different_config_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "r"
    assert main(["run", TINY, "--run-dir", str(run), "--set", *FAST]) == 0
    assert main(["run", TINY, "--resume", str(run), "--set", "seed=5"]) == 2
    assert "differs" in capsys.readouterr().err


def test_data_list() -> None:
    r = cli("data", "list")
    assert r.returncode == 0, r.stderr


def test_subprocess_bad_config_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: example\nname: x\nteacher_fit: {max_steps: many}\n")
    r = cli("run", str(bad), "--run-dir", str(tmp_path / "run"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "teacher_fit.max_steps" in r.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("point", ["fit/step@130", "fit/checkpoint_write@3", "stage/none", "run/before_results"])
def test_sigkill_then_resume_gives_identical_results(tmp_path: Path, point: str) -> None:
    ref = tmp_path / "ref"
    assert cli("run", TINY, "--run-dir", str(ref)).returncode == 0
    run = tmp_path / "k"
    r = cli("run", TINY, "--run-dir", str(run), env={"MULTITEACHER_KILL_AT": point})
    if point != "stage/none":
        assert r.returncode == -9, r.stderr[-2000:]
        assert not (run / "results.json").exists()
        r = cli("run", "--resume", str(run))
    assert r.returncode == 0, r.stderr[-2000:]
    a = comparable_results(json.loads((ref / "results.json").read_text()))
    b = comparable_results(json.loads((run / "results.json").read_text()))
    assert a == b
    assert leftover_temp_files(run) == []
