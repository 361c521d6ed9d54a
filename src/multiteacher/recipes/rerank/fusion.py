"""Per-query score handling for ranking teachers: normalisation, weighted fusion, RRF, rank lists.

A run is `{qid: {docid: score}}` (higher is better). All functions are pure and work per query,
because scores from different teachers (BM25, cosine, minus-rank) live on unrelated scales.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

Run = dict[str, dict[str, float]]


def normalize_query(scores: Mapping[str, float], method: Literal["zscore", "minmax", "none"]) -> dict[str, float]:
    """One query's scores: z-score (population std) or min-max to [0, 1]; constant lists map to 0."""
    if method == "none" or not scores:
        return dict(scores)
    vals = list(scores.values())
    if method == "zscore":
        mu = sum(vals) / len(vals)
        sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / len(vals))
        return {d: (v - mu) / sd if sd > 0 else 0.0 for d, v in scores.items()}
    lo, hi = min(vals), max(vals)
    return {d: (v - lo) / (hi - lo) if hi > lo else 0.0 for d, v in scores.items()}


def ranks(scores: Mapping[str, float]) -> dict[str, int]:
    """1-based ranks by descending score (ties broken by docid, deterministic)."""
    order = sorted(scores, key=lambda d: (-scores[d], d))
    return {d: r for r, d in enumerate(order, 1)}


def fuse(
    runs: Sequence[Mapping[str, Mapping[str, float]]],
    method: Literal["zscore", "minmax", "rrf"] = "zscore",
    weights: Sequence[float] | None = None,
    rrf_k: float = 60.0,
) -> Run:
    """Fuse teachers per query: weighted mean of normalised scores, or reciprocal-rank fusion.

    Only documents that every teacher scored for a query are fused (they score the same candidates);
    queries missing from any teacher are dropped. RRF: sum_t w_t / (k + rank_t(d)).
    """
    if not runs:
        return {}
    w = list(weights) if weights is not None else [1.0] * len(runs)
    if len(w) != len(runs):
        raise ValueError(f"{len(w)} weights for {len(runs)} teachers")
    total = sum(w)
    qids = set(runs[0]).intersection(*[set(r) for r in runs[1:]])
    out: Run = {}
    for q in sorted(qids):
        docs = set(runs[0][q]).intersection(*[set(r[q]) for r in runs[1:]])
        if method == "rrf":
            per = [ranks({d: r[q][d] for d in docs}) for r in runs]
            out[q] = {d: sum(wi / (rrf_k + p[d]) for wi, p in zip(w, per)) for d in docs}
        else:
            per_n = [normalize_query({d: r[q][d] for d in docs}, method) for r in runs]
            out[q] = {d: sum(wi * p[d] for wi, p in zip(w, per_n)) / total for d in docs}
    return out


def ranks_to_scores(rank_run: Mapping[str, Mapping[str, int]]) -> Run:
    """Orderings (rank 1 = best) as scores: minus the rank, so higher is better."""
    return {q: {d: -float(r) for d, r in docs.items()} for q, docs in rank_run.items()}


def complete(run: Mapping[str, Mapping[str, float]], candidates: Mapping[str, Mapping[str, float]]) -> Run:
    """Give candidates a teacher did not rank a score below every ranked one (LLM runs may be short)."""
    out: Run = {}
    for q, cands in candidates.items():
        if q not in run:
            continue
        scored = dict(run[q])
        floor = min(scored.values(), default=0.0) - 1.0
        for d in cands:
            scored.setdefault(d, floor)
        out[q] = {d: scored[d] for d in cands}
    return out
