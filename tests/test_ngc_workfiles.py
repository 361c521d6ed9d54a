"""Issue 15, defect 5: NGC's work files in the cache (predictions, pseudo-labels, masks) are verified.

Each is written with a checksum sidecar (SHA-256 hashed while writing) and verified before use; what
is missing or damaged is recomputed. A tiny run killed after generation 0 whose pseudo-label file is
overwritten (same size), or whose non-first node's mask is deleted, resumes to the results of an
untouched run; a deleted generation-0 prediction read by the self-training control is written again
from its edge's checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from multiteacher.recipes.ngc import edges as E

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "recipes" / "ngc-scenes-tiny.yaml")
# 16 edges per generation; self-training retrains the 4 direct edges once
SMALL = ["--set", "generations=1", "edge.max_steps=5", "controls.self_training=true", "controls.seed_ensemble=false"]
GEN1_FIRST_EDGE = "ngc/edge_trained@17"  # generation 0 (and its consensus) done, generation 1 started
SELF1_FIRST_EDGE = "ngc/edge_trained@33"  # generations 0 and 1 done, self-training started


# ----------------------------------------------------------------------------- units


def test_sidecar_written_with_the_file_and_verify_catches_damage(tmp_path: Path) -> None:
    a = tmp_path / "a.npy"
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    E.write_npy(a, (3, 4), np.float32, [x[:2], x[2:]])
    info = json.loads(E.sidecar(a).read_text())
    raw = a.read_bytes()
    import hashlib

    assert info == {"file": "a.npy", "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
                    "shape": [3, 4], "dtype": "<f4"}
    assert E.verify_npy(a)
    with open(a, "r+b") as f:  # same size, one value changed
        f.seek(len(raw) - 4)
        f.write(np.float32(-1).tobytes())
    assert a.stat().st_size == len(raw) and not E.verify_npy(a)
    E.write_npy(a, (3, 4), np.float32, [x])
    assert E.verify_npy(a)
    E.sidecar(a).unlink()  # a file without its sidecar is not trusted
    assert not E.verify_npy(a)
    E.write_npy(a, (3, 4), np.float32, [x])
    a.unlink()
    assert not E.verify_npy(a)


def test_edge_job_rewrites_damaged_predictions_from_its_checkpoint(tmp_path: Path) -> None:
    from multiteacher.recipes.ngc.config import EdgeFitConfig, default_nodes

    nodes = {k: v.model_dump() for k, v in default_nodes().items()}
    rng = np.random.default_rng(0)
    n, r = 6, 16
    np.save(tmp_path / "rgb.npy", rng.integers(0, 256, (n, r, r, 3), np.uint8))
    np.save(tmp_path / "depth.npy", rng.uniform(0.5, 4, (n, r, r)).astype(np.float32))
    work = tmp_path / "work"
    spec = {"id": "gen0/rgb>depth",
            "inputs": [{"node": "rgb", "train": {"path": str(tmp_path / "rgb.npy"), "layout": "label"},
                        "test": {"path": str(tmp_path / "rgb.npy"), "layout": "label"}}],
            "target": {"node": "depth", "path": str(tmp_path / "depth.npy"), "layout": "label"},
            "nodes": nodes, "labelled": list(range(n)), "unlabelled": [],
            "fit": EdgeFitConfig(max_steps=3, batch_size=4, width=4, depth=2).model_dump(), "seed": 1, "init": None,
            "ckpt": str(tmp_path / "ckpt" / "rgb-to-depth.pt"), "pred_train": str(work / "p.train.npy"),
            "pred_test": str(work / "p.test.npy"), "work": str(work)}
    torch.set_num_threads(1)
    assert E.edge_job(spec)["skipped"] is False
    first = {k: np.load(spec[k]) for k in ("pred_train", "pred_test")}
    assert E.done(spec) and E.edge_job(spec) == {"id": spec["id"], "skipped": True}
    Path(spec["pred_test"]).unlink()
    with open(spec["pred_train"], "r+b") as f:  # damaged at the same size
        f.seek(-2, os.SEEK_END)
        f.write(b"\x00\x7c")
    assert not E.done(spec)
    out = E.edge_job(spec)
    assert out == {"id": spec["id"], "skipped": True, "repredicted": True}  # from the checkpoint, not retrained
    for k, v in first.items():
        assert np.array_equal(np.load(spec[k]), v) and E.verify_npy(spec[k])
    # a damaged work input is refused with one line naming it
    spec2 = {**spec, "id": "gen0/depth>x", "pred_train": str(work / "q.train.npy"),
             "pred_test": str(work / "q.test.npy"), "ckpt": str(tmp_path / "ckpt" / "q.pt"),
             "inputs": [{"node": "depth", "train": {"path": spec["pred_train"], "layout": "pred"},
                         "test": {"path": spec["pred_test"], "layout": "pred"}}]}
    E.sidecar(spec["pred_test"]).unlink()
    with pytest.raises(Exception, match=r"p\.test\.npy is missing or damaged"):
        E.edge_job(spec2)


# ----------------------------------------------------------------------------- whole runs (killed and resumed)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "multiteacher.cli", "run", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "MULTITEACHER_CACHE": str(root / "cache"), "MULTITEACHER_DATA": str(root),
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, float]:
    root = tmp_path_factory.mktemp("ngc_ref")
    done = _run([TINY, "--run-dir", str(root / "ref"), *SMALL], _env(root))
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((root / "ref" / "results.json").read_text())["metrics"]


def _killed(root: Path, at: str) -> Path:
    """A run SIGKILLed at `at`; returns its work folder in the cache."""
    killed = _run([TINY, "--run-dir", str(root / "run"), *SMALL], {**_env(root), "MULTITEACHER_KILL_AT": at})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (root / "run" / "stages" / "ngc_gen0.json").exists() and not (root / "run" / "results.json").exists()
    (work,) = (root / "cache" / "ngc").iterdir()
    return work


def _resume_equals(root: Path, reference: dict[str, float]) -> None:
    resumed = _run(["--resume", str(root / "run")], _env(root))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    got = json.loads((root / "run" / "results.json").read_text())["metrics"]
    assert got.keys() == reference.keys()
    for k, v in reference.items():
        assert got[k] == pytest.approx(v, rel=1e-6, abs=1e-9, nan_ok=True), k


@pytest.mark.slow
def test_overwritten_pseudo_label_is_detected_and_recomputed(tmp_path: Path, reference: dict[str, float]) -> None:
    work = _killed(tmp_path, GEN1_FIRST_EDGE)
    f = work / "gen0" / "pseudo" / "depth.train.npy"
    good = np.load(f)
    arr = np.load(f, mmap_mode="r+")  # overwrite in place: same size, same header, other values
    arr[:] = 1.0
    arr.flush()
    del arr
    assert not E.verify_npy(f)
    _resume_equals(tmp_path, reference)
    assert np.array_equal(np.load(f), good) and E.verify_npy(f)  # recomputed to the same consensus


@pytest.mark.slow
def test_deleted_non_first_node_file_resumes(tmp_path: Path, reference: dict[str, float]) -> None:
    work = _killed(tmp_path, GEN1_FIRST_EDGE)
    masks = sorted((work / "gen0" / "pseudo").glob("*.mask.npy"))
    victim = next(p for p in masks if not p.name.startswith("depth."))  # depth is the first output node
    victim.unlink()
    (work / "gen0" / "pseudo" / "semantic.train.npy").unlink()
    _resume_equals(tmp_path, reference)
    assert E.verify_npy(victim)


@pytest.mark.slow
def test_deleted_prediction_read_by_a_control_is_rewritten(tmp_path: Path, reference: dict[str, float]) -> None:
    work = _killed(tmp_path, SELF1_FIRST_EDGE)
    pred = work / "gen0" / "pred" / "rgb-to-normals.train.npy"
    good = np.load(pred)
    pred.unlink()
    _resume_equals(tmp_path, reference)
    assert np.array_equal(np.load(pred), good)
