"""Training pieces of the rerank recipe for the engine's fit loop: groups, batches, loss, step.

The loop itself is the engine's (`multiteacher.engine.loop.fit`); this module only turns training
groups into batches (`make_collate`), the objective into a loss (`make_loss`, from the engine
registry via `objectives.OBJECTIVES`) and a step function (`step_fn`).
"""

from __future__ import annotations

from typing import Any

import torch

from multiteacher.data.ir import IRData
from multiteacher.errors import ConfigError, DataError
from multiteacher.models.pair_scoring import clip_texts
from multiteacher.recipes.rerank.model import encode, forward_scores
from multiteacher.recipes.rerank.objectives import get_objective
from multiteacher.recipes.rerank.sampling import Group, build_groups


class GroupDataset(torch.utils.data.Dataset):
    """Training groups (a query and its passages with targets) as a map-style dataset.

    Args:
        groups: the training groups.
        texts: the set owning each query, by qid (for the collate function).

    Example:
        >>> len(GroupDataset([Group("q", ("a", "b"), (1.0, 0.0))], {}))
        1
    """

    def __init__(self, groups: list[Group], texts: dict[str, IRData]) -> None:
        self.groups = groups
        self.texts = texts

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> Group:
        return self.groups[i]


def make_collate(tok: Any, max_length: int, lookup: dict[str, IRData]) -> Any:
    """Collate B groups of up to G passages into their tokenised pairs (dynamic padding) plus targets (B, G).

    Groups of different sizes (a listwise group of a query whose teacher scored fewer than `list_size`
    passages) are padded to the batch's largest: targets 0 and `mask` (B, G) False there; only real pairs
    are tokenised and scored (`step_fn` scatters their scores into the (B, G) grid).

    Args:
        tok: the student's tokenizer.
        max_length: tokens per pair.
        lookup: the set owning each query, by qid.

    Returns:
        `collate(groups) -> {"input_ids": ..., ..., "targets": (B, G) float32}`, plus `mask` (B, G) bool
        when the groups differ in size.

    Example:
        >>> batch = make_collate(tok, 128, lookup)(groups[:4])  # doctest: +SKIP
    """

    def collate(groups: list[Group]) -> dict[str, torch.Tensor]:
        qs, ps = [], []
        for g in groups:
            d = lookup[g.qid]
            qs += [d.queries[g.qid]] * len(g.docs)
            ps += [d.passages[x] for x in g.docs]
        batch = dict(encode(tok, qs, ps, max_length))
        width = max(len(g.docs) for g in groups)
        if all(len(g.docs) == width for g in groups):
            batch["targets"] = torch.tensor([g.targets for g in groups], dtype=torch.float32)
            return batch
        batch["targets"] = torch.tensor([list(g.targets) + [0.0] * (width - len(g.docs)) for g in groups],
                                        dtype=torch.float32)
        batch["mask"] = torch.tensor([[i < len(g.docs) for i in range(width)] for g in groups])
        return batch

    return collate


