"""NGC on your own data: a Dronescapes-style npz folder written by the test."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from multiteacher.recipes.ngc.config import Config
from multiteacher.runs import execute_run


def _write(root: Path, n: int = 40) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        depth = 1.0 + rgb.mean(-1, dtype=np.float32) / 128.0
        for rep, arr in {"rgb": rgb, "depth": depth[..., None], "seg": (depth > 2.0).astype(np.uint8)}.items():
            (root / rep).mkdir(parents=True, exist_ok=True)
            np.savez_compressed(root / rep / f"{i:04d}.npz", arr)


def test_ngc_runs_on_an_npz_folder(tmp_path: Path) -> None:
    _write(tmp_path / "data" / "mine")
    cfg = Config(
        name="npz", npz={"root": "mine", "group": 4, "test_every": 5}, labelled_fraction=0.3,
        nodes={"rgb": {"kind": "input", "channels": 3, "loss": "none"},
               "depth": {"kind": "continuous", "channels": 1, "metric": "depth"},
               "semantic": {"kind": "categorical", "source": "seg", "channels": 2, "loss": "ce",
                            "metric": "semantic"}},
        edge={"max_steps": 10, "batch_size": 4, "width": 4, "depth": 2}, generations=1,
        controls={"self_training": False, "seed_ensemble": False}, executor={"backend": "inline"},
        example_frames=1,
    )
    res = execute_run(cfg, tmp_path / "run", tmp_path / "data", tmp_path / "cache")
    got = {(r["node"], r["generation"], r["predictor"]) for r in res["rows"]}
    assert ("depth", "1", "rgb>semantic>depth") in got and ("semantic", "1", "consensus") in got
    assert all(math.isfinite(v) for v in res["metrics"].values())
