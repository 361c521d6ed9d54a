"""Training groups for the objectives, each from its label source (qrels or teacher scores).

A group is one query with a fixed number of passages and one target per passage; how it is drawn
is the objective's `groups` (see `objectives.OBJECTIVES`):
  - `positive_negatives` (bce, hinge, infonce): qrels; 1 positive + k negatives (with replacement
    from the candidates), targets 1/0;
  - `teacher_pair` (marginmse): (d1, d2) with d1 from the teacher's top `pos_top`, d2 from the rest,
    targets = teacher scores (the loss uses the margin);
  - `teacher_list` (ranknet, adrmse, listnet): `list_size` passages drawn without replacement from the
    teacher's top `list_from_top`, targets = teacher scores (losses use the order); a query whose teacher
    scored fewer passages gets shorter lists (batches pad them with a mask, see `training.make_collate`).
Only passages the teacher scored are drawn (a teacher that did not retrieve a passage has no score).
Groups are drawn once from a seeded generator, so a resumed run sees the same data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from multiteacher.config import StrictModel
from multiteacher.recipes.rerank.objectives import LabelSource, get_objective


class SamplingConfig(StrictModel):
    """How training groups are drawn.

    Example:
        >>> SamplingConfig(pairs_per_batch=32).groups_per_query
        64
    """

    groups_per_query: int = Field(64, ge=1, description="Training groups drawn per training query.")
    bce_negatives: int = Field(1, ge=1, le=1000, description="BCE: negatives per positive (1 positive : k negatives).")
    infonce_negatives: int = Field(7, ge=1, le=1000, description="InfoNCE: negatives per positive.")
    pos_min_rel: int = Field(2, description="Qrels objectives: a passage judged >= this is a positive.")
    neg_max_rel: int = Field(0, description="Qrels objectives: a negative is judged <= this, or unjudged.")
    pos_top: int = Field(10, ge=1, description="MarginMSE: the first passage comes from the teacher's top-k.")
    list_size: int = Field(8, ge=2, le=1000, description="Listwise objectives: passages per group.")
    list_from_top: int = Field(100, ge=2, description="Listwise objectives: draw from the teacher's top-k.")
    pairs_per_batch: int | None = Field(
        None, ge=1, le=65536,
        description="If set, fit.batch_size = this // group size (equal pairs per step across objectives)."
    )


def group_size(objective: str, cfg: SamplingConfig) -> int:
    """Passages per training group for `objective` (see `ObjectiveSpec.group_size`).

    Args:
        objective: objective name.
        cfg: the sampling config.

    Returns:
        The group size.

    Example:
        >>> group_size("infonce", SamplingConfig())
        8
    """
    return get_objective(objective).group_size(cfg)


def label_source(objective: str) -> LabelSource:
    """Where `objective` gets its labels: `qrels`, `teacher_scores` or `teacher_ranking`.

    Args:
        objective: objective name.

    Returns:
        The label source.

    Example:
        >>> label_source("bce")
        'qrels'
    """
    return get_objective(objective).label_source


@dataclass(frozen=True)
class Group:
    """One training example: a query, its passages and one target per passage.

    Example:
        >>> Group("q1", ("d1", "d2"), (1.0, 0.0)).docs
        ('d1', 'd2')
    """

    qid: str
    docs: tuple[str, ...]
    targets: tuple[float, ...]


def _qrels_groups(
    k: int,
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
    out = []
    for _ in range(cfg.groups_per_query):
        p = pos[rng.integers(len(pos))]
        ns = [neg[i] for i in rng.integers(len(neg), size=k)]  # with replacement
        out.append(Group(qid, (p, *ns), (1.0,) + (0.0,) * k))
    return out


def _teacher_groups(
    pair: bool,
    qid: str,
    teacher: Mapping[str, float],
    cfg: SamplingConfig,
    rng: np.random.Generator,
) -> list[Group]:
    ranked = sorted(teacher, key=lambda d: (-teacher[d], d))
    out = []
    if pair:
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
    """All training groups of `objective` over `qids` (queries without usable labels are skipped).

    Args:
        objective: objective name (see `objectives.OBJECTIVES`).
        qids: training queries.
        candidates: `{qid: {docid: first-stage score}}`.
        cfg: the sampling config.
        seed: seed of the group generator.
        qrels: judgments, for qrels objectives.
        teacher: `{qid: {docid: score}}` of the training teacher, for teacher objectives; a passage
            it did not score is never drawn.

    Returns:
        The groups, query by query.

    Example:
        >>> build_groups("marginmse", ["q"], {"q": {"a": 2.0, "b": 1.0}}, SamplingConfig(groups_per_query=1),
        ...              0, teacher={"q": {"a": 1.0, "b": 0.0}})
        [Group(qid='q', docs=('a', 'b'), targets=(1.0, 0.0))]
    """
    spec = get_objective(objective)
    rng = np.random.default_rng(seed)
    out: list[Group] = []
    for q in qids:
        cands = sorted(candidates.get(q, {}), key=lambda d: (-candidates[q][d], d))
        if not spec.needs_teacher:
            if qrels is None or q not in qrels:
                continue
            out += _qrels_groups(spec.num_negatives(cfg), q, cands, qrels[q], cfg, rng)
        else:
            if teacher is None or q not in teacher:
                continue
            scored = {d: teacher[q][d] for d in cands if d in teacher[q]}
            out += _teacher_groups(spec.groups == "teacher_pair", q, scored, cfg, rng)
    return out
