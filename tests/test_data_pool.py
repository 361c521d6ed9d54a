"""Pooled BM25 index and unjudged query sources (`multiteacher.data.pool`), against hand-computed values."""

from __future__ import annotations

import math
import re

import pytest

from multiteacher.data.pool import (
    BM25Index,
    normalise_query,
    passage_queries,
    pool_passages,
    pooled_set,
    read_query_files,
)
from multiteacher.errors import ConfigError


def _lucene_bm25(tf: int, df: int, n_docs: int, dl: int, avgdl: float, k1: float = 0.9, b: float = 0.4) -> float:
    """Lucene's BM25 (no (k1 + 1) factor since Lucene 8), written out by hand."""
    idf = math.log(1 + (n_docs - df + 0.5) / (df + 0.5))
    return idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))


def test_bm25_golden_scores() -> None:
    # No stop words among these terms and no stemming: token counts are read off the texts.
    docs = {"d1": "apple apple pear", "d2": "pear plum", "d3": "kiwi melon grape fig"}
    idx = BM25Index(docs, stemmer=None)
    avgdl = (3 + 2 + 4) / 3
    got = idx.search({"q": "apple pear"}, k=3)["q"]
    want = {
        "d1": _lucene_bm25(2, 1, 3, 3, avgdl) + _lucene_bm25(1, 2, 3, 3, avgdl),
        "d2": _lucene_bm25(1, 2, 3, 2, avgdl),
    }
    assert got == pytest.approx(want, abs=1e-4)  # d3 shares no term: not returned
    assert list(got) == ["d1", "d2"]
    # other parameters change the scores as the formula says
    got_b = BM25Index(docs, k1=1.2, b=0.75, stemmer=None).search({"q": "plum"}, k=1)["q"]
    assert got_b == pytest.approx({"d2": _lucene_bm25(1, 1, 3, 2, avgdl, 1.2, 0.75)}, abs=1e-4)
    # a query with no indexed term gets no entry; k is capped at the index size
    assert idx.search({"q": "banana", "r": "fig"}, k=10) == {"r": pytest.approx({"d3": _lucene_bm25(1, 1, 3, 4, avgdl)},
                                                                                  abs=1e-4)}


def test_bm25_stemming_matches_inflections() -> None:
    docs = {"a": "The runner was running fast", "b": "A quiet library"}
    assert list(BM25Index(docs).search({"q": "runs"}, k=2)) == ["q"]  # run ~ running (Snowball)
    assert BM25Index(docs, stemmer=None).search({"q": "runs"}, k=2) == {}


def test_read_query_files_dedupes_excludes_and_nests(tmp_path) -> None:
    f1, f2 = tmp_path / "a.tsv", tmp_path / "b.tsv"
    f1.write_text("1\tWhat is a flea?\n2\twhat is a FLEA\n3\tHeld out query\n", encoding="utf-8")
    f2.write_text("".join(f"{i}\tquery number {i}\n" for i in range(10, 60)), encoding="utf-8")
    qs = read_query_files([f1, f2], exclude_texts=["held-out query!"], prefix="mm:")
    assert "mm:2" not in qs and "mm:3" not in qs  # duplicate text (after normalising) and held-out text
    assert qs["mm:1"] == "What is a flea?" and len(qs) == 51
    small = read_query_files([f1, f2], prefix="mm:", max_queries=5, seed=3)
    large = read_query_files([f1, f2], prefix="mm:", max_queries=20, seed=3)
    assert len(small) == 5 and len(large) == 20 and set(small) < set(large)  # nested samples
    assert set(read_query_files([f1, f2], max_queries=5, seed=4)) != {k[3:] for k in small}
    assert normalise_query(" What's  up? ") == "what s up"


def test_passage_queries_are_spans_of_one_sentence() -> None:
    passages = {
        f"d{i}": f"Sentence one of passage {i} has some words. Second sentence {i} is here too! Short."
        for i in range(30)
    }
    qs, src = passage_queries(passages, 20, seed=1, min_words=3, max_words=5)
    assert len(qs) == 20 and set(qs) == set(src) and all(q == f"p:{src[q]}" for q in qs)
    for qid, text in qs.items():
        words = text.split()
        sentences = re.split(r"(?<=[.!?])\s+", passages[src[qid]])
        assert 3 <= len(words) <= 5
        assert any(text in s for s in sentences)  # contiguous words of one sentence, never across two
    again, _ = passage_queries(passages, 20, seed=1, min_words=3, max_words=5)
    assert again == qs
    fewer, _ = passage_queries(passages, 5, seed=1, min_words=3, max_words=5)
    assert fewer == {q: qs[q] for q in list(qs)[:5]}  # same seed: a prefix of the larger draw
    with pytest.raises(ConfigError):
        passage_queries(passages, 1, min_words=5, max_words=3)


def test_pooled_set_keeps_the_source_passage() -> None:
    passages = {"a": "apple pie recipe", "b": "apple tart", "c": "apple juice", "s": "how to bake bread"}
    idx = BM25Index(passages, stemmer=None)
    d = pooled_set("pool:x", {"q": "apple", "r": "bread"}, idx, passages, k=2, sources={"q": "s", "r": "s"})
    bm25 = idx.search({"q": "apple"}, k=2)["q"]
    # q: BM25 missed its source passage s, which replaces BM25's last candidate, just below the first
    kept = max(bm25, key=lambda x: (bm25[x], x))
    assert d.candidates["q"] == pytest.approx({kept: bm25[kept], "s": round(bm25[kept] - 1e-3, 4)})
    assert list(d.candidates["r"]) == ["s"]  # BM25 found the source itself: unchanged
    assert d.runs["bm25"] is d.candidates and d.qrels is None and set(d.passages) == {kept, "s"}
    assert pool_passages([d, d]) == d.passages
