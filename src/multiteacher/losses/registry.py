"""One registry of losses, one naming scheme: every KD and ranking loss declared once.

A loss is registered as a `LossSpec`: its canonical name (the name of its pure function, e.g.
`margin_mse`, `kd_kl`), the function, the thin `nn.Module` wrapper, its family (`ranking` | `kd`),
what it learns from (`targets`), and its options with their defaults. Names are matched ignoring
case, `_` and `-` (so `marginmse`, `MarginMSE` and `margin-mse` are `margin_mse`), plus a few short
aliases (`bce`, `mse`, `ranknet`, `kd`). Configs name losses through `resolve_loss_name`, build them
with `make_loss`, and list choices with `loss_names` — adding a loss is one `register_loss` call.

Example:
    >>> from multiteacher.losses.registry import make_loss, resolve_loss_name
    >>> resolve_loss_name("marginmse")
    'margin_mse'
    >>> make_loss("info_nce", temperature=0.5)
    InfoNCELoss()
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from multiteacher.errors import ConfigError
from multiteacher.losses import kd as K
from multiteacher.losses import ranking as R

__all__ = [
    "LOSSES",
    "RANKING_LOSSES",
    "LossSpec",
    "get_loss",
    "loss_names",
    "make_loss",
    "register_loss",
    "resolve_loss_name",
]

Family = Literal["ranking", "kd"]
Targets = Literal["labels", "teacher_scores", "none", "teacher_logits", "teacher_features"]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: canonical name, pure function, module wrapper, what it needs, its options.

    Args:
        name: canonical name (the function's name, snake_case).
        fn: the pure function.
        module: the `nn.Module` wrapper; `module(**options)` builds it (None: function only).
        family: `ranking` (student scores (B, L) vs targets (B, L)) or `kd` (logits / features).
        targets: what the loss learns from: `labels` (qrels), `teacher_scores`, `none` (the positive
            is column 0), `teacher_logits`, `teacher_features`.
        options: keyword options of `module` with their defaults.
        aliases: extra accepted names (besides case/underscore/hyphen variants).
        summary: one line for docs and error messages.

    Example:
        >>> get_loss("adr_mse").options
        {'alpha': 1.0}
    """

    name: str
    fn: Callable[..., Any]
    module: type[nn.Module] | None
    family: Family
    targets: Targets
    options: dict[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    summary: str = ""


LOSSES: dict[str, LossSpec] = {}
_NAMES: dict[str, str] = {}  # normalised name or alias -> canonical name


def _norm(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


def register_loss(spec: LossSpec) -> LossSpec:
    """Add a loss to the registry (its name and aliases must be new).

    Args:
        spec: the loss to register.

    Returns:
        `spec`, so the call can be used as an expression.

    Example:
        >>> register_loss(LossSpec("my_loss", my_fn, MyLoss, "ranking", "teacher_scores"))  # doctest: +SKIP
    """
    for n in (spec.name, *spec.aliases):
        key = _norm(n)
        if key in _NAMES and _NAMES[key] != spec.name:
            raise ConfigError(f"loss name {n!r} is already taken by {_NAMES[key]!r}; choose another name")
    LOSSES[spec.name] = spec
    for n in (spec.name, *spec.aliases):
        _NAMES[_norm(n)] = spec.name
    return spec


def resolve_loss_name(name: str, family: Family | None = None) -> str:
    """The canonical name of a loss given by any accepted spelling (ConfigError with a suggestion).

    Args:
        name: e.g. `margin_mse`, `marginmse`, `MarginMSE`, `ranknet`.
        family: if given, the loss must belong to it.

    Returns:
        The canonical name.

    Example:
        >>> resolve_loss_name("ranknet")
        'distill_ranknet'
    """
    canon = _NAMES.get(_norm(name))
    choices = loss_names(family)
    if canon is None or (family is not None and LOSSES[canon].family != family):
        close = difflib.get_close_matches(name, choices + sorted(_NAMES), n=1)
        hint = f" (did you mean {_NAMES.get(_norm(close[0]), close[0])!r}?)" if close else ""
        raise ConfigError(f"unknown loss {name!r}{hint}; choose one of {', '.join(choices)}")
    return canon


def get_loss(name: str, family: Family | None = None) -> LossSpec:
    """The `LossSpec` of a loss by any accepted name.

    Args:
        name: loss name or alias.
        family: if given, the loss must belong to it.

    Returns:
        Its spec.

    Example:
        >>> get_loss("bce").fn.__name__
        'pointwise_bce'
    """
    return LOSSES[resolve_loss_name(name, family)]


def loss_names(family: Family | None = None) -> list[str]:
    """Canonical names of the registered losses (of one family, if given), in registration order.

    Args:
        family: `ranking`, `kd`, or None for all.

    Returns:
        The names.

    Example:
        >>> loss_names("ranking")[:4]
        ['pointwise_bce', 'pointwise_mse', 'hinge', 'margin_mse']
    """
    return [n for n, s in LOSSES.items() if family is None or s.family == family]


def make_loss(name: str, family: Family | None = None, **options: Any) -> nn.Module:
    """Build a loss module by name with options (unknown options are a ConfigError naming them).

    Ranking modules share one call: `loss(scores (B, L), targets (B, L) | None, mask (B, L) | None)`.

    Args:
        name: loss name or alias.
        family: if given, the loss must belong to it.
        **options: the loss's options (see `LossSpec.options`).

    Returns:
        The `nn.Module`.

    Example:
        >>> make_loss("hinge", margin=0.5).margin
        0.5
    """
    spec = get_loss(name, family)
    if spec.module is None:
        raise ConfigError(f"loss {spec.name!r} has no module form; call get_loss({spec.name!r}).fn instead")
    extra = sorted(set(options) - set(spec.options))
    if extra:
        raise ConfigError(
            f"loss {spec.name!r}: unknown option(s) {', '.join(extra)}; "
            f"its options are {', '.join(spec.options) or 'none'}"
        )
    try:
        return spec.module(**options)
    except TypeError as e:
        raise ConfigError(f"loss {spec.name!r}: bad options {sorted(options)} ({e})") from None


_RANKING = [
    LossSpec("pointwise_bce", R.pointwise_bce, R.PointwiseBCELoss, "ranking", "labels", {}, ("bce",),
             "binary cross-entropy on logits per pair (labels in [0, 1])"),
    LossSpec("pointwise_mse", R.pointwise_mse, R.PointwiseMSELoss, "ranking", "teacher_scores", {}, ("mse",),
             "pointwise regression onto teacher scores"),
    LossSpec("hinge", R.hinge, R.HingeLoss, "ranking", "none", {"margin": 1.0}, (),
             "pairwise hinge, positive in column 0"),
    LossSpec("margin_mse", R.margin_mse, R.MarginMSELoss, "ranking", "teacher_scores", {}, (),
             "MarginMSE (Hofstätter et al. 2020): MSE of student and teacher margins"),
    LossSpec("info_nce", R.info_nce, R.InfoNCELoss, "ranking", "none", {"temperature": 1.0}, (),
             "InfoNCE over a positive (column 0) and negatives"),
    LossSpec("distill_ranknet", R.distill_ranknet, R.DistillRankNetLoss, "ranking", "teacher_scores",
             {"sigma": 1.0}, ("ranknet",), "RankNet on the pairs the teacher orders"),
    LossSpec("adr_mse", R.adr_mse, R.ADRMSELoss, "ranking", "teacher_scores", {"alpha": 1.0}, (),
             "ADR-MSE (Rank-DistiLLM): approximate-rank MSE with a log discount"),
    LossSpec("listnet", R.listnet, R.ListNetLoss, "ranking", "teacher_scores", {"temperature": 1.0}, (),
             "ListNet: cross-entropy of the teacher's and student's top-one distributions"),
]
_KD = [
    LossSpec("kd_kl", K.kd_kl, K.KDLoss, "kd", "teacher_logits", {"temperature": 4.0, "ignore_index": None},
             ("kd",), "Hinton KD: T² KL(teacher || student) at temperature T"),
    LossSpec("multi_teacher_kd", K.multi_teacher_kd, K.MultiTeacherKDLoss, "kd", "teacher_logits",
             {"temperature": 4.0, "weights": None, "ignore_index": None}, (),
             "KD from K teachers (B, K, C, ...): weighted mixture or per-sample selection"),
    LossSpec("fitnet", K.fitnet, K.FitNetLoss, "kd", "teacher_features",
             {"student_dim": None, "teacher_dim": None, "kind": "conv", "projector": None}, (),
             "FitNet hint loss: MSE of (projected) student and teacher features"),
    LossSpec("dkd", K.dkd, K.DKDLoss, "kd", "teacher_logits", {"alpha": 1.0, "beta": 8.0, "temperature": 4.0}, (),
             "Decoupled KD (Zhao et al. 2022): alpha TCKD + beta NCKD"),
]
if hasattr(K, "mutual_kd"):  # co-training KD (MST-Distill), function only
    _KD.insert(1, LossSpec("mutual_kd", K.mutual_kd, None, "kd", "teacher_logits", {"temperature": 4.0}, (),
                           "KD between networks trained together (the teacher is not detached)"))
for _spec in (*_RANKING, *_KD):
    register_loss(_spec)

RANKING_LOSSES: dict[str, type[nn.Module]] = {s.name: s.module for s in _RANKING}
"""Canonical ranking-loss names -> module classes (a view of `LOSSES`, kept for compatibility)."""
