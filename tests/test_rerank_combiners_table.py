"""The combiner table script (results/rerank/combiners/make_table.py) on a few queries, one number checked by hand."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_data

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("make_table", REPO / "results/rerank/combiners/make_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _read_run(path: Path) -> dict[str, list[tuple[str, int, float]]]:
    out: dict[str, list] = {}
    for line in path.read_text().splitlines():
        q, _, d, r, s, _ = line.split()
        out.setdefault(q, []).append((d, int(r), float(s)))
    return out


def _ndcg10(ranking: list[str], rel: dict[str, int]) -> float:
    """trec_eval ndcg_cut.10: linear gains, log2(rank + 1) discount."""
    dcg = sum(rel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranking[:10]))
    ideal = sorted((g for g in rel.values() if g > 0), reverse=True)[:10]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


@pytest.mark.data
def test_median_rank_row_matches_hand_computation(data_dir: Path) -> None:
    DATA = data_dir
    require_data(DATA, "trec-dl", "dl19", "qrels.txt")
    mt = _script()
    res = mt.make_table(DATA, max_queries=3, router=False, n_resamples=200, log=lambda *_: None)
    row = res["folds"]["A"]["candidate_sets"]["bm25"]["rows"]["median_rank"]
    # independent: dl19, first 3 judged queries by id, BM25 top-100 (score desc, docid asc), all 12 run files
    root = DATA / "trec-dl" / "dl19"
    runs = {p.name[:-4]: _read_run(p) for p in sorted(root.glob("*.run"))}
    qrels: dict[str, dict[str, int]] = {}
    for line in (root / "qrels.txt").read_text().splitlines():
        q, _, d, r = line.split()
        qrels.setdefault(q, {})[d] = int(r)
    qids = sorted(q for q in {ln.split("\t")[0] for ln in (root / "queries.tsv").read_text().splitlines()}
                  if q in qrels)[:3]
    vals = []
    for q in qids:
        cands = [d for d, _, _ in sorted(runs["bm25"][q], key=lambda t: (-t[2], t[0]))[:100]]
        cols = []
        for rows in runs.values():
            # the run's own rank column orders it (the script breaks score ties by it)
            mine = [d for d, _, _ in sorted(rows.get(q, []), key=lambda t: t[1]) if d in set(cands)]
            if not mine:
                continue
            pos = {d: i + 1 for i, d in enumerate(mine)}
            cols.append([pos.get(d, len(mine) + 1) for d in cands])
        R = np.array(cols, dtype=float)
        key = np.median(R, 0) + R.mean(0) / (2 * (len(cands) + 2))
        order = [cands[i] for i in np.argsort(key, kind="stable")]
        vals.append(_ndcg10(order, qrels[q]))
    assert row["test"]["nDCG@10"] == pytest.approx(float(np.mean(vals)), abs=1e-9)
    assert res["folds"]["A"]["candidate_sets"]["bm25"]["best_single_on_val"] in {"bm25", "bm25-rm3", "splade-pp-ed"}
    md = mt.to_markdown({**res, "seconds": 0}, "cmd")
    assert "median_rank" in md and "Fold B" in md
