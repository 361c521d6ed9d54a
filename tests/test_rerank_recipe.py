"""Rerank recipe end to end on the shared TREC-DL data: the tiny twin, every objective, eval, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from multiteacher.config import load_config
from multiteacher.data.ir import read_trec_run
from multiteacher.errors import ConfigError, DataError
from multiteacher.recipes.rerank import read_val_list
from multiteacher.runs import execute_run
from tests.conftest import REPO, require_data

TINY = REPO / "recipes" / "rerank-trecdl-tiny.yaml"
pytestmark = pytest.mark.data


def _run(tmp: Path, data_dir: Path, name: str, overrides: list[str] | None = None) -> dict:
    cfg = load_config(TINY, overrides)
    return execute_run(cfg, tmp / name, data_dir, tmp / "cache")


def test_committed_configs_validate_and_val_list_is_disjoint_from_tests() -> None:
    for f in ("rerank-trecdl.yaml", "rerank-trecdl-foldb.yaml", "rerank-trecdl-tiny.yaml"):
        cfg = load_config(REPO / "recipes" / f)
        assert cfg.recipe == "rerank"
    vals = read_val_list("recipes/rerank-val-queries.txt")
    a, b = (
        load_config(REPO / "recipes" / "rerank-trecdl.yaml"),
        load_config(REPO / "recipes" / "rerank-trecdl-foldb.yaml"),
    )
    for cfg in (a, b):  # validation queries come from a training set, never from the test set
        used = {s for s, _ in vals if s in cfg.data.train}
        assert used and not used & set(cfg.data.test)
    # the recommended student trains on every shared set and validates on every committed line: no test set
    final = load_config(REPO / "recipes" / "rerank-final.yaml")
    assert final.data.test == [] and {s for s, _ in vals} == {"trec-dl/dl19", "trec-dl/dl21"}
    assert {s for s, _ in vals} < set(final.data.train)
    assert [q.max_queries for q in final.data.extra_queries] == [10000]
    with pytest.raises(ConfigError, match="monitor"):
        load_config(TINY, ["fit.monitor=val/P@5"])


def test_tiny_recipe_lowers_loss_changes_ranking_and_exports(tmp_path: Path, data_dir: Path) -> None:
    require_data(data_dir, "trec-dl", "dl21", "qrels.txt")
    res = _run(tmp_path, data_dir, "tiny")
    m = res["metrics"]
    assert m["train/probe_loss_after"] < m["train/probe_loss_before"]
    run_dir = tmp_path / "tiny"
    trained = read_trec_run(run_dir / "runs" / "student-test-trec-dl_dl19.run")
    untrained = read_trec_run(run_dir / "runs" / "untrained-test-trec-dl_dl19.run")
    assert set(trained) == set(untrained) and len(trained) == 4

    def order(r: dict) -> list[list[str]]:
        return [sorted(r[q], key=lambda d: -r[q][d]) for q in sorted(r)]

    assert order(trained) != order(untrained)
    systems = {(r["split"], r["system"]) for r in res["rows"]}
    assert {
        ("test", "bm25"),
        ("test", "teacher:fused"),
        ("test", "student:untrained"),
        ("test", "student:marginmse"),
        ("val", "student:marginmse"),
    } <= systems
    assert 0.0 <= m["test/trec-dl/dl19/nDCG@10"] <= 1.0
    per_query = json.loads((run_dir / "per_query.json").read_text())
    assert len(per_query["student"]["test"]["trec-dl/dl19"]["per_query"]["nDCG@10"]) == 4
    # `multiteacher eval RUN_DIR`: the exported student re-ranks and scores the same way
    from multiteacher.recipes.rerank import evaluate
    from multiteacher.runs import RunContext, load_run_config

    cfg = load_run_config(run_dir)
    ctx = RunContext(run_dir=run_dir, data_dir=data_dir, cache_dir=tmp_path / "cache", config=cfg)
    again = evaluate(cfg, ctx)
    assert again["trec-dl/dl19/nDCG@10"] == pytest.approx(m["test/trec-dl/dl19/nDCG@10"], abs=1e-6)
    # a finished run resumed does not train again and gives the same metrics
    res2 = execute_run(cfg, run_dir, data_dir, tmp_path / "cache", resume=True)
    assert res2["metrics"] == m


@pytest.mark.parametrize("objective", ["bce", "hinge", "infonce", "ranknet", "adrmse", "listnet"])
def test_every_objective_trains(tmp_path: Path, data_dir: Path, objective: str) -> None:
    require_data(data_dir, "trec-dl", "dl21", "qrels.txt")
    res = _run(
        tmp_path,
        data_dir,
        objective,
        [
            f"objective={objective}",
            "fit.max_steps=4",
            "fit.val_every=4",
            "eval.baselines=false",
            "eval.test=false",
            "export=false",
        ],
    )
    assert res["metrics"]["train/steps"] == 4.0
    assert torch.isfinite(torch.tensor(res["metrics"]["train/probe_loss_after"]))
    assert [r["system"] for r in res["rows"]] == [f"student:{objective}"]


def test_bad_val_list_is_one_line_error(tmp_path: Path, data_dir: Path) -> None:
    require_data(data_dir, "trec-dl", "dl21", "qrels.txt")
    bad = tmp_path / "val.txt"
    bad.write_text("trec-dl/dl21 999999999\n")
    with pytest.raises(DataError, match="999999999"):
        _run(tmp_path, data_dir, "bad", [f"data.val_queries={bad}"])
    bad.write_text("just-one-field\n")
    with pytest.raises(DataError, match="val.txt:1"):
        _run(tmp_path, data_dir, "bad2", [f"data.val_queries={bad}"])


def test_labelled_queries_drop_a_set_without_qrels(data_dir: Path) -> None:
    """`train_queries=labelled` keeps dl21's judged queries and drops dl22 (no qrels) instead of failing."""
    require_data(data_dir, "trec-dl", "dl22", "queries.tsv")
    from multiteacher.recipes.rerank import load_sets

    over = ["data.train=[trec-dl/dl21, trec-dl/dl22]", "data.max_train_queries=null"]
    every = load_sets(load_config(TINY, over), data_dir)
    labelled = load_sets(load_config(TINY, [*over, "data.train_queries=labelled"]), data_dir)
    assert set(every["train"]) == {"trec-dl/dl21", "trec-dl/dl22"}
    assert set(labelled["train"]) == {"trec-dl/dl21"} and "trec-dl/dl22" not in labelled["all"]
    d21 = labelled["train"]["trec-dl/dl21"]
    assert d21.qids and all(q in d21.qrels for q in d21.qids)
    with pytest.raises(ConfigError, match="data.train: no training query has qrels"):
        load_sets(load_config(TINY, ["data.train=[trec-dl/dl22]", "data.train_queries=labelled"]), data_dir)
