"""IR collections: BEIR directories, TREC run/qrels files, the shared `trec-dl` layout, `ir_datasets`.

Everything loads into one in-memory shape, `IRData` (queries, passages, candidate run, qrels, extra
runs), small enough for re-ranking sets (a few thousand passages). Readers are strict: a malformed
line raises a one-line `DataError` naming the file and line, never a traceback.

Specs accepted by `load_ir(spec, data_dir)`:
  - `trec-dl/dl19` (or `dl19`): `<data_dir>/trec-dl/dl19/` with `queries.tsv`, `corpus.jsonl`,
    `bm25.run`, optional `qrels.txt` and other `*.run` files (kept in `IRData.runs`);
  - a directory path: BEIR layout (`corpus.jsonl`, `queries.jsonl|tsv`, `qrels/<split>.tsv`) plus an
    optional candidate run (`bm25.run` or the first `*.run`); the trec-dl layout is a special case;
  - `irds:<id>` (e.g. `irds:msmarco-passage/trec-dl-2019/judged`): through the optional
    `ir_datasets` extra (`pip install multiteacher[ir-datasets]`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multiteacher.config import quote as _q
from multiteacher.data.registry import DatasetInfo, register_dataset, require_path
from multiteacher.errors import DataError

Run = dict[str, dict[str, float]]  # qid -> docid -> score (higher is better)
Qrels = dict[str, dict[str, int]]  # qid -> docid -> grade

TREC_DL_SETS = ("dl19", "dl21", "dl22")
TREC_DL_HINT = "place the TREC-DL files under <data_dir>/trec-dl/<set>/ (see ../shared/data/README.md)"


# ----------------------------------------------------------------------------- readers


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-empty lines with 1-based numbers; a missing file is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file: {path} does not exist")
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{i}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1}) — "
                                "save the file as UTF-8") from None
            line = line.rstrip("\n").rstrip("\r")
            if line.strip():
                yield i, line


def read_queries_tsv(path: str | Path) -> dict[str, str]:
    """Queries from `qid<TAB>text` lines (a duplicate id or a malformed line is a one-line DataError).

    Args:
        path: the TSV file.

    Returns:
        `{qid: text}`.

    Example:
        >>> read_queries_tsv("trec-dl/dl19/queries.tsv")["1037798"]  # doctest: +SKIP
        'who is robert gray'
    """
    out: dict[str, str] = {}
    for i, line in _lines(Path(path)):
        qid, sep, text = line.partition("\t")
        if not sep or not qid.strip():
            raise DataError(f"{path}:{i}: expected 'qid<TAB>text', got {line[:60]!r}")
        if qid.strip() in out:
            raise DataError(f"{path}:{i}: query id {qid.strip()[:60]!r} appears twice — keep one line per query")
        if not text.strip():
            raise DataError(f"{path}:{i}: query {qid.strip()[:60]!r} has empty text — give it its text or remove "
                            "the line")
        out[qid.strip()] = text.strip()
    return out


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    for i, line in _lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{i}: invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict) or "_id" not in obj:
            raise DataError(f"{path}:{i}: expected a JSON object with an '_id' field")
        yield i, obj


def read_queries_jsonl(path: str | Path) -> dict[str, str]:
    """BEIR `queries.jsonl`: `{"_id": ..., "text": ...}` per line.

    Args:
        path: the JSONL file.

    Returns:
        `{qid: text}`.

    Example:
        >>> read_queries_jsonl("scifact/queries.jsonl")  # doctest: +SKIP
    """
    out: dict[str, str] = {}
    for i, obj in _json_lines(Path(path)):
        if not isinstance(obj.get("text"), str):
            raise DataError(f"{path}:{i}: query {_q(obj['_id'])} has no string 'text' field")
        if str(obj["_id"]) in out:
            raise DataError(f"{path}:{i}: query id {str(obj['_id'])[:60]!r} appears twice — keep one line per query")
        if not obj["text"].strip():
            raise DataError(f"{path}:{i}: query {str(obj['_id'])[:60]!r} has empty text — give it its text or "
                            "remove the line")
        out[str(obj["_id"])] = obj["text"]
    return out


def passage_text(title: str | None, text: str) -> str:
    """The text a model sees for a passage: `title. text` when there is a title (as BEIR does).

    Args:
        title: the passage title (may be empty or None).
        text: the passage body.

    Returns:
        The combined text.

    Example:
        >>> passage_text("Fleas", "Fleas are insects.")
        'Fleas. Fleas are insects.'
    """
    title = (title or "").strip()
    return f"{title}. {text}" if title else text


def read_corpus_jsonl(path: str | Path, ids: Iterable[str] | None = None) -> dict[str, str]:
    """BEIR `corpus.jsonl` (`_id`, `title`, `text`) -> {docid: passage text}; optionally only `ids`.

    Args:
        path: the JSONL file.
        ids: keep only these passage ids (the candidates), or None for all.

    Returns:
        `{docid: passage_text(title, text)}`.

    Example:
        >>> read_corpus_jsonl("trec-dl/dl19/corpus.jsonl", ids=["7067032"])  # doctest: +SKIP
    """
    keep = set(ids) if ids is not None else None
    out: dict[str, str] = {}
    for i, obj in _json_lines(Path(path)):
        did = str(obj["_id"])
        if keep is not None and did not in keep:
            continue
        if not isinstance(obj.get("text"), str):
            raise DataError(f"{path}:{i}: passage {_q(did)} has no string 'text' field")
        if did in out:
            raise DataError(f"{path}:{i}: passage id {_q(did)} appears twice — keep one line per passage")
        out[did] = passage_text(obj.get("title"), obj["text"])
    return out


def read_corpus_tsv(path: str | Path, ids: Iterable[str] | None = None) -> dict[str, str]:
    """Passages from `docid<TAB>text` lines (MS MARCO `collection.tsv` style); optionally only `ids`.

    Args:
        path: the TSV file.
        ids: keep only these passage ids, or None for all.

    Returns:
        `{docid: text}`; a malformed line or a repeated id is a one-line DataError naming file and line.

    Example:
        >>> read_corpus_tsv("collection.tsv", ids=["7067032"])  # doctest: +SKIP
    """
    keep = set(ids) if ids is not None else None
    out: dict[str, str] = {}
    for i, line in _lines(Path(path)):
        did, sep, text = line.partition("\t")
        did = did.strip()
        if not sep or not did:
            raise DataError(f"{path}:{i}: expected 'docid<TAB>text', got {_q(line)}")
        if keep is not None and did not in keep:
            continue
        if did in out:
            raise DataError(f"{path}:{i}: passage id {_q(did)} appears twice — keep one line per passage")
        out[did] = text
    return out


def read_trec_run(path: str | Path) -> Run:
    """TREC run `qid Q0 docid rank score tag` -> {qid: {docid: score}} (score: higher is better).

    Args:
        path: the run file.

    Returns:
        `{qid: {docid: score}}`; a malformed line, a non-finite score or a repeated document is a
        one-line DataError naming the file and line.

    Example:
        >>> read_trec_run("trec-dl/dl19/bm25.run")["1037798"]  # doctest: +SKIP
    """
    out: Run = {}
    for i, line in _lines(Path(path)):
        parts = line.split()
        if len(parts) != 6:
            raise DataError(f"{path}:{i}: expected 6 fields 'qid Q0 docid rank score tag', got {len(parts)}")
        qid, _, did, rank, score, _ = parts
        try:
            int(rank)
            value = float(score)
        except ValueError:
            raise DataError(f"{path}:{i}: rank {_q(rank)} / score {_q(score)} is not a number") from None
        if not math.isfinite(value):
            raise DataError(f"{path}:{i}: score {_q(score)} is not finite — fix or drop that line")
        docs = out.setdefault(qid, {})
        if did in docs:
            raise DataError(f"{path}:{i}: document {_q(did)} listed twice for query {_q(qid)}")
        docs[did] = value
    return out


def read_trec_run_ranks(path: str | Path) -> dict[str, dict[str, int]]:
    """TREC run -> {qid: {docid: rank}} using the rank column (1 = best), for LLM orderings.

    Args:
        path: the run file.

    Returns:
        `{qid: {docid: rank}}`.

    Example:
        >>> read_trec_run_ranks("trec-dl/dl19/rankgpt-3.5.run")["1037798"]  # doctest: +SKIP
    """
    out: dict[str, dict[str, int]] = {}
    for i, line in _lines(Path(path)):
        parts = line.split()
        if len(parts) != 6:
            raise DataError(f"{path}:{i}: expected 6 fields 'qid Q0 docid rank score tag', got {len(parts)}")
        try:
            out.setdefault(parts[0], {})[parts[2]] = int(parts[3])
        except ValueError:
            raise DataError(f"{path}:{i}: rank {_q(parts[3])} is not an integer") from None
    return out


def read_qrels(path: str | Path) -> Qrels:
    """TREC qrels (`qid iter docid rel`) or BEIR qrels TSV (`query-id corpus-id score`, header).

    Args:
        path: the qrels file.

    Returns:
        `{qid: {docid: grade}}`; a pair judged twice with different grades is a DataError.

    Example:
        >>> read_qrels("trec-dl/dl19/qrels.txt")["1037798"]  # doctest: +SKIP
    """
    out: Qrels = {}
    for i, line in _lines(Path(path)):
        parts = line.split()
        if i == 1 and parts and parts[0].lower() in ("query-id", "qid", "query_id"):
            continue  # BEIR header
        if len(parts) == 4:
            qid, _, did, rel = parts
        elif len(parts) == 3:
            qid, did, rel = parts
        else:
            raise DataError(f"{path}:{i}: expected 'qid 0 docid rel' (TREC) or 'qid docid rel' (BEIR)")
        try:
            grade = int(float(rel))
        except ValueError:
            raise DataError(f"{path}:{i}: relevance {_q(rel)} is not a number") from None
        docs = out.setdefault(qid, {})
        if did in docs and docs[did] != grade:
            raise DataError(f"{path}:{i}: ({qid}, {did}) judged twice with different grades {docs[did]} and {grade}")
        docs[did] = grade
    return out


def write_trec_run(path: str | Path, run: Mapping[str, Mapping[str, float]], tag: str = "multiteacher") -> None:
    """Atomically write a run in TREC format, each query's documents by descending score (ties by id).

    Args:
        path: where to write.
        run: `{qid: {docid: score}}`.
        tag: the run tag column.

    Returns:
        None.

    Example:
        >>> write_trec_run("/tmp/student.run", {"q": {"a": 2.0, "b": 1.0}}, tag="student")  # doctest: +SKIP
    """
    from multiteacher.io import atomic_write_text

    lines = []
    for qid in sorted(run):
        ranked = sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))
        lines += [f"{qid} Q0 {d} {r} {s:.6f} {tag}" for r, (d, s) in enumerate(ranked, 1)]
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def read_hofstaetter(path: str | Path) -> list[tuple[float, float, str, str, str]]:
    """Hofstätter's teacher-score file: `pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid` per line.

    Args:
        path: the TSV file (the MarginMSE teacher files of Hofstätter et al. 2020).

    Returns:
        `(pos_score, neg_score, qid, pos_pid, neg_pid)` per line.

    Example:
        >>> read_hofstaetter("bert_cat_ensemble_msmarcopassage_train_scores_ids.tsv")[0]  # doctest: +SKIP
        (9.5, 1.0, '1185869', '0', '2786')
    """
    out = []
    for i, line in _lines(Path(path)):
        parts = line.split()
        if len(parts) != 5:
            raise DataError(f"{path}:{i}: expected 'pos_score neg_score qid pos_pid neg_pid', got {len(parts)} fields")
        try:
            row = (float(parts[0]), float(parts[1]), parts[2], parts[3], parts[4])
        except ValueError:
            raise DataError(f"{path}:{i}: scores {_q(parts[0])} / {_q(parts[1])} are not numbers") from None
        if not (math.isfinite(row[0]) and math.isfinite(row[1])):
            raise DataError(f"{path}:{i}: scores {_q(parts[0])} / {_q(parts[1])} are not finite — fix that line")
        out.append(row)
    return out


def hofstaetter_run(path: str | Path) -> Run:
    """Per-(qid, pid) scores from a Hofstätter file (a pid scored twice must agree within 1e-4).

    Args:
        path: the TSV file (see `read_hofstaetter`).

    Returns:
        `{qid: {pid: score}}` over the passages the file scores (others have no score).

    Example:
        >>> hofstaetter_run("teacher.tsv")["q1"]["d0"]  # doctest: +SKIP
        9.5
    """
    run: Run = {}
    for pos_s, neg_s, q, p, n in read_hofstaetter(path):
        for d, sc in ((p, pos_s), (n, neg_s)):
            old = run.setdefault(q, {}).setdefault(d, sc)
            if abs(old - sc) > 1e-4:
                raise DataError(f"{path}: passage {_q(d)} of query {_q(q)} has two scores ({old} and {sc})")
    return run


# ----------------------------------------------------------------------------- runs as tensors


@dataclass
class RunTensor:
    """K teachers' runs on the teacher axis: `scores` (B, K, N) float64, `valid` (B, K, N) bool.

    Row b is query `qids[b]`; column n of that row is passage `docids[b][n]` (sorted by doc id;
    rows shorter than N are padded with invalid entries); `teachers[k]` names teacher k. Invalid
    entries (a teacher that did not score the candidate, or padding) hold NaN. The layout that the
    ranking combiners in `multiteacher.consensus` take; build it with `runs_to_tensor`.

    Example:
        >>> t = runs_to_tensor({"bm25": {"q": {"a": 1.0}}})
        >>> t.teachers, t.docids
        (['bm25'], [['a']])
    """

    qids: list[str]
    docids: list[list[str]]
    teachers: list[str]
    scores: Any
    valid: Any


def runs_to_tensor(
    runs: Mapping[str, Mapping[str, Mapping[str, float]]],
    candidates: Mapping[str, Iterable[str]] | None = None,
) -> RunTensor:
    """Stack {teacher: run} into `(B, K, N)` scores plus a valid mask, per query over its candidates.

    Args:
        runs: `{teacher name: {qid: {docid: score}}}`; a pair a run lacks is missing (invalid).
        candidates: `{qid: docids}` to score (e.g. `IRData.candidates`); default: per query, the
            union of the passages the runs score.

    Returns:
        A `RunTensor` (queries sorted by id, candidates by doc id).

    Example:
        >>> t = runs_to_tensor({"a": {"q": {"d1": 1.0}}, "b": {"q": {"d1": 2.0, "d2": 0.5}}})
        >>> t.scores.shape, t.valid[0].tolist()
        (torch.Size([1, 2, 2]), [[True, False], [True, True]])
    """
    import torch

    names = list(runs)
    if candidates is None:
        cands: dict[str, set[str]] = {}
        for r in runs.values():
            for q, docs in r.items():
                cands.setdefault(q, set()).update(docs)
    else:
        cands = {q: set(docs) for q, docs in candidates.items()}
    qids = sorted(cands)
    docids = [sorted(cands[q]) for q in qids]
    n = max((len(d) for d in docids), default=0)
    scores = torch.full((len(qids), len(names), n), float("nan"), dtype=torch.float64)
    for b, (q, docs) in enumerate(zip(qids, docids)):
        for k, name in enumerate(names):
            r = runs[name].get(q)
            if r:
                row = [r.get(d, math.nan) for d in docs]
                scores[b, k, : len(docs)] = torch.tensor(row, dtype=torch.float64)
    return RunTensor(qids, docids, names, scores, ~torch.isnan(scores))


def tensor_to_run(scores: Any, valid: Any, qids: list[str], docids: list[list[str]]) -> Run:
    """Per-query scores `(B, N)` back to a run, keeping only valid entries (queries with none drop out).

    Args:
        scores: `(B, N)` tensor, e.g. `consensus.fuse_scores(...)[0]`.
        valid: `(B, N)` bool.
        qids: query id of each row.
        docids: passage ids of each row's columns.

    Returns:
        `{qid: {docid: score}}`.

    Example:
        >>> import torch
        >>> tensor_to_run(torch.tensor([[0.5, 0.0]]), torch.tensor([[True, False]]), ["q"], [["d1", "d2"]])
        {'q': {'d1': 0.5}}
    """
    out: Run = {}
    s, v = scores.tolist(), valid.tolist()
    for b, (q, docs) in enumerate(zip(qids, docids)):
        row = {d: float(s[b][i]) for i, d in enumerate(docs) if v[b][i]}
        if row:
            out[q] = row
    return out


def fuse_runs(
    runs: Mapping[str, Mapping[str, Mapping[str, float]]],
    method: str = "zscore",
    weights: Iterable[float] | None = None,
    rrf_k: float = 60.0,
    candidates: Mapping[str, Iterable[str]] | None = None,
    missing: str = "drop",
) -> Run:
    """Fuse {teacher: run} per query with the engine combiner `consensus.fuse_scores`.

    Runs become `(B, K, N)` scores plus a valid mask (`runs_to_tensor`), are fused, and come back as
    a run. A teacher that did not score a passage is missing there: `zscore` / `minmax` average the
    teachers that scored it, `rrf` adds nothing for it.

    Args:
        runs: `{teacher: {qid: {docid: score}}}` (order = teacher order of `weights`).
        method: `zscore`, `minmax` or `rrf` (see `consensus.FUSION_METHODS`).
        weights: one non-negative weight per teacher; default all 1.
        rrf_k: RRF's rank offset.
        candidates: passages to fuse per query; default: those some teacher scored.
        missing: how a teacher that did not score a passage counts (`consensus.MISSING_POLICIES`):
            `drop` (it abstains) or `floor` (at its lowest score of the query).

    Returns:
        The fused run (passages no positively weighted teacher scored are left out).

    Example:
        >>> fuse_runs({"a": {"q": {"x": 1.0, "y": 2.0}}, "b": {"q": {"x": 5.0, "y": 1.0}}}, "rrf", rrf_k=1.0)
        {'q': {'x': 0.8333333333333333, 'y': 0.8333333333333333}}
    """
    import torch

    from multiteacher.consensus import fuse_scores

    t = runs_to_tensor(runs, candidates)
    w = None if weights is None else torch.tensor(list(weights), dtype=torch.float64)
    if w is not None and len(w) != len(t.teachers):
        raise ValueError(f"{len(w)} weights for {len(t.teachers)} teachers")
    fused, valid = fuse_scores(t.scores, t.valid, method, w, rrf_k, missing=missing)
    return tensor_to_run(fused, valid, t.qids, t.docids)


# ----------------------------------------------------------------------------- dataset


@dataclass
class IRData:
    """A re-ranking set: queries, passages of the candidates, the candidate run, qrels, extra runs.

    `fingerprint` (a content hash of queries, candidate pairs and passage texts) keys the teacher
    cache, so a changed set never reuses stale teacher scores.

    Example:
        >>> d = IRData("toy", {"q": "flea"}, {"a": "Fleas are insects."}, {"q": {"a": 1.0}})
        >>> d.pairs(), len(d.fingerprint)
        ([('q', 'a')], 16)
    """

    name: str
    queries: dict[str, str]
    passages: dict[str, str]
    candidates: Run
    qrels: Qrels | None = None
    runs: dict[str, Run] = field(default_factory=dict)
    fingerprint: str = ""
    #: the run(s) the candidates come from (several: their union, ordered by reciprocal-rank fusion); empty:
    #: the loader's default (`bm25.run`, or the only run)
    first_stage: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = self.compute_fingerprint()

    def compute_fingerprint(self) -> str:
        """Content hash of queries, candidate pairs and passage texts (keys the teacher cache)."""
        h = hashlib.sha256()
        for qid in sorted(self.candidates):
            h.update(f"q\t{qid}\t{self.queries.get(qid, '')}\n".encode())
            for did in sorted(self.candidates[qid]):
                h.update(f"d\t{did}\t{self.passages.get(did, '')}\n".encode())
        return h.hexdigest()[:16]

    @property
    def qids(self) -> list[str]:
        """Queries that have candidates, in a stable order."""
        return sorted(q for q in self.candidates if q in self.queries)

    def pairs(self, qids: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """(qid, docid) candidate pairs, by query then candidate rank."""
        out = []
        for qid in self.qids if qids is None else qids:
            ranked = sorted(self.candidates[qid].items(), key=lambda kv: (-kv[1], kv[0]))
            out += [(qid, d) for d, _ in ranked]
        return out

    def subset(self, qids: Iterable[str], name: str | None = None) -> IRData:
        """The same data restricted to `qids` (e.g. train minus validation)."""
        keep = [q for q in qids if q in self.candidates]
        docs = {d for q in keep for d in self.candidates[q]}
        return IRData(
            name=name or self.name,
            queries={q: self.queries[q] for q in keep if q in self.queries},
            passages={d: t for d, t in self.passages.items() if d in docs},
            candidates={q: dict(self.candidates[q]) for q in keep},
            qrels=None if self.qrels is None else {q: dict(self.qrels[q]) for q in keep if q in self.qrels},
            runs={n: {q: dict(r[q]) for q in keep if q in r} for n, r in self.runs.items()},
            first_stage=self.first_stage,
        )

    def validate(self, source: str = "") -> IRData:
        """Non-empty; every candidate query has text and every candidate passage has text; qrels
        name at least one of the queries (qrels of another set are a common mistake)."""
        where = source or self.name
        if not self.queries:
            raise DataError(f"{where}: the queries file holds no queries — nothing to re-rank")
        if not self.candidates:
            raise DataError(f"{where}: the candidate run has no queries — nothing to re-rank")
        for qid, docs in self.candidates.items():
            if qid not in self.queries:
                raise DataError(f"{where}: candidate run names query {_q(qid)} that is not in the queries file")
            for did in docs:
                if did not in self.passages:
                    raise DataError(f"{where}: candidate {_q(did)} of query {_q(qid)} has no passage in the corpus "
                                    "file")
        if self.qrels and not set(self.qrels) & set(self.queries):
            raise DataError(f"{where}: the qrels name none of the {len(self.queries)} queries "
                            "(qrels of another set?) — use the qrels that belong to these queries")
        return self


def _find_queries(root: Path) -> dict[str, str]:
    if (root / "queries.tsv").is_file():
        return read_queries_tsv(root / "queries.tsv")
    if (root / "queries.jsonl").is_file():
        return read_queries_jsonl(root / "queries.jsonl")
    raise DataError(f"{root}: no queries.tsv or queries.jsonl — add one (BEIR or 'qid<TAB>text')")


def _find_qrels(root: Path, split: str) -> Qrels | None:
    for p in (root / "qrels.txt", root / "qrels" / f"{split}.tsv", root / "qrels" / f"{split}.txt"):
        if p.is_file():
            return read_qrels(p)
    return None


def first_stage_candidates(runs: Mapping[str, Run], names: Sequence[str], k: int | None = None) -> Run:
    """Candidates from the top-`k` of each named run: the run itself, or the union of several (RRF order).

    The union's order (its "first stage" baseline) is reciprocal-rank fusion (Cormack et al., SIGIR 2009;
    `fuse_runs(..., "rrf")`, k = 60): no score calibration needed, and a run that did not retrieve a
    document adds nothing for it.

    Args:
        runs: the set's runs by name (`bm25` included).
        names: one run name, or several (their union).
        k: candidates kept per query and run (None: all).

    Returns:
        `{qid: {docid: score}}`: a single run's own scores, or the RRF scores of the cut runs.

    Example:
        >>> first_stage_candidates({"a": {"q": {"x": 2.0, "y": 1.0}}, "b": {"q": {"z": 1.0}}}, ["a", "b"], k=1)
        {'q': {'x': 0.01639344262295082, 'z': 0.01639344262295082}}
    """

    def cut(r: Run) -> Run:
        if k is None:
            return r
        return {q: dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:k]) for q, d in r.items()}

    if len(names) == 1:
        return cut(runs[names[0]])
    return fuse_runs({n: cut(runs[n]) for n in names}, "rrf")


def load_dir(
    root: str | Path,
    name: str | None = None,
    split: str = "test",
    candidates: str | None = None,
    first_stage: Sequence[str] | None = None,
) -> IRData:
    """A BEIR-style directory (the trec-dl layout included) with a candidate run.

    `candidates` names the run file to re-rank (default `bm25.run`, else the only `*.run`); the other
    `*.run` files are kept in `IRData.runs`. Without any run file every query is paired with every
    qrels-judged document (BEIR without a first stage). `first_stage` instead names runs by their stem
    (`bm25`, `splade-pp-ed`): one is re-ranked as `candidates` would be; several are re-ranked as
    their union, ordered by reciprocal-rank fusion (`first_stage_candidates`), and all stay in `IRData.runs`.

    Args:
        root: the directory.
        name: the set's name (default: the directory name).
        split: the BEIR qrels split (`qrels/<split>.tsv`).
        candidates: the run file to re-rank.
        first_stage: run names whose candidates are re-ranked (a missing one is a DataError naming the
            runs found).

    Returns:
        The validated `IRData`.

    Example:
        >>> load_dir("../shared/data/trec-dl/dl19", first_stage=["splade-pp-ed"]).first_stage  # doctest: +SKIP
        ('splade-pp-ed',)
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"missing IR directory: {root} does not exist — {TREC_DL_HINT}")
    queries = _find_queries(root)
    qrels = _find_qrels(root, split)
    run_files = sorted(root.glob("*.run"))
    fs = tuple(first_stage or ())
    if fs:
        found = [p.stem for p in run_files]
        for n in fs:
            if n not in found:
                raise DataError(
                    f"set {_q(name or root.name)}: first-stage run {_q(n)} not found in {root} "
                    f"(runs found: {', '.join(found) or 'none'}) — name one of these"
                )
        if len(fs) == 1:
            candidates = f"{fs[0]}.run"
    cand_file = root / candidates if candidates else root / "bm25.run"
    if len(fs) > 1:
        runs = {p.stem: read_trec_run(p) for p in run_files}
        cand = first_stage_candidates(runs, fs)
    else:
        if not cand_file.is_file():
            if candidates:
                raise DataError(f"{root}: candidate run {_q(candidates)} not found")
            cand_file = run_files[0] if len(run_files) == 1 else None
        if cand_file is not None:
            cand = read_trec_run(cand_file)
        elif qrels is not None:
            cand = {q: {d: 0.0 for d in docs} for q, docs in qrels.items() if q in queries}
        else:
            raise DataError(f"{root}: no candidate run (bm25.run) and no qrels to build candidates from")
        runs = {p.stem: read_trec_run(p) for p in run_files if p != cand_file}
    needed = {d for docs in cand.values() for d in docs}
    passages = read_corpus_jsonl(require_path(root / "corpus.jsonl", "corpus", TREC_DL_HINT), ids=needed)
    return IRData(name or root.name, queries, passages, cand, qrels, runs, first_stage=fs).validate(str(root))


