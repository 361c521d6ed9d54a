"""Instance-level routing over K teachers: gates, top-k selection, load-balancing losses, statistics.

Used by MST-Distill (Li et al., ACM MM 2025), where a router picks, per instance, which specialised
teacher the student distils from. Pure functions first; :class:`Router` is a thin module on top;
:func:`fit_router` trains one on labelled instances (e.g. per-query teacher quality in re-ranking).

Shapes: router ``logits`` are ``(B, K)``; routing ``probs``/``weights`` are ``(B, K)`` rows summing to 1.
References: top-k gating and the coefficient-of-variation balance loss follow Shazeer et al.,
"Outrageously Large Neural Networks" (2017); the KL-to-uniform balance term is the usual
``KL(mean_b p_b || U)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from multiteacher.errors import ConfigError

__all__ = [
    "Router",
    "RouterOutput",
    "fit_router",
    "load_balance_cv",
    "load_balance_kl",
    "load_balance_kl_uniform",
    "routing_stats",
    "softmax_weights",
    "topk_weights",
]


def softmax_weights(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Routing weights from gate logits: ``softmax(logits / temperature)`` over the teacher dim.

    Soft routing: every teacher gets a share; a lower temperature sharpens the choice. Computed in
    fp32 and returned in the logits' dtype.

    Args:
        logits: ``(B, K)`` gate scores.
        temperature: ``> 0``.

    Returns:
        ``(B, K)`` weights, rows summing to 1.

    Example:
        >>> softmax_weights(torch.tensor([[0.0, 0.0]]))
        tensor([[0.5000, 0.5000]])
    """
    if temperature <= 0:
        raise ConfigError(f"router temperature must be > 0, got {temperature}")
    return (logits.float() / temperature).softmax(-1).to(logits.dtype)


def topk_weights(logits: Tensor, k: int, temperature: float = 1.0, hard: bool = False) -> tuple[Tensor, Tensor]:
    """Top-k routing: each instance goes to its k highest-scoring teachers.

    Soft: softmax over the k largest logits only (others get weight 0), renormalised to sum 1;
    gradients reach the selected logits. Hard: forward weights are ``1/k`` on the selected teachers
    (``k = 1``: one-hot; up to float rounding of ``p - p.detach()``); backward uses the
    straight-through estimator through the full softmax (``w_hard + p - p.detach()``). Ties in the
    logits go to the lower index.

    Args:
        logits: ``(B, K)`` gate scores.
        k: teachers per instance, ``1 <= k <= K``.
        temperature: ``> 0``.
        hard: straight-through k-hot weights instead of the renormalised softmax.

    Returns:
        ``(weights (B, K), indices (B, k))``.

    Example:
        >>> w, idx = topk_weights(torch.tensor([[0.1, 2.0, 1.0]]), k=1, hard=True)
        >>> w.round(decimals=4).tolist(), idx.tolist()
        ([[0.0, 1.0, 0.0]], [[1]])
    """
    K = logits.shape[-1]
    if not 1 <= k <= K:
        raise ConfigError(f"router top_k must be between 1 and the number of teachers ({K}), got {k}")
    if temperature <= 0:
        raise ConfigError(f"router temperature must be > 0, got {temperature}")
    z = logits.float() / temperature
    # stable sort gives ties to the lower index
    idx = torch.sort(z, dim=-1, descending=True, stable=True).indices[..., :k]
    sel = torch.zeros_like(z, dtype=torch.bool).scatter_(-1, idx, True)
    if hard:
        p = z.softmax(-1)
        w_hard = sel.to(z.dtype) / k
        w = w_hard + p - p.detach()
    else:
        w = z.masked_fill(~sel, -1e30).softmax(-1) * sel
    return w.to(logits.dtype), idx


