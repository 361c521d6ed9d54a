"""The tiny NGC recipe end to end: pseudo-labels exist, the mask keeps a share strictly between
0 and 1, every metric is finite, controls and plots are there, and a resumed run is identical."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from multiteacher.config import load_config
from multiteacher.recipes.ngc import edges as E
from multiteacher.runs import comparable_results, execute_run

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    root = tmp_path_factory.mktemp("ngc")
    cfg = load_config(REPO / "recipes" / "ngc-scenes-tiny.yaml")
    res = execute_run(cfg, root / "run", root / "data", root / "cache")
    return res, root / "run", root / "cache"


def test_pseudo_labels_mask_and_metrics(tiny) -> None:
    res, run_dir, cache = tiny
    nodes = ["depth", "normals", "semantic", "height"]
    work = next((cache / "ngc").iterdir())
    for n in nodes:
        pl = np.load(work / "gen0" / "pseudo" / f"{n}.train.npy", mmap_mode="r")
        mask = np.load(work / "gen0" / "pseudo" / f"{n}.mask.npy", mmap_mode="r")
        assert pl.shape[0] == mask.shape[0] == 30
        cov = res["metrics"][f"{n}/g0/mask_coverage"]
        assert 0 < cov < 1, (n, cov)
        assert mask.mean() > cov  # labelled frames are kept whole
    vals = list(res["metrics"].values())
    assert vals and all(math.isfinite(v) for v in vals)
    for r in res["rows"]:
        for v in r.values():
            if isinstance(v, float):
                assert math.isfinite(v), r
    preds = {(r["node"], r["generation"], r["predictor"]) for r in res["rows"]}
    for n in nodes:
        for p in ("consensus", "pseudo_label", "direct_unlabelled", f"rgb>{n}"):
            assert (n, "0", p) in preds and (n, "1", p) in preds
        assert (n, "1", "self_training") in preds and (n, "0", "seed_ensemble") in preds
    assert (run_dir / "plots" / "ngc_generations.png").stat().st_size > 0
    assert (run_dir / "plots" / "ngc_example_depth.png").exists()
    assert len(list((run_dir / "checkpoints" / "ngc" / "gen1").glob("*.pt"))) == 16


def test_resume_gives_same_results_and_jobs_skip(tiny) -> None:
    res, run_dir, cache = tiny
    cfg = load_config(REPO / "recipes" / "ngc-scenes-tiny.yaml")
    again = execute_run(cfg, run_dir, run_dir.parent / "data", cache, resume=True)
    assert comparable_results(again) == comparable_results(json.loads(json.dumps(res)))
    spec_ckpt = next((run_dir / "checkpoints" / "ngc" / "gen0").glob("rgb-to-depth.pt"))
    work = next((cache / "ngc").iterdir())
    spec = {"id": "x", "ckpt": str(spec_ckpt), "pred_train": str(work / "gen0/pred/rgb-to-depth.train.npy"),
            "pred_test": str(work / "gen0/pred/rgb-to-depth.test.npy")}
    assert E.edge_job(spec) == {"id": "x", "skipped": True}
