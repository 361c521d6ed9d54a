"""Ranking / re-ranking losses for cross-encoders (pointwise, pairwise, listwise).

Pure functions first, thin ``nn.Module`` wrappers at the end. Shapes: a batch of B queries, each
with a list of L candidates: student ``scores`` (B, L), teacher scores or labels ``targets`` (B, L)
(higher = more relevant), and a validity ``mask`` (B, L) bool for padded lists (True = real
candidate). For "positive + negatives" losses (hinge, MarginMSE, InfoNCE) column 0 is the positive.
Losses are computed in fp32 (bf16/fp16 inputs are fine); teacher targets are detached. Queries
or pairs left with nothing valid contribute nothing; an all-empty batch gives a zero loss that still
has a (zero) gradient.

References (and what the tests compare against, on the same scores): sentence-transformers
cross-encoder losses BinaryCrossEntropyLoss, MSELoss, MarginMSELoss (Hofstätter et al. 2020),
MultipleNegativesRankingLoss (InfoNCE), RankNetLoss (Burges et al. 2005), ADRMSELoss
(Schlatt et al., Rank-DistiLLM, ECIR 2025), ListNetLoss (Cao et al. 2007).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multiteacher.errors import ConfigError

__all__ = [
    "ADRMSELoss",
    "DistillRankNetLoss",
    "HingeLoss",
    "InfoNCELoss",
    "ListNetLoss",
    "MarginMSELoss",
    "PointwiseBCELoss",
    "PointwiseMSELoss",
    "adr_mse",
    "distill_ranknet",
    "hinge",
    "info_nce",
    "listnet",
    "make_ranking_loss",
    "margin_mse",
    "pointwise_bce",
    "pointwise_mse",
    "ranks_from_scores",
]

_NEG = -1e30  # fill for masked logits (fp32): exp() underflows to exactly 0, stays finite


def _mask(scores: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return torch.ones_like(scores, dtype=torch.bool)
    if mask.shape != scores.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal scores shape {tuple(scores.shape)}")
    return mask.to(torch.bool)


def _masked_mean(x: Tensor, m: Tensor) -> Tensor:
    x = torch.where(m, x, torch.zeros_like(x))
    return x.sum() / m.sum().clamp(min=1)


def _pair(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    if scores.shape != targets.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and targets {tuple(targets.shape)} must have the same shape")
    return scores.float(), targets.detach().float()


def pointwise_bce(scores: Tensor, labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """Binary cross-entropy on logits: ``mean(-y log σ(s) - (1-y) log(1-σ(s)))`` over valid items.

    Args:
        scores: student logits, any shape (e.g. ``(B, L)``).
        labels: targets in [0, 1] (binary qrels or soft teacher probabilities), same shape.
        mask: bool, same shape; None = all valid.

    Returns:
        A scalar loss.

    Example:
        >>> round(pointwise_bce(torch.tensor([[0.0]]), torch.tensor([[1.0]])).item(), 4)  # log 2
        0.6931
    """
    s, y = _pair(scores, labels)
    return _masked_mean(F.binary_cross_entropy_with_logits(s, y, reduction="none"), _mask(s, mask))


def pointwise_mse(scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Pointwise regression onto teacher scores: ``mean((s - t)²)`` over valid items.

    Args:
        scores: student scores, any shape.
        targets: teacher scores, same shape.
        mask: bool, same shape; None = all valid.

    Returns:
        A scalar loss.

    Example:
        >>> pointwise_mse(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 0.0]])).item()
        2.5
    """
    s, t = _pair(scores, targets)
    return _masked_mean((s - t) ** 2, _mask(s, mask))


def hinge(scores: Tensor, mask: Tensor | None = None, margin: float = 1.0) -> Tensor:
    """Pairwise hinge: ``mean_j max(0, margin - (s⁺ - s⁻_j))`` over valid negatives.

    Args:
        scores: ``(B, 1 + n)`` student scores, the positive in column 0.
        mask: bool ``(B, 1 + n)``; None = all valid.
        margin: the margin.

    Returns:
        A scalar loss.

    Example:
        >>> hinge(torch.tensor([[1.0, 0.5]]), margin=1.0).item()
        0.5
    """
    s = scores.float()
    m = _mask(s, mask)
    per = F.relu(margin - (s[:, :1] - s[:, 1:]))
    return _masked_mean(per, m[:, 1:] & m[:, :1])