def load_balance_kl(probs: Tensor, mask: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    """Load-balance loss ``KL(p̄ || U) = Σ_k p̄_k log(K p̄_k)``, ``p̄`` the batch-mean routing distribution.

    Zero when teachers are used equally on average; ``log K`` when one teacher takes everything.
    Added to a router's loss, it keeps the router from collapsing onto one teacher.

    Args:
        probs: ``(B, K)`` routing probabilities (rows sum to 1).
        mask: ``(B,)`` bool, the rows that count (None: all).
        eps: floor for ``p̄`` inside the log.

    Returns:
        A scalar tensor (fp32).

    Example:
        >>> round(load_balance_kl(torch.tensor([[1.0, 0.0], [1.0, 0.0]])).item(), 4)  # log 2
        0.6931
    """
    p = probs.float()
    if mask is not None:
        m = mask.to(p.dtype).reshape(-1, 1)
        pbar = (p * m).sum(0) / m.sum().clamp(min=1)
    else:
        pbar = p.mean(0)
    K = p.shape[-1]
    return (pbar * (pbar.clamp(min=eps) * K).log()).sum()


def load_balance_kl_uniform(probs: Tensor, per_teacher: bool = False, eps: float = 1e-12) -> Tensor:
    """``KL(U || p̄) = Σ_k (1/K) (log(1/K) - log p̄_k)``: the reverse of :func:`load_balance_kl`.

    Zero for balanced routing; it grows without bound as a teacher's mean weight goes to 0, so it
    pushes harder than :func:`load_balance_kl` against teachers that are never used.
    ``per_teacher=True`` divides by K once more: that is what MST-Distill's official code computes
    with ``nn.KLDivLoss(reduction="batchmean")(p̄.log(), U)`` on the K-vector ``p̄`` (its "batch" is K).

    Args:
        probs: ``(B, K)`` routing probabilities (rows sum to 1).
        per_teacher: divide by K (the official MST-Distill scaling).
        eps: floor for ``p̄`` before the log.

    Returns:
        A scalar tensor (fp32).

    Example:
        >>> round(load_balance_kl_uniform(torch.tensor([[0.5, 0.5], [1.0, 0.0]])).item(), 4)  # p̄ = (.75, .25)
        0.1438
    """
    pbar = probs.float().mean(0)
    K = pbar.numel()
    terms = (math.log(1.0 / K) - pbar.clamp(min=eps).log()).sum()
    return terms / (K * K) if per_teacher else terms / K


def load_balance_cv(probs: Tensor, squared: bool = True, eps: float = 1e-10) -> Tensor:
    """Load-balance loss: coefficient of variation of per-teacher importance ``I_k = Σ_b p_{b,k}``.

    ``std(I) / mean(I)`` with the population std (ddof = 0), as ``scipy.stats.variation``;
    ``squared=True`` returns CV² as in Shazeer et al. (2017). Zero for perfectly balanced routing.

    Args:
        probs: ``(B, K)`` routing probabilities.
        squared: return CV² (the usual auxiliary loss) instead of CV.
        eps: stabiliser of the division.

    Returns:
        A scalar tensor (fp32); 0 for a single teacher.

    Example:
        >>> round(load_balance_cv(torch.tensor([[1.0, 0.0], [1.0, 0.0]])).item(), 4)  # I = (2, 0)
        1.0
    """
    imp = probs.float().sum(0)
    if imp.numel() < 2:
        return imp.sum() * 0.0
    var = ((imp - imp.mean()) ** 2).mean()
    cv2 = var / (imp.mean() ** 2 + eps)
    return cv2 if squared else (cv2 + eps).sqrt()


def routing_stats(probs: Tensor, names: list[str] | None = None) -> dict:
    """Per-teacher usage of a router, for reports (plain floats): argmax share, mean weight, entropy.

    Args:
        probs: ``(B, K)`` routing probabilities.
        names: the K teacher names (default ``teacher0..``).

    Returns:
        ``{"usage": {name: share}, "mean_weight": {name: w}, "entropy": H, "n": B}`` where ``usage``
        is the fraction of instances whose top teacher is that one, ``entropy`` the mean routing
        entropy in nats.

    Example:
        >>> usage = routing_stats(torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), ["a", "b"])["usage"]
        >>> {k: round(v, 3) for k, v in usage.items()}
        {'a': 0.667, 'b': 0.333}
    """
    p = probs.detach().float()
    B, K = p.shape
    names = names or [f"teacher{k}" for k in range(K)]
    if len(names) != K:
        raise ConfigError(f"routing_stats: {len(names)} names for {K} teachers")
    counts = torch.bincount(p.argmax(-1), minlength=K).float() / max(B, 1)
    mw = p.mean(0) if B else torch.zeros(K)
    ent = -(p * p.clamp(min=1e-30).log()).sum(-1).mean().item() if B else 0.0
    return {
        "usage": {n: float(c) for n, c in zip(names, counts)},
        "mean_weight": {n: float(w) for n, w in zip(names, mw)},
        "entropy": float(ent),
        "n": int(B),
    }


class RouterOutput(NamedTuple):
    """What a :class:`Router` returns for one batch.

    Attributes:
        logits: ``(B, K)`` raw gate scores.
        weights: ``(B, K)`` routing weights (rows sum to 1).
        indices: ``(B, k)`` selected teachers with top-k routing, else None.

    Returns:
        A named tuple ``(logits, weights, indices)``.

    Example:
        >>> out = Router(3, in_features=4)(torch.zeros(2, 4))
        >>> out.weights.shape, out.indices is None
        (torch.Size([2, 3]), True)
    """

    logits: Tensor
    weights: Tensor
    indices: Tensor | None


class Router(nn.Module):
    """Instance-level gate over ``num_teachers`` teachers: which teacher(s) each instance learns from.

    Vector inputs ``(B, D)`` (``in_features=D``): MLP ``D -> hidden -> K``.
    Dense inputs ``(B, C, H, W)`` (``in_channels=C``): 3×3 conv -> ReLU -> global average pool -> linear,
    so a whole image is routed. Output weights: softmax with ``temperature``; with ``top_k`` set,
    :func:`topk_weights` (``hard`` = straight-through k-hot).

    Args:
        num_teachers: K.
        in_features: width D of vector inputs (exclusive with ``in_channels``).
        in_channels: channels C of dense inputs (exclusive with ``in_features``).
        hidden: hidden width (MLP) or conv channels.
        temperature: softmax temperature, ``> 0``.
        top_k: route each instance to its k best teachers (None: soft weights over all).
        hard: straight-through k-hot weights with ``top_k``.

    Returns:
        A module; ``router(x)`` returns a :class:`RouterOutput` ``(logits, weights, indices)``.

    Example:
        >>> router = Router(4, in_features=10, top_k=1, hard=True)
        >>> out = router(torch.randn(8, 10))
        >>> torch.allclose(out.weights.sum(1), torch.ones(8)), out.indices.shape
        (True, torch.Size([8, 1]))
    """

    def __init__(
        self,
        num_teachers: int,
        in_features: int | None = None,
        in_channels: int | None = None,
        hidden: int = 64,
        temperature: float = 1.0,
        top_k: int | None = None,
        hard: bool = False,
    ) -> None:
        super().__init__()
        if (in_features is None) == (in_channels is None):
            raise ConfigError("Router: give exactly one of in_features= (vectors) or in_channels= (dense maps)")
        if num_teachers < 1:
            raise ConfigError(f"Router: num_teachers must be >= 1, got {num_teachers}")
        if top_k is not None and not 1 <= top_k <= num_teachers:
            raise ConfigError(f"Router: top_k must be in [1, {num_teachers}], got {top_k}")
        if temperature <= 0:
            raise ConfigError(f"Router: temperature must be > 0, got {temperature}")
        self.num_teachers, self.temperature, self.top_k, self.hard = num_teachers, temperature, top_k, hard
        self.dense = in_channels is not None
        if self.dense:
            self.net = nn.Sequential(
                nn.Conv2d(in_channels, hidden, 3, padding=1),
                nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
                nn.Linear(hidden, num_teachers),
            )
        else:
            self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_teachers))

    def forward(self, x: Tensor) -> RouterOutput:
        want = 4 if self.dense else 2
        if x.ndim != want:
            kind = "(B, C, H, W)" if self.dense else "(B, D)"
            raise ValueError(f"Router expects input of shape {kind}, got {tuple(x.shape)}")
        logits = self.net(x)
        if self.top_k is None:
            return RouterOutput(logits, softmax_weights(logits, self.temperature), None)
        w, idx = topk_weights(logits, self.top_k, self.temperature, self.hard)
        return RouterOutput(logits, w, idx)

    def extra_repr(self) -> str:
        return f"K={self.num_teachers}, T={self.temperature}, top_k={self.top_k}, hard={self.hard}"