def trec_dl_dir(data_dir: str | Path, name: str) -> Path:
    """`<data_dir>/trec-dl/<set>` for `dl19` or `trec-dl/dl19`.

    Args:
        data_dir: the data directory.
        name: `dl19` or `trec-dl/dl19`.

    Returns:
        The set's folder.

    Example:
        >>> trec_dl_dir("/data", "trec-dl/dl19").as_posix()
        '/data/trec-dl/dl19'
    """
    set_name = name.split("/")[-1]
    return Path(data_dir) / "trec-dl" / set_name


def load_trec_dl(data_dir: str | Path, name: str, first_stage: Sequence[str] | None = None) -> IRData:
    """One TREC-DL set from the shared layout (`dl19`, `dl21`, `dl22`).

    Args:
        data_dir: the data directory.
        name: `dl19` or `trec-dl/dl19`.
        first_stage: run names to re-rank (default: `bm25`); see `load_dir`.

    Returns:
        The `IRData` (BM25 top-100 candidates, qrels where judged, the other runs in `runs`).

    Example:
        >>> len(load_trec_dl("../shared/data", "dl19").qids)  # doctest: +SKIP
        43
    """
    root = trec_dl_dir(data_dir, name)
    require_path(root, f"TREC-DL set {name!r}", TREC_DL_HINT)
    return load_dir(root, name=root.name, first_stage=first_stage)


