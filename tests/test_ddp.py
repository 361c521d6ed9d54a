"""Distributed: the fit loop under Fabric DDP (2 CPU processes, gloo) matches a 1-process run.

Tolerance: each rank sees half of every global batch and gradients are all-reduced (averaged),
so the 2-process run follows the same trajectory up to float summation order. We require every
final weight within 1e-4 (absolute) and every test accuracy within 0.01 of the 1-process run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "example-tiny.yaml")
FAST = ["teacher_fit.max_steps=80", "student_fit.max_steps=80", "teacher_fit.val_every=40",
        "student_fit.val_every=40"]


def run(run_dir: Path, *extra: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "multiteacher.cli", "run", TINY, "--run-dir", str(run_dir),
                        "--set", *FAST, *extra], capture_output=True, text=True, cwd=REPO, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((run_dir / "results.json").read_text())


def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    one = run(tmp_path / "one")
    two = run(tmp_path / "two", "fabric.devices=2", "fabric.strategy=ddp")
    assert one["world_size"] == 1 and two["world_size"] == 2
    for key, value in one["metrics"].items():
        assert abs(two["metrics"][key] - value) <= 0.01, key
    for fit in ("teacher", "student_ce", "student_kd"):
        a = torch.load(tmp_path / "one" / "checkpoints" / fit / "best.pt", weights_only=False)["model"]
        b = torch.load(tmp_path / "two" / "checkpoints" / fit / "best.pt", weights_only=False)["model"]
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-4, rtol=0), (fit, k, (a[k] - b[k]).abs().max())
