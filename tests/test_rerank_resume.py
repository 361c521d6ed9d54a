"""Rerank recipe: a run SIGKILLed mid-training and resumed ends with the same results as an unbroken one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, require_data

pytestmark = [pytest.mark.data, pytest.mark.slow]
SETS = ["fit.max_steps=12", "fit.val_every=6", "sampling.groups_per_query=8", "data.max_test_queries=2"]


def _cli(args: list[str], data_dir: Path, cache: Path, kill: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MULTITEACHER_DATA": str(data_dir), "MULTITEACHER_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    env.pop("MULTITEACHER_KILL_AT", None)
    if kill:
        env["MULTITEACHER_KILL_AT"] = kill
    return subprocess.run(
        [sys.executable, "-m", "multiteacher.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _metrics(run_dir: Path) -> dict:
    m = json.loads((run_dir / "results.json").read_text())["metrics"]
    return m


def test_killed_run_resumes_to_identical_results(tmp_path: Path, data_dir: Path) -> None:
    require_data(data_dir, "trec-dl", "dl21", "qrels.txt")
    cfg = str(REPO / "recipes" / "rerank-trecdl-tiny.yaml")
    a, b = tmp_path / "a", tmp_path / "b"
    r = _cli(["run", cfg, "--run-dir", str(a), "--set", *SETS], data_dir, tmp_path / "c")
    assert r.returncode == 0, r.stderr[-2000:]
    r = _cli(["run", cfg, "--run-dir", str(b), "--set", *SETS], data_dir, tmp_path / "c", kill="fit/step@8")
    assert r.returncode != 0 and not (b / "results.json").exists()
    r = _cli(["run", "--resume", str(b)], data_dir, tmp_path / "c")
    assert r.returncode == 0, r.stderr[-2000:]
    assert _metrics(a) == _metrics(b)
    assert (a / "runs" / "student-test-trec-dl_dl19.run").read_text() == (
        b / "runs" / "student-test-trec-dl_dl19.run"
    ).read_text()