def load_ir_datasets(dataset_id: str, candidates_k: int = 100) -> IRData:
    """An `ir_datasets` id (optional extra): queries, qrels, the scoreddocs top-k (or judged docs).

    Args:
        dataset_id: e.g. `msmarco-passage/trec-dl-2019/judged`.
        candidates_k: candidates per query from the scored documents.

    Returns:
        The validated `IRData`.

    Example:
        >>> load_ir_datasets("msmarco-passage/trec-dl-2019/judged")  # doctest: +SKIP
    """
    try:
        import ir_datasets  # type: ignore[import-not-found]
    except ModuleNotFoundError:
        raise DataError(
            f"irds:{dataset_id}: the ir_datasets package is not installed — pip install 'multiteacher[ir-datasets]'"
        ) from None
    try:
        ds = ir_datasets.load(dataset_id)
    except KeyError:
        raise DataError(f"irds:{dataset_id}: unknown ir_datasets id") from None
    queries = {q.query_id: getattr(q, "text", "") for q in ds.queries_iter()}
    qrels: Qrels | None = None
    if ds.has_qrels():
        qrels = {}
        for r in ds.qrels_iter():
            qrels.setdefault(r.query_id, {})[r.doc_id] = int(r.relevance)
    if ds.has_scoreddocs():
        cand: Run = {}
        for s in ds.scoreddocs_iter():
            cand.setdefault(s.query_id, {})[s.doc_id] = float(s.score)
        cand = {q: dict(sorted(d.items(), key=lambda kv: -kv[1])[:candidates_k]) for q, d in cand.items()}
    elif qrels is not None:
        cand = {q: {d: 0.0 for d in docs} for q, docs in qrels.items()}
    else:
        raise DataError(f"irds:{dataset_id}: has neither scoreddocs nor qrels to re-rank")
    cand = {q: d for q, d in cand.items() if q in queries}
    store = ds.docs_store()
    needed = sorted({d for docs in cand.values() for d in docs})
    passages = {}
    for doc in store.get_many_iter(needed):
        passages[doc.doc_id] = passage_text(getattr(doc, "title", ""), getattr(doc, "text", ""))
    return IRData(f"irds:{dataset_id}", queries, passages, cand, qrels).validate(f"irds:{dataset_id}")