def fit_router(
    features: Tensor,
    targets: Tensor,
    target_temperature: float = 0.05,
    balance: float = 0.01,
    hidden: int = 32,
    steps: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> Router:
    """Train a :class:`Router` that predicts, from an instance's features, which teacher(s) to follow.

    MST-style routing for labelled instances (e.g. queries with qrels): the target of instance b is
    ``softmax(targets[b] / target_temperature)`` over the teachers (``targets`` = each teacher's
    quality on b, e.g. per-query nDCG@10), the loss the cross-entropy of the router's weights against
    it plus ``balance`` × :func:`load_balance_kl` (so the router does not collapse onto one teacher
    when the features carry no signal). Full-batch Adam, seeded, CPU; returns the router in eval mode.
    Its ``weights`` on new instances feed a weighted fusion, e.g.
    ``consensus.fuse_scores(x, valid, "zscore", weights=router(f).weights)``.

    Args:
        features: ``(Q, D)`` instance features (e.g. query embeddings).
        targets: ``(Q, K)`` per-teacher quality (higher = follow that teacher).
        target_temperature: ``> 0``; lower makes the target pick the best teacher.
        balance: weight of the load-balance term.
        hidden: router MLP width.
        steps: optimiser steps.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        seed: seeds the router's initialisation.

    Returns:
        A trained :class:`Router` (``num_teachers = K``, ``in_features = D``), in eval mode.

    Example:
        >>> f = torch.tensor([[1.0], [-1.0]])
        >>> r = fit_router(f, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), steps=100)
        >>> r(f).weights.argmax(1).tolist()
        [0, 1]
    """
    if features.ndim != 2 or targets.ndim != 2 or features.shape[0] != targets.shape[0]:
        raise ValueError(f"fit_router expects features (Q, D) and targets (Q, K); got {tuple(features.shape)}, "
                         f"{tuple(targets.shape)}")
    if target_temperature <= 0:
        raise ConfigError(f"fit_router: target_temperature must be > 0, got {target_temperature}")
    gen = torch.Generator().manual_seed(seed)
    f = features.detach().float()
    mu, sd = f.mean(0, keepdim=True), f.std(0, keepdim=True, unbiased=False).clamp(min=1e-6)
    router = Router(targets.shape[1], in_features=f.shape[1], hidden=hidden)
    with torch.no_grad():
        for p in router.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / math.sqrt(max(p.shape[-1], 1))) if p.ndim > 1
                    else torch.zeros_like(p))
    router.net = nn.Sequential(_Standardize(mu, sd), *router.net)
    goal = (targets.detach().float() / target_temperature).softmax(-1)
    opt = torch.optim.Adam(router.parameters(), lr=lr, weight_decay=weight_decay)
    router.train()
    for _ in range(steps):
        opt.zero_grad()
        logp = router.net(f).log_softmax(-1)
        loss = -(goal * logp).sum(-1).mean() + balance * load_balance_kl(logp.exp())
        loss.backward()
        opt.step()
    return router.eval()


class _Standardize(nn.Module):
    """Fixed feature standardisation ``(x - mean) / std`` (statistics of the router's training set)."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std