def group_lengths(tok: Any, groups: list[Group], lookup: dict[str, IRData], max_length: int,
                  chunk: int = 4096) -> list[int]:
    """Per group: the token count of its longest (query, passage) pair after truncation.

    That is the length its pairs pad to in a batch (what `fit.length_grouped` groups batches by).
    Each distinct pair is tokenised once, without padding.

    Args:
        tok: the student's tokenizer.
        groups: the training groups.
        lookup: the set owning each query, by qid.
        max_length: tokens per pair.
        chunk: pairs per tokenizer call.

    Returns:
        One length per group.

    Example:
        >>> group_lengths(tok, groups, lookup, 128)[:3]  # doctest: +SKIP
        [97, 128, 64]
    """
    pairs = sorted({(g.qid, x) for g in groups for x in g.docs})
    n_tok: dict[tuple[str, str], int] = {}
    for i in range(0, len(pairs), chunk):
        part = pairs[i : i + chunk]
        enc = tok(
            clip_texts([lookup[q].queries[q] for q, _ in part], max_length, "query"),
            clip_texts([lookup[q].passages[x] for q, x in part], max_length),
            truncation="longest_first",
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        n_tok.update(zip(part, map(len, enc["input_ids"])))
    return [max(n_tok[(g.qid, x)] for x in g.docs) for g in groups]


def make_loss(cfg: Any) -> Any:
    """`loss(scores (B, G), targets (B, G))` for `cfg.objective`: its engine loss with its options.

    Args:
        cfg: the recipe config (`objective`, `loss`).

    Returns:
        The loss module (from `multiteacher.losses.registry`).

    Example:
        >>> make_loss(cfg)(torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [2.0, 1.0]]))  # doctest: +SKIP
        tensor(1.)
    """
    return get_objective(cfg.objective).make_loss(cfg.loss)


def step_fn(loss_fn: Any) -> Any:
    """The fit loop's step: score a batch's pairs, reshape to (B, G), apply the loss.

    Args:
        loss_fn: `loss(scores, targets[, mask])` (the mask when a batch holds groups of different sizes).

    Returns:
        `step(model, batch) -> {"loss": tensor}`.

    Example:
        >>> step = step_fn(make_loss(cfg))  # doctest: +SKIP
    """

    def step(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        targets = batch.pop("targets")
        mask = batch.pop("mask", None)
        scores = forward_scores(model, batch)
        if mask is None:
            return {"loss": loss_fn(scores.view(targets.shape), targets)}
        grid = scores.new_zeros(targets.shape).masked_scatter(mask, scores)  # row-major: the collate's order
        return {"loss": loss_fn(grid, targets, mask)}

    return step


def training_groups(
    cfg: Any, train: dict[str, IRData], teachers: dict[str, dict[str, Any]], pick_teacher: Any
) -> tuple[list[Group], dict[str, IRData]]:
    """All training groups of the objective over the training sets, and the set owning each query.

    Args:
        cfg: the recipe config.
        train: training sets by spec.
        teachers: per `train/<spec>`, the teacher entry (`members`, `fused`, `listwise`).
        pick_teacher: `(cfg, entry) -> run | None`, the run the objective learns from.

    Returns:
        `(groups, lookup)`.

    Example:
        >>> groups, lookup = training_groups(cfg, sets["train"], teachers, training_teacher)  # doctest: +SKIP
    """
    spec = get_objective(cfg.objective)
    per_query = {e.key: e.groups_per_query for e in getattr(cfg.data, "extra_queries", [])}
    lookup: dict[str, IRData] = {}
    groups: list[Group] = []
    for i, (name, d) in enumerate(train.items()):
        for q in d.qids:
            lookup[q] = d
        teacher = pick_teacher(cfg, teachers[f"train/{name}"]) if spec.needs_teacher else None
        if spec.needs_teacher and teacher is None:
            raise ConfigError(f"objective {cfg.objective!r} needs teachers: set teachers.members or listwise_runs")
        sampling = cfg.sampling  # extra (pooled) queries: their own, smaller number of groups per query
        if name in per_query:
            sampling = sampling.model_copy(update={"groups_per_query": per_query[name]})
        groups += build_groups(
            cfg.objective, d.qids, d.candidates, sampling, cfg.seed * 1000 + i, qrels=d.qrels, teacher=teacher
        )
    if not groups:
        source = "qrels" if spec.label_source == "qrels" else "teacher"
        raise DataError(f"objective {cfg.objective!r}: no training groups — the training queries have no "
                        f"{source} labels")
    return groups, lookup


def probe_loss_fn(model: Any, probe: list[Group], collate: Any, loss_fn: Any) -> Any:
    """A function measuring the mean loss on a fixed sample of training groups (eval mode, no grad).

    Args:
        model: the student.
        probe: the fixed groups.
        collate: the collate function.
        loss_fn: the loss.

    Returns:
        `probe_loss() -> float`.

    Example:
        >>> before = probe_loss_fn(model, groups[:64], collate, make_loss(cfg))()  # doctest: +SKIP
    """

    def probe_loss() -> float:
        was = model.training
        model.eval()
        with torch.no_grad():
            dev = next(model.parameters()).device
            step = step_fn(loss_fn)  # the training step's loss, masks of mixed group sizes included
            vals = []
            for i in range(0, len(probe), 16):
                chunk = probe[i : i + 16]
                b = {k: v.to(dev) for k, v in collate(chunk).items()}
                vals.append(float(step(model, b)["loss"]) * len(chunk))
        model.train(was)
        return sum(vals) / len(probe)

    return probe_loss
