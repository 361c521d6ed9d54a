"""IR data: TREC run/qrels, BEIR dirs, the shared trec-dl layout, one-line errors, registry."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from multiteacher.data import ir
from multiteacher.data.registry import DATASETS
from multiteacher.errors import DataError
from tests.conftest import require_data


def _beir(tmp: Path, qrels_in_dir: bool = True) -> Path:
    root = tmp / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        "\n".join(
            json.dumps(d)
            for d in [
                {"_id": "d1", "title": "T", "text": "alpha"},
                {"_id": "d2", "title": "", "text": "beta"},
                {"_id": "d3", "text": "gamma"},
            ]
        )
        + "\n"
    )
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what"}) + "\n")
    if qrels_in_dir:
        (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td3\t0\n")
    return root


def test_beir_dir_without_run_uses_judged_docs(tmp_path: Path) -> None:
    d = ir.load_dir(_beir(tmp_path))
    assert d.queries == {"q1": "what"}
    assert set(d.candidates["q1"]) == {"d1", "d3"}
    assert d.passages["d1"] == "T. alpha" and d.passages["d3"] == "gamma"
    assert d.qrels == {"q1": {"d1": 2, "d3": 0}}


def test_beir_dir_with_run_and_subset(tmp_path: Path) -> None:
    root = _beir(tmp_path)
    (root / "bm25.run").write_text("q1 Q0 d2 1 3.0 bm25\nq1 Q0 d1 2 2.5 bm25\n")
    (root / "other.run").write_text("q1 Q0 d1 1 -1 llm\nq1 Q0 d2 2 -2 llm\n")
    d = ir.load_dir(root)
    assert d.pairs() == [("q1", "d2"), ("q1", "d1")]
    assert set(d.runs) == {"other"} and d.runs["other"]["q1"]["d1"] == -1.0
    fp = d.fingerprint
    assert ir.load_dir(root).fingerprint == fp
    (root / "bm25.run").write_text("q1 Q0 d2 1 3.0 bm25\nq1 Q0 d3 2 2.5 bm25\n")
    assert ir.load_dir(root).fingerprint != fp
    assert ir.load_dir(root).subset([]).qids == []


def test_run_and_qrels_roundtrip(tmp_path: Path) -> None:
    run = {"q2": {"a": 0.5, "b": 1.5}, "q1": {"c": -1.0}}
    ir.write_trec_run(tmp_path / "x.run", run, tag="t")
    assert ir.read_trec_run(tmp_path / "x.run") == run
    assert ir.read_trec_run_ranks(tmp_path / "x.run") == {"q1": {"c": 1}, "q2": {"b": 1, "a": 2}}
    ir.write_qrels_tsv(tmp_path / "q.tsv", {"q1": {"a": 1}})
    assert ir.read_qrels(tmp_path / "q.tsv") == {"q1": {"a": 1}}
    (tmp_path / "trec.qrels").write_text("q1 0 a 3\nq1 Q0 b 0\n")
    assert ir.read_qrels(tmp_path / "trec.qrels") == {"q1": {"a": 3, "b": 0}}


@pytest.mark.parametrize(
    ("fname", "content", "reader", "needle"),
    [
        ("bad.run", "q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2\n", ir.read_trec_run, "bad.run:2"),
        ("bad2.run", "q1 Q0 d1 one 2.0 t\n", ir.read_trec_run, "bad2.run:1"),
        ("dup.run", "q1 Q0 d1 1 2.0 t\nq1 Q0 d1 2 1.0 t\n", ir.read_trec_run, "dup.run:2"),
        ("bad.qrels", "q1 0 d1 1\nq1 0 d2 high\n", ir.read_qrels, "bad.qrels:2"),
        ("bad.qrels2", "q1 0 d1 1 x y\n", ir.read_qrels, "bad.qrels2:1"),
        ("bad.tsv", "q1\ttext\nq2 no tab\n", ir.read_queries_tsv, "bad.tsv:2"),
        (
            "bad.jsonl",
            '{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n',
            ir.read_corpus_jsonl,
            "bad.jsonl:2",
        ),
        ("noid.jsonl", '{"text": "x"}\n', ir.read_corpus_jsonl, "noid.jsonl:1"),
        ("notext.jsonl", '{"_id": "q", "text": 3}\n', ir.read_queries_jsonl, "notext.jsonl:1"),
    ],
)
def test_malformed_inputs_raise_one_line(tmp_path: Path, fname, content, reader, needle) -> None:
    p = tmp_path / fname
    p.write_text(content)
    with pytest.raises(DataError) as e:
        reader(p)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_missing_passage_and_missing_dir(tmp_path: Path) -> None:
    root = _beir(tmp_path)
    (root / "bm25.run").write_text("q1 Q0 d9 1 3.0 bm25\n")
    with pytest.raises(DataError, match="d9"):
        ir.load_dir(root)
    with pytest.raises(DataError, match="does not exist"):
        ir.load_trec_dl(tmp_path, "dl19")
    with pytest.raises(DataError, match="missing file"):
        ir.read_trec_run(tmp_path / "nope.run")


def test_ir_datasets_adapter_with_fake_module(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = types.SimpleNamespace
    q = [ns(query_id="1", text="hello")]
    docs = {"a": ns(doc_id="a", title="", text="A"), "b": ns(doc_id="b", title="t", text="B")}

    class Store:
        def get_many_iter(self, ids):
            return (docs[i] for i in ids)

    ds = ns(
        queries_iter=lambda: iter(q),
        has_qrels=lambda: True,
        qrels_iter=lambda: iter([ns(query_id="1", doc_id="a", relevance=2)]),
        has_scoreddocs=lambda: True,
        scoreddocs_iter=lambda: iter(
            [ns(query_id="1", doc_id="a", score=1.0), ns(query_id="1", doc_id="b", score=2.0)]
        ),
        docs_store=lambda: Store(),
    )
    monkeypatch.setitem(sys.modules, "ir_datasets", ns(load=lambda i: ds))
    d = ir.load_ir("irds:fake/set")
    assert d.pairs() == [("1", "b"), ("1", "a")] and d.passages["b"] == "t. B" and d.qrels == {"1": {"a": 2}}


def test_ir_datasets_missing_is_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ir_datasets", None)
    with pytest.raises(DataError, match="ir-datasets"):
        ir.load_ir("irds:x")


@pytest.mark.data
def test_shared_trec_dl(data_dir: Path) -> None:
    require_data(data_dir, "trec-dl", "dl19", "corpus.jsonl")
    d19 = ir.load_ir("trec-dl/dl19", data_dir)
    assert len(d19.qids) == 43 and sum(len(v) for v in d19.candidates.values()) == 4300
    # the folder gains runs over time: check what the recipes rely on, not the exact list
    assert {"rankgpt-3.5", "rankvicuna-7b"} <= set(d19.runs)  # LLM orderings of BM25 are loaded
    files = {p.stem for p in (data_dir / "trec-dl" / "dl19").glob("*.run")} - {"bm25"}
    assert set(d19.runs) == files  # every run file but the candidate run, each with its queries
    for name in ("rankgpt-3.5", "rankvicuna-7b"):
        r = d19.runs[name]
        assert set(r) == set(d19.qids) and all(len(v) == 100 for v in r.values())
        ranks = ir.read_trec_run_ranks(data_dir / "trec-dl" / "dl19" / f"{name}.run")
        q = d19.qids[0]  # LLM scores are minus the rank
        assert all(r[q][doc] == -float(k) for doc, k in ranks[q].items())
    assert all(p in d19.passages for docs in d19.candidates.values() for p in docs)
    assert sum(len(v) for v in d19.qrels.values()) == 9260
    d22 = ir.load_ir("dl22", data_dir)
    assert d22.qrels is None and len(d22.qids) == 76
    assert "trec-dl/dl21" in DATASETS
    summary = DATASETS["trec-dl/dl21"].check(data_dir)
    assert summary.startswith("53 queries, 5300 BM25 candidates")


@pytest.mark.data
def test_trec_dl_reference_values(data_dir: Path) -> None:
    """The README's checked values, re-measured through our loaders (ir-measures)."""
    from multiteacher.metrics.ir import evaluate

    d19 = ir.load_ir("trec-dl/dl19", data_dir)
    m = evaluate(d19.candidates, d19.qrels, ["nDCG@10", "RR(rel=2)@10"])
    assert m["nDCG@10"] == pytest.approx(0.5058, abs=1e-4) and m["RR(rel=2)@10"] == pytest.approx(0.7024, abs=1e-4)
    assert evaluate(d19.runs["rankgpt-3.5"], d19.qrels, ["nDCG@10"])["nDCG@10"] == pytest.approx(0.6868, abs=1e-4)
    d21 = ir.load_ir("trec-dl/dl21", data_dir)
    assert evaluate(d21.candidates, d21.qrels, ["nDCG@10"])["nDCG@10"] == pytest.approx(0.4458, abs=1e-4)