def margin_mse(scores: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """MarginMSE (Hofstätter et al. 2020): ``mean_j ((s⁺ - s⁻_j) - (t⁺ - t⁻_j))²``.

    Triples are ``n = 1``; mean over valid (query, negative) pairs.

    Args:
        scores: ``(B, 1 + n)`` student scores, the positive in column 0.
        targets: ``(B, 1 + n)`` teacher scores.
        mask: bool ``(B, 1 + n)``; None = all valid.

    Returns:
        A scalar loss.

    Example:
        >>> margin_mse(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]])).item()  # (2 - 1)²
        1.0
    """
    s, t = _pair(scores, targets)
    m = _mask(s, mask)
    per = ((s[:, :1] - s[:, 1:]) - (t[:, :1] - t[:, 1:])) ** 2
    return _masked_mean(per, m[:, 1:] & m[:, :1])


def info_nce(scores: Tensor, mask: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """InfoNCE / localised contrastive estimation: ``-log softmax(s/τ)_0`` over the 1 + n candidates.

    Masked negatives drop out of the softmax; queries whose positive is masked are skipped.

    Args:
        scores: ``(B, 1 + n)`` student scores, the positive in column 0.
        mask: bool ``(B, 1 + n)``; None = all valid.
        temperature: τ > 0.

    Returns:
        A scalar loss (mean over queries).

    Example:
        >>> round(info_nce(torch.tensor([[0.0, 0.0]])).item(), 4)  # log 2
        0.6931
    """
    if temperature <= 0:
        raise ConfigError(f"info_nce temperature must be > 0, got {temperature}")
    s = scores.float() / temperature
    m = _mask(s, mask)
    logp = F.log_softmax(s.masked_fill(~m, _NEG), dim=1)
    return _masked_mean(-logp[:, 0], m[:, 0])


def ranks_from_scores(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """1-based ranks by descending score among valid items, ties get the average rank.

    ``rank_i = #{j valid: s_j > s_i} + (#{j valid: s_j = s_i} + 1) / 2``. Invalid items get 0. For a
    teacher given as an ordering (rank 1 = best), use ``-rank`` as its score.

    Args:
        scores: ``(B, L)`` scores.
        mask: bool ``(B, L)``; None = all valid.

    Returns:
        ``(B, L)`` float ranks.

    Example:
        >>> ranks_from_scores(torch.tensor([[1.0, 3.0, 3.0]]))
        tensor([[3.0000, 1.5000, 1.5000]])
    """
    s = scores.detach().float()
    m = _mask(s, mask)
    sj, si, vj = s.unsqueeze(-2), s.unsqueeze(-1), m.unsqueeze(-2)
    greater = ((sj > si) & vj).sum(-1).float()
    equal = ((sj == si) & vj).sum(-1).float()
    return torch.where(m, greater + (equal + 1.0) / 2.0, torch.zeros_like(s))


def distill_ranknet(scores: Tensor, targets: Tensor, mask: Tensor | None = None, sigma: float = 1.0) -> Tensor:
    """RankNet distillation: ``mean_{(i,j): t_i > t_j} log(1 + exp(-σ (s_i - s_j)))``.

    Every valid pair the teacher orders (strictly) is used; ties in the teacher give no pair. Mean
    over all such pairs in the batch (as sentence-transformers' ``RankNetLoss`` with natural log).

    Args:
        scores: ``(B, L)`` student scores.
        targets: ``(B, L)`` teacher scores (``-rank`` for orderings).
        mask: bool ``(B, L)``; None = all valid.
        sigma: slope σ of the logistic.

    Returns:
        A scalar loss.

    Example:
        >>> round(distill_ranknet(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]])).item(), 4)
        0.6931
    """
    s, t = _pair(scores, targets)
    m = _mask(s, mask)
    pair = (t.unsqueeze(-1) > t.unsqueeze(-2)) & m.unsqueeze(-1) & m.unsqueeze(-2)
    diff = s.unsqueeze(-1) - s.unsqueeze(-2)
    return _masked_mean(F.softplus(-sigma * diff), pair)


def adr_mse(scores: Tensor, targets: Tensor, mask: Tensor | None = None, alpha: float = 1.0) -> Tensor:
    """ADR-MSE (Schlatt et al., Rank-DistiLLM): approximate-rank MSE with a log discount.

    ``r̂_i = 1 + Σ_{j≠i, valid} σ(α (s_j - s_i))`` (ApproxRank), teacher rank ``r_i`` from
    :func:`ranks_from_scores` (ties averaged), loss ``Σ_i (r_i - r̂_i)² / log2(r_i + 1)`` averaged
    over all valid items of the batch.

    Args:
        scores: ``(B, L)`` student scores.
        targets: ``(B, L)`` teacher scores (``-rank`` for orderings).
        mask: bool ``(B, L)``; None = all valid.
        alpha: slope α of ApproxRank's sigmoid.

    Returns:
        A scalar loss.

    Example:
        >>> round(adr_mse(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).item(), 4)  # (.25 / 1 + .25 / log2 3) / 2
        0.2039
    """
    s, t = _pair(scores, targets)
    m = _mask(s, mask)
    r = ranks_from_scores(t, m)
    sig = torch.sigmoid(alpha * (s.unsqueeze(-2) - s.unsqueeze(-1)))  # [i, j] = σ(α(s_j - s_i))
    valid_j = m.unsqueeze(-2) & ~torch.eye(s.shape[-1], dtype=torch.bool, device=s.device)
    r_hat = 1.0 + torch.where(valid_j, sig, torch.zeros_like(sig)).sum(-1)
    per = (r - r_hat) ** 2 / torch.log2(r.clamp(min=1.0) + 1.0)
    return _masked_mean(per, m)


def listnet(scores: Tensor, targets: Tensor, mask: Tensor | None = None, temperature: float = 1.0) -> Tensor:
    """ListNet (Cao et al. 2007): ``-Σ_i softmax(t/τ)_i log softmax(s/τ)_i`` over valid items.

    Args:
        scores: ``(B, L)`` student scores.
        targets: ``(B, L)`` teacher scores.
        mask: bool ``(B, L)``; None = all valid.
        temperature: τ > 0.

    Returns:
        A scalar loss (mean over queries with at least one valid candidate).

    Example:
        >>> round(listnet(torch.zeros(1, 2), torch.tensor([[5.0, 5.0]])).item(), 4)  # log 2
        0.6931
    """
    if temperature <= 0:
        raise ConfigError(f"listnet temperature must be > 0, got {temperature}")
    s, t = _pair(scores, targets)
    m = _mask(s, mask)
    p_t = F.softmax(t.masked_fill(~m, _NEG) / temperature, dim=-1)
    logp_s = F.log_softmax(s.masked_fill(~m, _NEG) / temperature, dim=-1)
    per_q = -torch.where(m, p_t * logp_s, torch.zeros_like(logp_s)).sum(-1)
    return _masked_mean(per_q, m.any(-1))


class _RankingLoss(nn.Module):
    """Uniform module interface: ``loss(scores (B, L), targets (B, L) | None, mask (B, L) | None)``."""

    def forward(self, scores: Tensor, targets: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def _need(targets: Tensor | None, name: str) -> Tensor:
        if targets is None:
            raise ValueError(f"{name} needs targets (labels or teacher scores)")
        return targets


class PointwiseBCELoss(_RankingLoss):
    """Module form of :func:`pointwise_bce`; targets are labels in [0, 1].

    Call: ``loss(scores (B, L), targets (B, L) | None, mask (B, L) | None)``.

    Example:
        >>> PointwiseBCELoss()(torch.tensor([[0.0]]), torch.tensor([[1.0]]))
        tensor(0.6931)
    """

    def forward(self, scores, targets=None, mask=None):
        return pointwise_bce(scores, self._need(targets, "bce"), mask)


class PointwiseMSELoss(_RankingLoss):
    """Module form of :func:`pointwise_mse`; targets are teacher scores.

    Call: ``loss(scores (B, L), targets (B, L) | None, mask (B, L) | None)``.

    Example:
        >>> PointwiseMSELoss()(torch.tensor([[1.0]]), torch.tensor([[0.0]]))
        tensor(1.)
    """

    def forward(self, scores, targets=None, mask=None):
        return pointwise_mse(scores, self._need(targets, "mse"), mask)


class HingeLoss(_RankingLoss):
    """Module form of :func:`hinge`; positive in column 0, targets unused.

    Call: ``loss(scores (B, L), targets (B, L) | None, mask (B, L) | None)``.

    Example:
        >>> HingeLoss(margin=1.0)(torch.tensor([[1.0, 0.5]]))
        tensor(0.5000)
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, scores, targets=None, mask=None):
        return hinge(scores, mask, self.margin)


class MarginMSELoss(_RankingLoss):
    """Module form of :func:`margin_mse`; positive in column 0, targets are teacher scores.

    Call: ``loss(scores (B, L), targets (B, L) | None, mask (B, L) | None)``.

    Example:
        >>> MarginMSELoss()(torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]]))
        tensor(1.)
    """

    def forward(self, scores, targets=None, mask=None):
        return margin_mse(scores, self._need(targets, "margin_mse"), mask)


class InfoNCELoss(_RankingLoss):
    """Module form of :func:`info_nce`; positive in column 0, targets unused.

    Call: ``loss(scores (B, L), targets (B, L) | None, mask (B, L) | None)``.

    Example:
        >>> InfoNCELoss()(torch.tensor([[0.0, 0.0]]))
        tensor(0.6931)
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, scores, targets=None, mask=None):
        return info_nce(scores, mask, self.temperature)


