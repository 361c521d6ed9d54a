"""The levers table script (results/rerank/levers/make_table.py) on committed runs, `--vs` checked by hand."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

from multiteacher.stats import paired_randomization_test

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "results" / "rerank" / "levers" / "runs"


def _script():
    spec = importlib.util.spec_from_file_location("levers_make_table", REPO / "results/rerank/levers/make_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _student_ndcg(run: str, key: str) -> dict[str, float]:
    pq = json.loads((RUNS / run / "per_query.json").read_text(encoding="utf-8"))
    return {q: float(v) for q, v in pq["student"]["test"][key]["per_query"]["nDCG@10"].items()}


def test_vs_column_is_the_paired_test_of_seed_averaged_queries(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    a_runs, b_runs = ["mm10k", "mm10k-s1"], ["mm10k-ranknet"]
    _script().main(["--out", str(tmp_path), "--vs", "A", *(f"A={RUNS / r}" for r in a_runs),
                    *(f"B={RUNS / r}" for r in b_runs)])
    capsys.readouterr()
    tables = json.loads((tmp_path / "levers.json").read_text(encoding="utf-8"))
    dl19 = next(t for t in tables if t["first_stage"] == "bm25")
    got = next(t for t in dl19["tests"] if (t["label"], t["vs"], t["measure"]) == ("B", "A", "nDCG@10"))
    # by hand: lever A's two seeds averaged per query, B's one seed, both on dl19's BM25 top-100
    a = [_student_ndcg(r, "trec-dl/dl19") for r in a_runs]
    a_mean = {q: (a[0][q] + a[1][q]) / 2 for q in a[0]}
    b = _student_ndcg(b_runs[0], "trec-dl/dl19")
    assert len(a_mean) == 43 and set(b) == set(a_mean)
    assert got["delta"] == pytest.approx(statistics.mean(b[q] - a_mean[q] for q in b), abs=1e-12)
    assert got["p"] == paired_randomization_test(b, a_mean, seed=0).p_value
    assert got["p_holm"] == got["p"]  # one lever against A: nothing to correct
    assert not any(t["label"] == "A" and t["vs"] == "A" for t in dl19["tests"])
    row = next(ln for ln in (tmp_path / "levers.md").read_text(encoding="utf-8").splitlines()
               if ln.startswith("| B | 1 |"))
    assert f"| {got['delta']:+.3f} (" in row and "--vs 'A'" in (tmp_path / "levers.md").read_text(encoding="utf-8")


def test_vs_unknown_label_names_the_labels(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"--vs 'C': no such label; the labels are \['A'\]"):
        _script().main(["--out", str(tmp_path), "--vs", "C", f"A={RUNS / 'mm10k'}"])