def load_ir(spec: str, data_dir: str | Path | None = None, first_stage: Sequence[str] | None = None) -> IRData:
    """Load by spec: `trec-dl/dl19` | `dl19` | a BEIR directory | `irds:<ir_datasets id>`.

    Args:
        spec: the set spec.
        data_dir: the data directory (default: resolved as `--data-dir` > `MULTITEACHER_DATA`).
        first_stage: run names whose candidates are re-ranked (folders only; default: `bm25`, see `load_dir`).

    Returns:
        The validated `IRData`.

    Example:
        >>> load_ir("trec-dl/dl21", "../shared/data").qrels is not None  # doctest: +SKIP
        True
    """
    if spec.startswith("irds:"):
        if first_stage:
            raise DataError(f"{spec}: an ir_datasets set has one first stage (its scoreddocs) — drop data.first_stage")
        return load_ir_datasets(spec[len("irds:") :])
    if spec in TREC_DL_SETS or spec.startswith("trec-dl/"):
        if data_dir is None:
            from multiteacher.data.registry import resolve_data_dir

            data_dir = resolve_data_dir()
        return load_trec_dl(data_dir, spec, first_stage)
    path = Path(spec)
    if not path.is_absolute() and data_dir is not None and not path.exists():
        path = Path(data_dir) / spec
    return load_dir(path, first_stage=first_stage)


