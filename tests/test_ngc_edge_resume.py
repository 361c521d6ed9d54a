"""A killed NGC edge job continues from its fit loop's resume point and ends with the same weights.

Edges train with the engine's `fit` (checkpoint folder `<ckpt>.fit/`, resume point `last.pt` every
`edge.ckpt_every` steps); the kill point inside an edge is the fit loop's `fit/step` (it was
`ngc/edge_step` when edges had their own loop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from multiteacher import killpoints
from multiteacher.recipes.ngc import edges as E
from multiteacher.recipes.ngc.config import EdgeFitConfig, default_nodes


class Killed(Exception):
    pass


def _spec(tmp: Path, name: str, every: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    n, hw = 12, 16
    rgb = rng.integers(0, 255, (n, hw, hw, 3), dtype=np.uint8)
    depth = (rgb[..., 0] / 64.0 + rng.normal(0, 0.1, (n, hw, hw))).astype(np.float32)
    np.save(tmp / "rgb.npy", rgb)
    np.save(tmp / "depth.npy", depth)
    ref = {"rgb": {"path": str(tmp / "rgb.npy"), "layout": "label"},
           "depth": {"path": str(tmp / "depth.npy"), "layout": "label"}}
    fit = EdgeFitConfig(max_steps=7, batch_size=4, width=4, depth=2, ckpt_every=every).model_dump()
    return {
        "id": name, "inputs": [{"node": "rgb", "train": ref["rgb"], "test": ref["rgb"]}],
        "target": {"node": "depth", **ref["depth"]},
        "nodes": {k: v.model_dump() for k, v in default_nodes().items()},
        "labelled": list(range(6)), "unlabelled": list(range(6, n)), "fit": fit, "seed": 3, "init": None,
        "ckpt": str(tmp / name / "edge.pt"), "pred_train": str(tmp / name / "train.npy"),
        "pred_test": str(tmp / name / "test.npy"),
    }


def _kill_at(monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    def die() -> None:
        raise Killed

    monkeypatch.setattr(killpoints, "_die", die)
    monkeypatch.setenv("MULTITEACHER_KILL_AT", point)
    killpoints.reset()


def _weights(spec: dict[str, Any]) -> dict[str, torch.Tensor]:
    return torch.load(spec["ckpt"], weights_only=True)["model"]


@pytest.mark.parametrize("kill_after", [1, 2, 3, 6, 7])
def test_killed_edge_resumes_mid_edge_bit_for_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  kill_after: int) -> None:
    ref = _spec(tmp_path, "ref", every=2)
    ref_out = E.edge_job(ref)
    spec = _spec(tmp_path, "killed", every=2)
    _kill_at(monkeypatch, f"fit/step@{kill_after}")
    with pytest.raises(Killed):
        E.edge_job(spec)
    # fit/step fires after each step, before that step's checkpoint: resume points after steps 2, 4, 6
    resume = (kill_after - 1) // 2 * 2
    last = Path(spec["ckpt"] + ".fit") / "last.pt"
    assert last.exists() == (resume > 0)
    if last.exists():
        assert torch.load(last, weights_only=False)["state"]["step"] == resume
    _kill_at(monkeypatch, "fit/never")  # counts the steps the second session runs, kills nowhere
    out = E.edge_job(spec)
    assert killpoints._hits["fit/step"] == 7 - resume  # continued from the resume point, not from step 0
    killpoints.reset()
    assert not out["skipped"] and not last.parent.exists()  # the fit folder is dropped once the edge is done
    assert out["final_loss"] == ref_out["final_loss"]
    a, b = _weights(ref), _weights(spec)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.array_equal(np.load(ref["pred_test"]), np.load(spec["pred_test"]))


def test_killed_after_the_fit_reuses_its_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _spec(tmp_path, "ref", every=2)
    E.edge_job(ref)
    spec = _spec(tmp_path, "killed", every=2)
    _kill_at(monkeypatch, "ngc/edge_trained")
    with pytest.raises(Killed):
        E.edge_job(spec)
    assert (Path(spec["ckpt"] + ".fit") / "done.json").exists() and not Path(spec["ckpt"]).exists()
    _kill_at(monkeypatch, "fit/never")
    E.edge_job(spec)
    assert killpoints._hits["fit/step"] == 0  # no step trained again
    killpoints.reset()
    a, b = _weights(ref), _weights(spec)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.array_equal(np.load(ref["pred_train"]), np.load(spec["pred_train"]))


def test_ckpt_every_zero_writes_no_resume_point_and_trains_the_same(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _spec(tmp_path, "ref", every=2)
    E.edge_job(ref)
    plain = _spec(tmp_path, "plain", every=0)
    _kill_at(monkeypatch, "fit/step@7")
    with pytest.raises(Killed):
        E.edge_job(plain)
    assert not (Path(plain["ckpt"] + ".fit") / "last.pt").exists()  # every=2 would have one from step 6
    _kill_at(monkeypatch, "fit/never")
    E.edge_job(plain)
    assert killpoints._hits["fit/step"] == 7  # started over
    killpoints.reset()
    a, c = _weights(ref), _weights(plain)
    assert all(torch.equal(a[k], c[k]) for k in a)


def test_edge_batches_follow_the_old_labelled_share_draws() -> None:
    """The sampler reproduces the old private loop's draws: per step, rng.choice(labelled, n_lab)
    then rng.choice(unlabelled, B - n_lab) from one default_rng(seed)."""
    from multiteacher.engine.sampling import MixtureBatchSampler

    lab, unl, bsz, n_lab, steps = np.arange(6), np.arange(6, 12), 4, 2, 5
    rng = np.random.default_rng(3)
    old = [np.concatenate([rng.choice(lab, n_lab), rng.choice(unl, bsz - n_lab)]).tolist() for _ in range(steps)]
    assert MixtureBatchSampler([lab, unl], [n_lab, bsz - n_lab], steps, seed=3).epoch_batches() == old


def test_edge_job_in_a_worker_process_equals_inline(tmp_path: Path) -> None:
    """The fit loop runs inside an executor worker process (LocalContext, pinned threads): same weights."""
    from multiteacher.engine.executor import Job, run_jobs

    ref = _spec(tmp_path, "ref", every=2)
    E.edge_job(ref)
    spec = _spec(tmp_path, "worker", every=2)
    [res] = run_jobs([Job(spec["id"], E.edge_job, {"spec": spec})], backend="process", workers=1, progress=False)
    assert res.unwrap()["skipped"] is False
    a, b = _weights(ref), _weights(spec)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.array_equal(np.load(ref["pred_test"]), np.load(spec["pred_test"]))
