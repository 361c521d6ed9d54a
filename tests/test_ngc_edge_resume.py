"""A killed NGC edge job continues from its `.partial` resume point and ends with the same weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

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
    fit = EdgeFitConfig(steps=7, batch_size=4, width=4, depth=2, checkpoint_every=every).model_dump()
    return {
        "id": name, "inputs": [{"node": "rgb", "train": ref["rgb"], "test": ref["rgb"]}],
        "target": {"node": "depth", **ref["depth"]},
        "nodes": {k: v.model_dump() for k, v in default_nodes().items()},
        "labelled": list(range(6)), "unlabelled": list(range(6, n)), "fit": fit, "seed": 3, "init": None,
        "ckpt": str(tmp / name / "edge.pt"), "pred_train": str(tmp / name / "train.npy"),
        "pred_test": str(tmp / name / "test.npy"),
    }


@pytest.mark.parametrize("kill_after", [1, 2, 5, 6])
def test_killed_edge_resumes_mid_edge_bit_for_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  kill_after: int) -> None:
    ref = _spec(tmp_path, "ref", every=2)
    ref_out = E.train_edge(ref)
    spec = _spec(tmp_path, "killed", every=2)
    hits = {"n": 0}

    def die(name: str) -> None:
        if name == "ngc/edge_step":
            hits["n"] += 1
            if hits["n"] == kill_after:
                raise Killed

    monkeypatch.setattr(E, "killpoint", die)
    with pytest.raises(Killed):
        E.train_edge(spec)
    partial = Path(spec["ckpt"] + ".partial")
    assert partial.exists() == (kill_after >= 2)  # resume points after steps 2, 4, 6 (not the last, 7)
    if partial.exists():
        assert torch.load(partial, weights_only=True)["step"] == kill_after // 2 * 2
    steps_run: list[str] = []
    monkeypatch.setattr(E, "killpoint", lambda name: steps_run.append(name) if name == "ngc/edge_step" else None)
    out = E.train_edge(spec)
    assert not out["skipped"] and not partial.exists()
    assert len(steps_run) == 7 - kill_after // 2 * 2  # it continued from the resume point, not from step 0
    assert out["final_loss"] == ref_out["final_loss"]
    a = torch.load(ref["ckpt"], weights_only=True)["model"]
    b = torch.load(spec["ckpt"], weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.array_equal(np.load(ref["pred_test"]), np.load(spec["pred_test"]))


def test_checkpoint_every_zero_writes_no_resume_point_and_trains_the_same(tmp_path: Path) -> None:
    ref, plain = _spec(tmp_path, "ref", every=2), _spec(tmp_path, "plain", every=0)
    E.train_edge(ref)
    E.train_edge(plain)
    assert not Path(plain["ckpt"] + ".partial").exists()
    a = torch.load(ref["ckpt"], weights_only=True)["model"]
    c = torch.load(plain["ckpt"], weights_only=True)["model"]
    assert all(torch.equal(a[k], c[k]) for k in a)
