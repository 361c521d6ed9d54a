"""Re-rank a TREC run with a cross-encoder folder: what `multiteacher rerank` does.

Why: a student exported by the rerank recipe (or any Hugging Face sequence-classification model with
one label) is meant to re-rank someone's own first stage. This module loads such a folder, checks the
user's files up front (so a bad file is one line and nothing is written), scores each query's top-k
candidates with the engine's fast pair-scoring path and writes the re-ranked run atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from multiteacher.config import quote
from multiteacher.data.ir import (
    Run,
    read_corpus_jsonl,
    read_corpus_tsv,
    read_queries_jsonl,
    read_queries_tsv,
    read_trec_run,
    write_trec_run,
)
from multiteacher.errors import DataError


def load_cross_encoder(path: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a cross-encoder folder; anything else is a one-line DataError.

    A cross-encoder here is a Hugging Face `*ForSequenceClassification` model with one label (a score
    per pair), with its tokenizer in the same folder, as `multiteacher.recipes.rerank.model.export` and
    `sentence_transformers.CrossEncoder.save` write it.

    Args:
        path: the model folder.

    Returns:
        `(model in eval mode, tokenizer)`.

    Example:
        >>> model, tok = load_cross_encoder("runs/rerank-trecdl/model")  # doctest: +SKIP
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    p = Path(path).expanduser()
    if not p.is_dir():
        raise DataError(f"MODEL {quote(str(path))}: no such folder — give a cross-encoder folder (config.json, "
                        "weights, tokenizer), e.g. a run's model/")
    if not (p / "config.json").is_file():
        raise DataError(f"MODEL {p}: no config.json — not a Hugging Face model folder")
    try:
        conf = AutoConfig.from_pretrained(p)
    except Exception as e:  # any parse failure of a user's file is one line
        raise DataError(f"MODEL {p}: config.json cannot be read ({type(e).__name__}: {str(e)[:100]})") from None
    archs = list(getattr(conf, "architectures", None) or [])
    if not any(a.endswith("ForSequenceClassification") for a in archs) or conf.num_labels != 1:
        raise DataError(f"MODEL {p}: not a cross-encoder (architectures {archs or 'none'}, {conf.num_labels} labels) "
                        "— give a sequence-classification model with one label")
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # errors and the scoring bar stay the only output
    try:
        model = AutoModelForSequenceClassification.from_pretrained(p).eval()
        tok = AutoTokenizer.from_pretrained(p)
    except Exception as e:  # missing weights/tokenizer files
        raise DataError(f"MODEL {p}: cannot load the model or its tokenizer ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:120] if str(e) else ''})") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return model, tok


def read_queries_file(path: str | Path) -> dict[str, str]:
    """Queries from `qid<TAB>text` (TSV) or BEIR JSONL (`_id`, `text`), chosen by the `.jsonl` suffix.

    Args:
        path: the queries file.

    Returns:
        `{qid: text}`.

    Example:
        >>> read_queries_file("queries.tsv")  # doctest: +SKIP
    """
    return read_queries_jsonl(path) if str(path).endswith(".jsonl") else read_queries_tsv(path)


def read_corpus_file(path: str | Path, ids: set[str]) -> dict[str, str]:
    """Passages `ids` from BEIR `corpus.jsonl` (`_id`, `title`, `text`) or `docid<TAB>text` TSV.

    Args:
        path: the corpus file (`.jsonl` is read as BEIR, anything else as TSV).
        ids: the passages needed.

    Returns:
        `{docid: text}` for the ids found.

    Example:
        >>> read_corpus_file("corpus.jsonl", {"7067032"})  # doctest: +SKIP
    """
    return read_corpus_jsonl(path, ids=ids) if str(path).endswith(".jsonl") else read_corpus_tsv(path, ids=ids)


def cut_run(run: Mapping[str, Mapping[str, float]], k: int | None) -> Run:
    """Each query's top `k` documents by score (ties by document id, as `write_trec_run` orders them).

    Args:
        run: `{qid: {docid: score}}`.
        k: documents kept per query, or None for all.

    Returns:
        The cut run.

    Example:
        >>> cut_run({"q": {"a": 1.0, "b": 2.0, "c": 2.0}}, 2)
        {'q': {'b': 2.0, 'c': 2.0}}
    """
    return {q: dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:k]) for q, d in run.items()}


def rerank(
    model: Any,
    tok: Any,
    queries: Mapping[str, str],
    passages: Mapping[str, str],
    run: Mapping[str, Mapping[str, float]],
    max_length: int = 512,
    batch_size: int = 32,
    progress: bool = True,
) -> Run:
    """The cross-encoder's score (its raw logit) for every (query, document) pair of `run`.

    Args:
        model: a sequence-classification model with one label.
        tok: its tokenizer.
        queries: `{qid: text}` (every query of `run`).
        passages: `{docid: text}` (every document of `run`).
        run: the candidates, `{qid: {docid: first-stage score}}`.
        max_length: tokens per pair (passages truncated first).
        batch_size: pairs per forward pass.
        progress: show a progress bar (on a terminal).

    Returns:
        `{qid: {docid: cross-encoder score}}`.

    Example:
        >>> rerank(model, tok, {"q": "flea"}, {"a": "Fleas are insects."}, {"q": {"a": 1.0}})  # doctest: +SKIP
    """
    from multiteacher.models.pair_scoring import score_pairs

    pairs = [(q, d) for q in sorted(run) for d in sorted(run[q])]
    scores = score_pairs(
        model, tok, [queries[q] for q, _ in pairs], [passages[d] for _, d in pairs], max_length, batch_size,
        progress=progress,
    )
    out: Run = {}
    for (q, d), s in zip(pairs, scores):
        out.setdefault(q, {})[d] = float(s)
    return out


def rerank_files(
    model_dir: str | Path,
    queries_file: str | Path,
    corpus_file: str | Path,
    run_file: str | Path,
    out: str | Path,
    top_k: int | None = 100,
    batch_size: int = 32,
    max_length: int | None = None,
    tag: str = "multiteacher",
    progress: bool = True,
    device: str = "auto",
) -> dict[str, int]:
    """Read and check every input, re-rank the run's top-k with the model, write the new run atomically.

    Every check runs before scoring, so a bad input is one DataError and `out` is never half-written
    (it is replaced in one rename, or left as it was).

    Args:
        model_dir: a cross-encoder folder (see `load_cross_encoder`).
        queries_file: queries, TSV `qid<TAB>text` or BEIR JSONL.
        corpus_file: passages, BEIR `corpus.jsonl` or TSV `docid<TAB>text`.
        run_file: the TREC run to re-rank.
        out: where the re-ranked TREC run goes (only the top-k per query, by the model's score).
        top_k: candidates re-ranked per query (None: all).
        batch_size: pairs per forward pass.
        max_length: tokens per pair (default: the tokenizer's limit, at most 512).
        tag: the run tag column.
        progress: show a progress bar.
        device: `auto` (a GPU when there is one, else the CPU), `cpu`, `cuda`, `cuda:1`, ...

    Returns:
        `{"queries": ..., "pairs": ...}` re-ranked.

    Example:
        >>> rerank_files("model", "queries.tsv", "corpus.jsonl", "bm25.run", "out.run")  # doctest: +SKIP
        {'queries': 43, 'pairs': 4300}
    """
    if Path(out).is_dir():
        raise DataError(f"--out {out}: is a folder — give the path of the run file to write")
    model, tok = load_cross_encoder(model_dir)
    queries = read_queries_file(queries_file)
    run = cut_run(read_trec_run(run_file), top_k)
    if not run:
        raise DataError(f"{run_file}: the run holds no lines — nothing to re-rank")
    for q in sorted(run):
        if q not in queries:
            raise DataError(f"{run_file}: query {quote(q)} is not in the queries file {queries_file} "
                            f"({len(queries)} queries) — give the queries this run was made for")
    needed = {d for docs in run.values() for d in docs}
    passages = read_corpus_file(corpus_file, needed)
    for q in sorted(run):
        for d in sorted(run[q]):
            if d not in passages:
                raise DataError(f"{run_file}: passage {quote(d)} (query {quote(q)}) is not in the corpus file "
                                f"{corpus_file} — give the corpus this run was made from")
    limit = getattr(tok, "model_max_length", 512) or 512
    length = max_length or int(min(512, limit))
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model.to(torch.device(device))
    except (RuntimeError, AssertionError) as e:
        raise DataError(f"--device {device}: not usable here ({str(e).splitlines()[0][:100]})") from None
    scored = rerank(model, tok, queries, passages, run, length, batch_size, progress)
    try:
        write_trec_run(out, scored, tag=tag)
    except OSError as e:
        from multiteacher.rundir import disk_error

        raise disk_error(e, f"rerank: cannot write {out}", "free space or fix permissions, then re-rank") from None
    return {"queries": len(scored), "pairs": sum(len(v) for v in scored.values())}
