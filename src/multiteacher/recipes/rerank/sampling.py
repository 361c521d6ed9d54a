"""Training groups for the six objectives, each from its label source (qrels or teacher scores).

A group is one query with a fixed number of passages and one target per passage:
  - `bce`:       qrels; 1 positive : k negatives, targets 1/0 (pointwise BCE on each pair);
  - `hinge`:     qrels; (positive, negative), targets 1/0;
  - `infonce`:   qrels; positive + 7 negatives drawn with replacement from the candidates;
  - `marginmse`: teacher; (d1, d2) with d1 from the teacher's top `pos_top`, d2 from the rest,
                 targets = teacher scores (the loss uses the margin);
  - `ranknet`, `adrmse`, `listnet`: teacher; `list_size` passages drawn without replacement from the
                 teacher's top `list_from_top`, targets = teacher scores (losses use the order).
Groups are drawn once from a seeded generator, so a resumed run sees the same data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from multiteacher.config import StrictModel

Objective = Literal["bce", "hinge", "infonce", "marginmse", "ranknet", "adrmse", "listnet"]
LABEL_SOURCE: dict[str, str] = {
    "bce": "qrels",
    "hinge": "qrels",
    "infonce": "qrels",
    "marginmse": "teacher",
    "ranknet": "teacher",
    "adrmse": "teacher",
    "listnet": "teacher",
}


class SamplingConfig(StrictModel):
    """How training groups are drawn."""

    groups_per_query: int = Field(64, ge=1)
    bce_negatives: int = Field(1, ge=1)  # BCE: 1 positive : k negatives
    infonce_negatives: int = Field(7, ge=1)
    pos_min_rel: int = 2  # passage qrels: rel >= 2 is relevant
    neg_max_rel: int = 0  # a negative is judged <= this or unjudged
    pos_top: int = Field(10, ge=1)  # MarginMSE: first passage from the teacher's top-k
    list_size: int = Field(8, ge=2)
    list_from_top: int = Field(100, ge=2)
    pairs_per_batch: int | None = Field(None, ge=1)  # if set: fit.batch_size = this // group size


def group_size(objective: str, cfg: SamplingConfig) -> int:
    """Passages per training group for `objective`."""
    return {
        "bce": 1 + cfg.bce_negatives,
        "hinge": 2,
        "infonce": 1 + cfg.infonce_negatives,
        "marginmse": 2,
    }.get(objective, cfg.list_size)


@dataclass(frozen=True)
class Group:
    """One training example: a query, its passages and one target per passage."""

    qid: str
    docs: tuple[str, ...]
    targets: tuple[float, ...]


def _qrels_groups(
    objective: str,
    qid: str,
    cands: list[str],
    qrels: Mapping[str, int],
    cfg: SamplingConfig,
    rng: np.random.Generator,
) -> list[Group]:
    pos = [d for d in cands if qrels.get(d, 0) >= cfg.pos_min_rel]
    neg = [d for d in cands if qrels.get(d, 0) <= cfg.neg_max_rel]
    if not pos or not neg:
        return []
    k = {"bce": cfg.bce_negatives, "hinge": 1, "infonce": cfg.infonce_negatives}[objective]
    out = []
    for _ in range(cfg.groups_per_query):
        p = pos[rng.integers(len(pos))]
        ns = [neg[i] for i in rng.integers(len(neg), size=k)]  # with replacement
        out.append(Group(qid, (p, *ns), (1.0,) + (0.0,) * k))
    return out


def _teacher_groups(
    objective: str,
    qid: str,
    teacher: Mapping[str, float],
    cfg: SamplingConfig,
    rng: np.random.Generator,
) -> list[Group]:
    ranked = sorted(teacher, key=lambda d: (-teacher[d], d))
    out = []
    if objective == "marginmse":
        top, rest = ranked[: cfg.pos_top], ranked[cfg.pos_top :]
        if not rest:
            top, rest = ranked[:1], ranked[1:]
        if not rest:
            return []
        for _ in range(cfg.groups_per_query):
            a, b = top[rng.integers(len(top))], rest[rng.integers(len(rest))]
            out.append(Group(qid, (a, b), (teacher[a], teacher[b])))
        return out
    pool = ranked[: cfg.list_from_top]
    size = min(cfg.list_size, len(pool))
    if size < 2:
        return []
    for _ in range(cfg.groups_per_query):
        idx = np.sort(rng.choice(len(pool), size=size, replace=False))  # teacher order
        docs = tuple(pool[i] for i in idx)
        out.append(Group(qid, docs, tuple(teacher[d] for d in docs)))
    return out


def build_groups(
    objective: str,
    qids: list[str],
    candidates: Mapping[str, Mapping[str, float]],
    cfg: SamplingConfig,
    seed: int,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    teacher: Mapping[str, Mapping[str, float]] | None = None,
) -> list[Group]:
    """All training groups of `objective` over `qids` (queries without usable labels are skipped)."""
    rng = np.random.default_rng(seed)
    out: list[Group] = []
    for q in qids:
        cands = sorted(candidates.get(q, {}), key=lambda d: (-candidates[q][d], d))
        if LABEL_SOURCE[objective] == "qrels":
            if qrels is None or q not in qrels:
                continue
            out += _qrels_groups(objective, q, cands, qrels[q], cfg, rng)
        else:
            if teacher is None or q not in teacher:
                continue
            out += _teacher_groups(objective, q, {d: teacher[q][d] for d in cands if d in teacher[q]}, cfg, rng)
    return out
