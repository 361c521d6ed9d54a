"""Student / first-stage interpolation of the rerank recipe (`eval.interpolate`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multiteacher.config import load_config
from multiteacher.recipes.rerank.evaluation import interpolate, pick_interpolation
from multiteacher.runs import execute_run
from tests.conftest import REPO, require_data

TINY = REPO / "recipes" / "rerank-trecdl-tiny.yaml"


def test_interpolate_golden() -> None:
    # per-query z-scores (population std): student a=+1, b=-1; first stage a=-1, b=+1, c=+0 ... by hand
    student = {"q": {"a": 1.0, "b": 0.0}}
    first = {"q": {"a": 0.0, "b": 3.0, "x": 9.0}}  # x is not a candidate of the student: ignored
    assert interpolate(student, first, 0.75)["q"] == pytest.approx({"a": 0.5, "b": -0.5})
    assert interpolate(student, first, 0.0)["q"] == pytest.approx({"a": -1.0, "b": 1.0})
    qrels = {"q": {"b": 1}}
    # alpha 1 ranks a first (RR 0.5), alpha 0 ranks b first (RR 1); ties would go to the larger weight
    assert pick_interpolation([(student, first, qrels)], [1.0, 0.0], "RR@10") == (0.0, 1.0)
    assert pick_interpolation([(student, student, qrels)], [0.0, 1.0], "RR@10") == (1.0, 0.5)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_interpolated_rows_at_the_ends(alpha: float, data_dir: Path, tmp_path: Path) -> None:
    require_data(data_dir, "trec-dl", "dl19")
    cfg = load_config(TINY, overrides=[f"eval.interpolate=[{alpha}]", "fit.max_steps=6", "fit.val_every=6"])
    execute_run(cfg, tmp_path / "run", data_dir=data_dir, cache_dir=tmp_path / "cache")
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["metrics"]["eval/interpolation_alpha"] == alpha
    rows = {(r["split"], r["system"]): r for r in res["rows"]}
    # alpha 0 is the first stage alone, alpha 1 the student alone (ranks equal, so every measure is equal)
    ref = rows[("test", "bm25")] if alpha == 0.0 else rows[("test", "student:marginmse")]
    mixed = rows[("test", "student+first_stage")]
    for m in ("nDCG@10", "RR(rel=2)@10", "AP(rel=2)"):
        assert mixed[m] == pytest.approx(ref[m], abs=1e-12)
    assert mixed["alpha"] == alpha
