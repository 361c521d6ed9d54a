"""`multiteacher eval RUN_DIR --data-dir DIR --set data.test=[trec-dl/<set>]` on a folder the run never saw."""

from __future__ import annotations

import json
from pathlib import Path

import ir_measures
import pytest

from multiteacher.cli import main
from multiteacher.config import load_config
from multiteacher.runs import execute_run
from tests.conftest import REPO, require_data

TINY = REPO / "recipes" / "rerank-trecdl-tiny.yaml"
pytestmark = pytest.mark.data


def _folder(root: Path, name: str, src: Path, files: list[str]) -> None:
    d = root / "trec-dl" / name
    d.mkdir(parents=True)
    for f in files:
        (d / f).symlink_to(src / f)


def test_eval_scores_another_trec_dl_folder(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    dl19 = require_data(data_dir, "trec-dl", "dl19", "splade-pp-ed.run").parent
    run_dir = tmp_path / "run"
    res = execute_run(load_config(TINY), run_dir, data_dir, tmp_path / "cache")  # trains on dl21 only
    other = tmp_path / "other-data"  # a new data dir: a set named dlx holding dl19's files
    _folder(other, "dlx", dl19, ["queries.tsv", "corpus.jsonl", "bm25.run", "splade-pp-ed.run", "qrels.txt"])
    _folder(other, "dly", dl19, ["queries.tsv", "corpus.jsonl", "bm25.run", "qrels.txt"])

    args = ["eval", str(run_dir), "--data-dir", str(other), "--cache-dir", str(tmp_path / "cache"), "--set"]
    assert main([*args, "data.test=[trec-dl/dlx]"]) == 0
    got = json.loads(capsys.readouterr().out)
    for m in ("nDCG@10", "RR(rel=2)@10", "AP(rel=2)"):  # the same queries and candidates as the run's own test
        assert got[f"trec-dl/dlx/{m}"] == pytest.approx(res["metrics"][f"test/trec-dl/dl19/{m}"], abs=1e-9)
    assert (run_dir / "eval" / "trec-dl_dlx.run").read_text() == (
        run_dir / "runs" / "student-test-trec-dl_dl19.run"
    ).read_text()

    # both first stages, all 43 queries; the SPLADE++ candidates' metrics checked with ir_measures on the file
    assert main([*args, "data.test=[trec-dl/dlx]", "data.test_first_stage=[bm25,splade-pp-ed]",
                 "data.max_test_queries=null"]) == 0
    got = json.loads(capsys.readouterr().out)
    written = run_dir / "eval" / "trec-dl_dlx@splade-pp-ed.run"
    run = list(ir_measures.read_trec_run(str(written)))
    assert len({r.query_id for r in run}) == 43 and len(run) == 43 * 20
    splade_top = {}
    for line in (dl19 / "splade-pp-ed.run").read_text().splitlines():
        q, _, d, rank, _, _ = line.split()
        if int(rank) <= 20:
            splade_top.setdefault(q, set()).add(d)
    assert all(r.doc_id in splade_top[r.query_id] for r in run)
    qrels = list(ir_measures.read_trec_qrels(str(dl19 / "qrels.txt")))
    # the file's scores are rounded to 6 decimals and the tiny random model scores some pairs exactly alike
    # (tie order differs between trec_eval and the file's rank column), so the match is close, not exact
    ranks = [int(line.split()[3]) for line in written.read_text().splitlines()]
    by_rank = [ir_measures.ScoredDoc(r.query_id, r.doc_id, -float(k)) for r, k in zip(run, ranks)]
    expect = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, by_rank)[ir_measures.nDCG @ 10]
    assert got["trec-dl/dlx@splade-pp-ed/nDCG@10"] == pytest.approx(expect, abs=3e-3)
    assert "trec-dl/dlx/nDCG@10" in got

    # a folder without the named first stage: one line naming the set, the run and the runs found
    assert main([*args, "data.test=[trec-dl/dly]", "data.test_first_stage=splade-pp-ed"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'dly'" in err[0] and "'splade-pp-ed'" in err[0] and "runs found: bm25)" in err[0]