def write_qrels_tsv(path: str | Path, qrels: Qrels) -> None:
    """BEIR qrels TSV (with header), for exporting derived sets.

    Args:
        path: where to write (atomically).
        qrels: `{qid: {docid: grade}}`.

    Returns:
        None.

    Example:
        >>> write_qrels_tsv("/tmp/qrels.tsv", {"q": {"a": 2}})  # doctest: +SKIP
    """
    from multiteacher.io import atomic_open

    with atomic_open(path, "w") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["query-id", "corpus-id", "score"])
        for q in sorted(qrels):
            for d in sorted(qrels[q]):
                w.writerow([q, d, qrels[q][d]])


# ----------------------------------------------------------------------------- registry


def _check_trec_dl(set_name: str):
    def check(data_dir: Path) -> str:
        d = load_trec_dl(data_dir, set_name)
        n_pairs = sum(len(v) for v in d.candidates.values())
        judged = "no qrels" if d.qrels is None else f"{sum(len(v) for v in d.qrels.values())} judgments"
        extra = f", runs: {', '.join(sorted(d.runs))}" if d.runs else ""
        return f"{len(d.qids)} queries, {n_pairs} BM25 candidates, {len(d.passages)} passages, {judged}{extra}"

    return check


for _set in TREC_DL_SETS:
    register_dataset(
        DatasetInfo(
            name=f"trec-dl/{_set}",
            description=f"TREC Deep Learning {_set} passage queries with BM25 top-100 candidates",
            check=_check_trec_dl(_set),
        )
    )
