"""A tiny NGC run SIGKILLed in the middle of generation 0 resumes (finished edges are skipped)
and ends with the same results as an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from multiteacher.io import leftover_temp_files

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multiteacher.cli", "run", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def test_kill_and_resume_matches_uninterrupted(tmp_path: Path) -> None:
    env = {**os.environ, "MULTITEACHER_CACHE": str(tmp_path / "cache"), "MULTITEACHER_DATA": str(tmp_path)}
    tiny = str(REPO / "recipes" / "ngc-scenes-tiny.yaml")
    small = ["--set", "generations=1", "edge.max_steps=5", "controls.self_training=false",
             "controls.seed_ensemble=false"]
    ref = _run([tiny, "--run-dir", str(tmp_path / "ref"), *small], env)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = _run([tiny, "--run-dir", str(tmp_path / "run"), *small],
                  {**env, "MULTITEACHER_KILL_AT": "ngc/edge_trained@6"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    done = list((tmp_path / "run" / "checkpoints" / "ngc" / "gen0").glob("*.pt"))
    assert len(done) == 5 and not (tmp_path / "run" / "results.json").exists()
    resumed = _run(["--resume", str(tmp_path / "run")], env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((tmp_path / "ref" / "results.json").read_text())
    b = json.loads((tmp_path / "run" / "results.json").read_text())
    assert b["metrics"].keys() == a["metrics"].keys()
    for k, v in a["metrics"].items():
        assert b["metrics"][k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    assert not leftover_temp_files(tmp_path / "run") and not leftover_temp_files(tmp_path / "cache")
