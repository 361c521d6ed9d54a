"""More training queries for re-ranking: a BM25 index over pooled passages, and queries nobody judged.

A re-ranking student needs many training queries, and only teachers can label new ones. This module
builds the pieces that turn a pooled passage collection into a new (unjudged) re-ranking set:

- `BM25Index`: BM25 over the pooled passages, backed by `bm25s` (a sparse-matrix BM25 in numpy/scipy:
  pip-installable, no JVM — unlike Pyserini/Anserini —, indexes ~30k passages in seconds on a laptop
  CPU and retrieves thousands of queries per second; Lucene's scoring variant, English stop words and
  the Snowball stemmer, Anserini's MS MARCO passage parameters k1 = 0.9, b = 0.4 by default);
- `read_query_files`: real queries from TSV files (e.g. unjudged MS MARCO queries), deduplicated,
  minus any query text that is also a held-out (validation / test) query;
- `passage_queries`: queries made from the passages themselves (Inverse Cloze Task / Contriever-style
  random spans of one sentence), each remembering its source passage;
- `pooled_set`: queries + index -> an `IRData` whose candidates are BM25's top-k (the source passage of
  a passage-made query is always one candidate), ready for teachers to score into the teacher cache.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from multiteacher.data.ir import IRData, read_queries_tsv
from multiteacher.errors import ConfigError, DataError

Run = dict[str, dict[str, float]]

__all__ = ["BM25Index", "normalise_query", "passage_queries", "pool_passages", "pooled_set", "read_query_files"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\S+")


def normalise_query(text: str) -> str:
    """A query's text for duplicate checks: lower case, words only, single spaces.

    Args:
        text: the query.

    Returns:
        The normalised text.

    Example:
        >>> normalise_query("  What is a Flea? ")
        'what is a flea'
    """
    return " ".join(re.findall(r"\w+", text.lower()))


class BM25Index:
    """BM25 over a passage collection (bm25s, Lucene variant), searched by query text.

    Args:
        passages: `{docid: text}` to index.
        k1: term-frequency saturation (Anserini's MS MARCO passage default 0.9).
        b: length normalisation (Anserini's MS MARCO passage default 0.4).
        stemmer: a Snowball stemmer language (needs `PyStemmer`), or None for no stemming.
        progress: show bm25s' progress bars.

    Returns:
        The index (`search` retrieves from it; `fingerprint` hashes the passages and parameters).

    Example:
        >>> index = BM25Index({"a": "Fleas are small insects.", "b": "Cats chase mice."}, stemmer=None)
        >>> list(index.search({"q": "what are fleas"}, k=2)["q"])
        ['a']
    """

    def __init__(
        self,
        passages: Mapping[str, str],
        *,
        k1: float = 0.9,
        b: float = 0.4,
        stemmer: str | None = "english",
        progress: bool = False,
    ) -> None:
        import bm25s

        if not passages:
            raise DataError("BM25Index: no passages to index")
        self.docids = sorted(passages)
        self.k1, self.b, self.progress = k1, b, progress
        self._stemmer = None
        if stemmer:
            try:
                import Stemmer
            except ImportError:
                raise ConfigError("BM25Index: stemming needs PyStemmer (`pip install PyStemmer`), or pass "
                                  "stemmer=None") from None
            self._stemmer = Stemmer.Stemmer(stemmer)
        self.stemmer_name = stemmer
        tokens = bm25s.tokenize([passages[d] for d in self.docids], stopwords="en", stemmer=self._stemmer,
                                show_progress=progress)
        self._bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
        self._bm25.index(tokens, show_progress=progress)
        h = hashlib.sha256(f"bm25s|{k1}|{b}|{stemmer}".encode())
        for d in self.docids:
            h.update(f"{d}\t{passages[d]}\n".encode())
        self.fingerprint = h.hexdigest()[:16]

    def __len__(self) -> int:
        return len(self.docids)

    def search(self, queries: Mapping[str, str], k: int = 100) -> Run:
        """BM25's top-`k` passages of each query with their scores (passages scoring 0 are left out).

        Args:
            queries: `{qid: text}`.
            k: passages per query (at most the index size).

        Returns:
            `{qid: {docid: score}}`; a query none of whose terms is indexed gets no entry.

        Example:
            >>> index = BM25Index({"a": "red apple", "b": "green pear"}, stemmer=None)
            >>> index.search({"q": "apple pie"}, k=2)
            {'q': {'a': 0.3648}}
        """
        import bm25s

        qids = list(queries)
        if not qids:
            return {}
        k = min(k, len(self.docids))
        tokens = bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=self._stemmer,
                                show_progress=False, allow_empty=True)
        docs, scores = self._bm25.retrieve(tokens, k=k, show_progress=self.progress, n_threads=1)
        out: Run = {}
        for q, row_docs, row_scores in zip(qids, np.asarray(docs), np.asarray(scores)):
            hits = {self.docids[int(i)]: round(float(s), 4) for i, s in zip(row_docs, row_scores) if s > 0}
            if hits:
                out[q] = hits
        return out


def read_query_files(
    paths: Iterable[str | Path],
    *,
    exclude_texts: Iterable[str] = (),
    prefix: str = "",
    max_queries: int | None = None,
    seed: int = 0,
) -> dict[str, str]:
    """Real queries from `qid<TAB>text` files: duplicates (by normalised text) and held-out texts removed.

    Args:
        paths: the query files (read in the given order).
        exclude_texts: query texts that must not become training queries (validation and test queries).
        prefix: prepended to every qid (keeps them apart from other sets' qids).
        max_queries: keep a seeded random sample of this many (None: all).
        seed: seed of that sample (samples of one seed are nested: 100 queries are among the 1,000).

    Returns:
        `{prefix + qid: text}` in a stable order (file order, or the sample's order).

    Example:
        >>> read_query_files(["msmarco-queries/msmarco-v2-dev.tsv"], prefix="mm:", max_queries=2)  # doctest: +SKIP
        {'mm:2000511': 'average bahamas temperature at the end of october', ...}
    """
    held_out = {normalise_query(t) for t in exclude_texts}
    seen: set[str] = set()
    out: dict[str, str] = {}
    for path in paths:
        for qid, text in read_queries_tsv(path).items():
            key = normalise_query(text)
            if not key or key in held_out or key in seen or prefix + qid in out:
                continue
            seen.add(key)
            out[prefix + qid] = text
    if max_queries is not None and len(out) > max_queries:
        # a prefix of one seeded permutation: with the same seed, a smaller sample is a subset of a larger one
        keep = np.random.default_rng(seed).permutation(len(out))[:max_queries]
        items = list(out.items())
        out = dict(items[i] for i in sorted(keep))
    return out


def passage_queries(
    passages: Mapping[str, str],
    n: int,
    *,
    seed: int = 0,
    min_words: int = 4,
    max_words: int = 12,
    prefix: str = "p:",
    exclude_texts: Iterable[str] = (),
) -> tuple[dict[str, str], dict[str, str]]:
    """Queries made from passages (ICT / Contriever-style): a random span of one random sentence.

    Each of `n` passages drawn without replacement (seeded) gives one query: a sentence of it chosen
    at random, then a random run of `min_words`..`max_words` consecutive words of that sentence (the
    whole sentence when it is shorter). The passage keeps its text: the query is a partial view of it.

    Args:
        passages: `{docid: text}` to draw from.
        n: queries to make (at most one per passage; capped at the number of usable passages).
        seed: seed of the draws.
        min_words: shortest span.
        max_words: longest span.
        prefix: qid prefix; a query's id is `prefix + docid` of its source passage.
        exclude_texts: query texts that must not be produced (held-out queries).

    Returns:
        `(queries, sources)`: `{qid: text}` and `{qid: source docid}`.

    Example:
        >>> qs, src = passage_queries({"a": "Fleas are small wingless insects. They feed on blood."}, 1,
        ...                           min_words=3, max_words=3)
        >>> src, len(qs["p:a"].split())
        ({'p:a': 'a'}, 3)
    """
    if not 1 <= min_words <= max_words:
        raise ConfigError(f"passage queries: need 1 <= min_words ({min_words}) <= max_words ({max_words})")
    rng = np.random.default_rng(seed)
    held_out = {normalise_query(t) for t in exclude_texts}
    docids = sorted(d for d, t in passages.items() if len(_WORD.findall(t)) >= min_words)
    order = rng.permutation(len(docids))
    queries: dict[str, str] = {}
    sources: dict[str, str] = {}
    for i in order:
        if len(queries) >= n:
            break
        d = docids[int(i)]
        sentences = [s for s in _SENTENCE_END.split(passages[d].strip()) if len(_WORD.findall(s)) >= min_words]
        if not sentences:
            continue
        words = _WORD.findall(sentences[int(rng.integers(len(sentences)))])
        length = min(len(words), int(rng.integers(min_words, max_words + 1)))
        start = int(rng.integers(len(words) - length + 1))
        text = " ".join(words[start : start + length])
        if normalise_query(text) in held_out:
            continue
        queries[prefix + d] = text
        sources[prefix + d] = d
    return queries, sources


def pooled_set(
    name: str,
    queries: Mapping[str, str],
    index: BM25Index,
    passages: Mapping[str, str],
    k: int = 100,
    sources: Mapping[str, str] | None = None,
) -> IRData:
    """An unjudged re-ranking set: each query's BM25 top-`k` over the pooled passages.

    Args:
        name: the set's name (rows and the teacher cache key say it).
        queries: `{qid: text}`.
        index: the BM25 index over `passages`.
        passages: the pooled passages (texts of the candidates).
        k: candidates per query.
        sources: `{qid: docid}` of passage-made queries: the source passage is always a candidate (added
            below BM25's last candidate when BM25 missed it, so the first-stage order stays BM25's).

    Returns:
        The set: candidates = BM25 top-`k` (also its `bm25` run, so a `bm25` run teacher serves it), no
        qrels; queries BM25 finds nothing for are left out.

    Example:
        >>> ps = {"a": "red apple", "b": "green pear"}
        >>> d = pooled_set("pool", {"q": "apple"}, BM25Index(ps, stemmer=None), ps, k=2)
        >>> d.pairs()
        [('q', 'a')]
    """
    run = index.search(queries, k)
    for q, d in (sources or {}).items():
        if q in run and d not in run[q]:
            if len(run[q]) >= k:
                del run[q][min(run[q], key=lambda x: (run[q][x], x))]
            run[q][d] = round(min(run[q].values(), default=1.0) - 1e-3, 4)
    keep = {d for hits in run.values() for d in hits}
    return IRData(
        name=name,
        queries={q: queries[q] for q in run},
        passages={d: passages[d] for d in sorted(keep)},
        candidates=run,
        qrels=None,
        runs={"bm25": run},
        first_stage=("bm25",),
    )


def pool_passages(sets: Sequence[Any]) -> dict[str, str]:
    """The union of several sets' passages (the first text kept where ids repeat).

    Args:
        sets: `IRData` sets (or anything with a `passages` mapping).

    Returns:
        `{docid: text}`.

    Example:
        >>> pool_passages([IRData("x", {"q": "a"}, {"a": "A"}, {"q": {"a": 1.0}})])
        {'a': 'A'}
    """
    out: dict[str, str] = {}
    for d in sets:
        for x, t in d.passages.items():
            out.setdefault(x, t)
    return out
