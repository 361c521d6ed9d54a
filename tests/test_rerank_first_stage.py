"""Rerank candidates from any first stage: `data.first_stage` (a run or a union), `data.test_first_stage`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import ir_measures
import pytest

from multiteacher.config import load_config
from multiteacher.data.ir import first_stage_candidates
from multiteacher.runs import execute_run
from tests.conftest import REPO, require_data

TINY = REPO / "recipes" / "rerank-trecdl-tiny.yaml"


def test_first_stage_union_golden() -> None:
    # hand-computed RRF with k=60: a ranks x1 y2 z3, b ranks y1 w2
    runs = {"a": {"q": {"x": 3.0, "y": 2.0, "z": 1.0}}, "b": {"q": {"y": 0.9, "w": 0.1}}}
    fused = first_stage_candidates(runs, ["a", "b"])
    assert fused["q"] == pytest.approx({"x": 1 / 61, "y": 1 / 62 + 1 / 61, "z": 1 / 63, "w": 1 / 62})
    # ties are ranked by document id, as in write_trec_run: 'a' before 'b'
    tied = first_stage_candidates({"r": {"q": {"b": 1.0, "a": 1.0}}, "s": {"q": {"c": 1.0}}}, ["r", "s"])
    assert tied["q"] == pytest.approx({"a": 1 / 61, "b": 1 / 62, "c": 1 / 61})
    # a union cuts each run to its top k before fusing: z (a's rank 3) and w (b's rank 2) drop at k=1
    cut = first_stage_candidates(runs, ["a", "b"], k=1)
    assert cut["q"] == pytest.approx({"x": 1 / 61, "y": 1 / 61})
    assert first_stage_candidates(runs, ["b"], k=1) == {"q": {"y": 0.9}}


def test_splade_recipe_config() -> None:
    cfg = load_config(REPO / "recipes" / "rerank-trecdl-splade.yaml")
    assert cfg.data.first_stage == "splade-pp-ed" and cfg.data.test_first_stage == ["splade-pp-ed", "bm25"]
    assert cfg.data.train == ["trec-dl/dl21", "trec-dl/dl22"] and cfg.data.top_k == 100  # fold A otherwise
    from multiteacher.errors import ConfigError

    for bad in ("data.first_stage=[]", "data.first_stage=bm25.run", "data.test_first_stage=[[]]"):
        with pytest.raises(ConfigError, match="first_stage"):
            load_config(TINY, [bad])


def _ndcg10(run_file: Path, qrels_file: Path, qids: set[str]) -> float:
    """nDCG@10 of a run file on `qids`, straight from ir_measures (no project code)."""
    run = [r for r in ir_measures.read_trec_run(str(run_file)) if r.query_id in qids]
    qrels = [r for r in ir_measures.read_trec_qrels(str(qrels_file)) if r.query_id in qids]
    return ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, run)[ir_measures.nDCG @ 10]


def _top(path: Path, k: int) -> dict[str, list[str]]:
    rows: dict[str, list[tuple[float, str]]] = {}
    for line in path.read_text().splitlines():
        q, _, d, _, s, _ = line.split()
        rows.setdefault(q, []).append((-float(s), d))
    return {q: [d for _, d in sorted(v)[:k]] for q, v in rows.items()}


@pytest.mark.data
def test_splade_first_stage_and_union(tmp_path: Path, data_dir: Path) -> None:
    require_data(data_dir, "trec-dl", "dl19", "splade-pp-ed.run")
    cfg = load_config(
        TINY, ["data.first_stage=splade-pp-ed", "data.test_first_stage=[splade-pp-ed,[bm25,splade-pp-ed]]"]
    )
    res = execute_run(cfg, tmp_path / "r", data_dir, tmp_path / "cache")
    rows = res["rows"]
    assert {r["first_stage"] for r in rows} == {"splade-pp-ed", "bm25+splade-pp-ed"}
    assert all(r["first_stage"] == "splade-pp-ed" for r in rows if r["split"] == "val")
    per_query = json.loads((tmp_path / "r" / "per_query.json").read_text())["baselines"]
    dl19, dl21 = data_dir / "trec-dl" / "dl19", data_dir / "trec-dl" / "dl21"
    for split, folder, key in (("test", dl19, "trec-dl/dl19"), ("val", dl21, "trec-dl/dl21")):
        qids = set(per_query[f"{split}|{key}|splade-pp-ed"]["per_query"]["nDCG@10"])
        (row,) = [r for r in rows if r["split"] == split and r["system"] == "splade-pp-ed"]
        assert row["kind"] == "baseline" and row["set"] == key
        expect = _ndcg10(folder / "splade-pp-ed.run", folder / "qrels.txt", qids)
        assert row["nDCG@10"] == pytest.approx(expect, abs=1e-9)
        assert abs(expect - _ndcg10(folder / "bm25.run", folder / "qrels.txt", qids)) > 1e-3  # not BM25's value
    # the union: candidates are the union of both runs' top 20; its baseline row is their RRF order
    union = [r for r in rows if r["first_stage"] == "bm25+splade-pp-ed"]
    assert {r["system"] for r in union} >= {"bm25+splade-pp-ed", "student:marginmse", "student:untrained"}
    assert all(r["set"] == "trec-dl/dl19" and r["split"] == "test" for r in union)
    assert "test/trec-dl/dl19@bm25+splade-pp-ed/nDCG@10" in res["metrics"]
    student = _top(tmp_path / "r" / "runs" / "student-test-trec-dl_dl19@bm25+splade-pp-ed.run", 10**6)
    bm25, splade = _top(dl19 / "bm25.run", 20), _top(dl19 / "splade-pp-ed.run", 20)
    assert len(student) == 4
    for q, docs in student.items():
        assert set(docs) == set(bm25[q]) | set(splade[q])
    # RRF by hand (k = 60) over the two top-20 lists, measured with ir_measures
    rrf = {q: {} for q in student}
    for lists in (bm25, splade):
        for q in student:
            for rank, d in enumerate(lists[q], 1):
                rrf[q][d] = rrf[q].get(d, 0.0) + 1 / (60 + rank)
    qrels = [r for r in ir_measures.read_trec_qrels(str(dl19 / "qrels.txt")) if r.query_id in student]
    expect = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, rrf)[ir_measures.nDCG @ 10]
    (row,) = [r for r in union if r["system"] == "bm25+splade-pp-ed"]
    assert row["nDCG@10"] == pytest.approx(expect, abs=1e-9)
    # the sweep summary names each table's first stage and tests the student against it
    from multiteacher.recipes.rerank.sweep import summarize

    summary = summarize([tmp_path / "r"], tmp_path / "sum")
    assert summary["sets"]["trec-dl/dl19"]["first_stage"] == "splade-pp-ed"
    assert "vs splade-pp-ed" in summary["sets"]["trec-dl/dl19"]["tests"]
    assert summary["sets"]["trec-dl/dl19@bm25+splade-pp-ed"]["first_stage"] == "bm25+splade-pp-ed"
    md = (tmp_path / "sum" / "summary.md").read_text()
    assert "### Test set trec-dl/dl19, first stage splade-pp-ed " in md
    assert "### Test set trec-dl/dl19, first stage bm25+splade-pp-ed " in md


def test_missing_first_stage_run_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    require_data(data_dir, "trec-dl", "dl21", "bm25.run")
    env = {**os.environ, "MULTITEACHER_DATA": str(data_dir), "MULTITEACHER_CACHE": str(tmp_path / "c"),
           "OMP_NUM_THREADS": "1"}
    cases = (("data.first_stage=[bm25,tasb]", "dl21"), ("data.test_first_stage=[bm25,nope]", "dl19"))
    for override, set_name in cases:
        p = subprocess.run(
            [sys.executable, "-m", "multiteacher.cli", "run", str(TINY), "--run-dir", str(tmp_path / "r"),
             "--set", override],
            capture_output=True, text=True, env=env, cwd=REPO,
        )
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1, p.stderr
        missing = override.split(",")[-1].rstrip("]")
        assert f"'{set_name}'" in lines[0] and f"'{missing}'" in lines[0], lines[0]
        found = lines[0].split("runs found: ", 1)[1].split(")")[0].split(", ")
        assert {"bm25", "bm25-rm3", "splade-pp-ed"} <= set(found)
        assert not (tmp_path / "r").exists()
