"""The re-ranking objectives, each declared once: label source, training groups, loss and its options.

The config's `objective` choices, the sampling of training groups, the group size, the loss (from
the engine's one loss registry, `multiteacher.losses.registry`) and its options all come from
`OBJECTIVES`, so they cannot drift apart. Objective names are the short names of the paper's tables
(`marginmse`, `ranknet`, ...), which committed run configs use; the engine's loss names
(`margin_mse`, `distill_ranknet`, ...) are accepted as aliases (`resolve_objective`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from multiteacher.errors import ConfigError
from multiteacher.losses.registry import get_loss, make_loss, resolve_loss_name

if TYPE_CHECKING:
    from torch import nn

    from multiteacher.recipes.rerank.sampling import SamplingConfig

LabelSource = Literal["qrels", "teacher_scores", "teacher_ranking"]
GroupKind = Literal["positive_negatives", "teacher_pair", "teacher_list"]


@dataclass(frozen=True)
class ObjectiveSpec:
    """One training objective of the rerank recipe.

    Args:
        name: the config name (`objective: <name>`).
        loss: the engine loss it trains with (canonical name in `multiteacher.losses.registry`).
        label_source: `qrels` (judged positives and negatives), `teacher_scores` (the fused teacher
            ensemble's scores), or `teacher_ranking` (an LLM ordering where the set has one, else
            the fused ensemble; the loss uses only the order).
        groups: how a training group is drawn: `positive_negatives` (1 judged positive + negatives),
            `teacher_pair` (one passage from the teacher's top, one from the rest), `teacher_list`
            (`sampling.list_size` passages from the teacher's top, in teacher order).
        negatives: for `positive_negatives`, the `SamplingConfig` field that gives the number of
            negatives, or a fixed number.
        options: loss option -> `LossConfig` field that sets it.
        paper: one of the paper's six objectives (the sweep's default set).
        summary: one line for docs.

    Example:
        >>> OBJECTIVES["marginmse"].loss, OBJECTIVES["marginmse"].label_source
        ('margin_mse', 'teacher_scores')
    """

    name: str
    loss: str
    label_source: LabelSource
    groups: GroupKind
    negatives: str | int | None = None
    options: dict[str, str] = field(default_factory=dict)
    paper: bool = True
    summary: str = ""

    @property
    def needs_teacher(self) -> bool:
        """True when the objective learns from teachers (not from qrels)."""
        return self.label_source != "qrels"

    def num_negatives(self, sampling: SamplingConfig) -> int:
        """Negatives per group of a `positive_negatives` objective.

        Args:
            sampling: the sampling config.

        Returns:
            The number of negatives.

        Example:
            >>> from multiteacher.recipes.rerank.sampling import SamplingConfig
            >>> OBJECTIVES["infonce"].num_negatives(SamplingConfig())
            7
        """
        if self.negatives is None:
            raise ConfigError(f"objective {self.name!r} draws no negatives")
        return int(getattr(sampling, self.negatives)) if isinstance(self.negatives, str) else self.negatives

    def group_size(self, sampling: SamplingConfig) -> int:
        """Passages per training group.

        Args:
            sampling: the sampling config.

        Returns:
            1 + negatives, 2 for teacher pairs, `sampling.list_size` for lists.

        Example:
            >>> from multiteacher.recipes.rerank.sampling import SamplingConfig
            >>> OBJECTIVES["bce"].group_size(SamplingConfig(bce_negatives=3))
            4
        """
        if self.groups == "positive_negatives":
            return 1 + self.num_negatives(sampling)
        return 2 if self.groups == "teacher_pair" else sampling.list_size

    def loss_options(self, loss_cfg: Any) -> dict[str, Any]:
        """The loss's options read from the recipe's `LossConfig`.

        Args:
            loss_cfg: the recipe's `loss:` section.

        Returns:
            `{option: value}` for `make_loss`.

        Example:
            >>> from multiteacher.recipes.rerank.config import LossConfig
            >>> OBJECTIVES["hinge"].loss_options(LossConfig(hinge_margin=0.5))
            {'margin': 0.5}
        """
        return {opt: getattr(loss_cfg, fld) for opt, fld in self.options.items()}

    def make_loss(self, loss_cfg: Any) -> nn.Module:
        """The loss module: `loss(scores (B, G), targets (B, G))`.

        Args:
            loss_cfg: the recipe's `loss:` section.

        Returns:
            The engine loss module with its options set.

        Example:
            >>> from multiteacher.recipes.rerank.config import LossConfig
            >>> OBJECTIVES["ranknet"].make_loss(LossConfig()).sigma
            1.0
        """
        return make_loss(self.loss, "ranking", **self.loss_options(loss_cfg))


OBJECTIVES: dict[str, ObjectiveSpec] = {
    s.name: s
    for s in (
        ObjectiveSpec("bce", "pointwise_bce", "qrels", "positive_negatives", "bce_negatives",
                      summary="pointwise BCE on 1 judged positive : k negatives"),
        ObjectiveSpec("hinge", "hinge", "qrels", "positive_negatives", 1, {"margin": "hinge_margin"},
                      summary="pairwise hinge on (judged positive, negative)"),
        ObjectiveSpec("infonce", "info_nce", "qrels", "positive_negatives", "infonce_negatives",
                      {"temperature": "infonce_temperature"}, summary="InfoNCE over a positive and k negatives"),
        ObjectiveSpec("marginmse", "margin_mse", "teacher_scores", "teacher_pair",
                      summary="MarginMSE on the fused teachers' score margins"),
        ObjectiveSpec("ranknet", "distill_ranknet", "teacher_ranking", "teacher_list",
                      options={"sigma": "ranknet_sigma"},
                      summary="DistillRankNet on a teacher ordering"),
        ObjectiveSpec("adrmse", "adr_mse", "teacher_ranking", "teacher_list", options={"alpha": "adrmse_alpha"},
                      summary="ADR-MSE on a teacher ordering"),
        ObjectiveSpec("listnet", "listnet", "teacher_ranking", "teacher_list",
                      options={"temperature": "listnet_temperature"}, paper=False,
                      summary="ListNet on teacher scores (an extra, not in the paper)"),
    )
}
for _s in OBJECTIVES.values():  # each objective's loss and options exist in the engine registry
    assert resolve_loss_name(_s.loss, "ranking") == _s.loss, _s
    assert set(_s.options) <= set(get_loss(_s.loss).options), _s

OBJECTIVE_NAMES: tuple[str, ...] = tuple(OBJECTIVES)
PAPER_OBJECTIVES: list[str] = [n for n, s in OBJECTIVES.items() if s.paper]
Objective = Literal[OBJECTIVE_NAMES]  # type: ignore[valid-type]  # the config's choices, generated


def resolve_objective(name: str) -> str:
    """The objective's config name from its name or its loss's name (e.g. `margin_mse` -> `marginmse`).

    Args:
        name: an objective name, or any accepted name of its loss.

    Returns:
        The objective name (unknown names are returned unchanged for the config to reject).

    Example:
        >>> resolve_objective("distill_ranknet")
        'ranknet'
    """
    if name in OBJECTIVES:
        return name
    try:
        loss = resolve_loss_name(name, "ranking")
    except ConfigError:
        return name
    by_loss = [s.name for s in OBJECTIVES.values() if s.loss == loss]
    return by_loss[0] if by_loss else name


def get_objective(name: str) -> ObjectiveSpec:
    """The spec of an objective by name (or its loss's name).

    Args:
        name: e.g. `marginmse` or `margin_mse`.

    Returns:
        Its `ObjectiveSpec`.

    Example:
        >>> get_objective("infonce").group_size.__name__
        'group_size'
    """
    key = resolve_objective(name)
    if key not in OBJECTIVES:
        raise ConfigError(f"objective {name!r} is unknown; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[key]