class DistillRankNetLoss(_RankingLoss):
    """Module form of :func:`distill_ranknet`; targets are teacher scores (use ``-rank`` for orderings).

    Call: ``loss(scores (B, L), targets (B, L) | None, mask (B, L) | None)``.

    Example:
        >>> DistillRankNetLoss()(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))
        tensor(0.6931)
    """

    def __init__(self, sigma: float = 1.0) -> None:
        super().__init__()
        self.sigma = sigma

    def forward(self, scores, targets=None, mask=None):
        return distill_ranknet(scores, self._need(targets, "distill_ranknet"), mask, self.sigma)


class ADRMSELoss(_RankingLoss):
    """Module form of :func:`adr_mse`; targets are teacher scores (use ``-rank`` for orderings).

    Call: ``loss(scores (B, L), targets (B, L) | None, mask (B, L) | None)``.

    Example:
        >>> ADRMSELoss()(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]))
        tensor(0.2039)
    """

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, scores, targets=None, mask=None):
        return adr_mse(scores, self._need(targets, "adr_mse"), mask, self.alpha)


class ListNetLoss(_RankingLoss):
    """Module form of :func:`listnet`; targets are teacher scores.

    Call: ``loss(scores (B, L), targets (B, L) | None, mask (B, L) | None)``.

    Example:
        >>> ListNetLoss()(torch.zeros(1, 2), torch.tensor([[5.0, 5.0]]))
        tensor(0.6931)
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, scores, targets=None, mask=None):
        return listnet(scores, self._need(targets, "listnet"), mask, self.temperature)


def make_ranking_loss(name: str, **kwargs) -> _RankingLoss:
    """Build a ranking loss module by name through the one loss registry (`losses.registry`).

    Args:
        name: canonical name (`margin_mse`, `info_nce`, ...) or an accepted alias (`marginmse`, `bce`).
        **kwargs: the loss's options (e.g. `temperature`, `margin`).

    Returns:
        The module; call it as `loss(scores (B, L), targets (B, L) | None, mask (B, L) | None)`.

    Example:
        >>> make_ranking_loss("listnet", temperature=2.0).temperature
        2.0
    """
    from multiteacher.losses.registry import make_loss

    return make_loss(name, "ranking", **kwargs)  # type: ignore[return-value]


def __getattr__(name: str) -> object:
    if name == "RANKING_LOSSES":  # the table lives in the registry (one registry, one naming scheme)
        from multiteacher.losses.registry import RANKING_LOSSES

        return RANKING_LOSSES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
