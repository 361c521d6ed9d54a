"""Consensus over a stacked teacher dimension: pure functions on tensors.

Every function takes teacher predictions stacked on ``dim`` (default 1), e.g. dense maps
``(B, K, C, H, W)`` or vectors ``(B, K, D)``, and reduces that dimension away. Two optional inputs:

- ``weights``: per-teacher weights, shape ``(K,)`` or ``(B, K)`` (or anything broadcastable to ``x``
  once the teacher dimension lines up); they need not sum to one.
- ``valid``: boolean validity mask broadcastable to ``x`` (e.g. ``(B, K, 1, H, W)``): a teacher may
  not cover every element. Elements with no valid teacher get ``fill`` (default 0) and are excluded
  by :func:`agreement_mask`.

Used by NGC (Leordeanu et al., AAAI 2021: per-pixel median over paths, kept where the paths agree)
and by multi-teacher ensembles. Ranking combiners (:func:`normalize_scores`, :func:`ranks`,
:func:`fuse_scores`) take per-query candidate scores ``(B, K, N)`` = (queries, teachers, candidates)
with a ``valid`` mask: a teacher that did not score a candidate (a ranker that did not retrieve it)
is missing there, not given a made-up score; ``data.ir.runs_to_tensor`` builds that layout from runs.
:data:`FUSION_METHODS` (the config choices) are z-score / min-max means, reciprocal-rank fusion,
median rank (:func:`median_rank_scores`) and agreement-weighted consensus (:func:`agreement_weights`,
Kendall τ-b via :func:`kendall_tau`); each op's docstring says how it treats a missing teacher.
Tests compare each op with numpy / scipy (``np.ma.average``,
``np.ma.median``, ``scipy.stats.trim_mean``, ``scipy.stats.median_abs_deviation``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from multiteacher.errors import ConfigError

__all__ = [
    "FUSION_METHODS",
    "METHODS",
    "MISSING_POLICIES",
    "NORMALIZATIONS",
    "Vote",
    "agreement_mask",
    "agreement_weights",
    "combine",
    "dispersion",
    "fuse_scores",
    "kendall_tau",
    "mean",
    "median",
    "median_rank_scores",
    "normalize_scores",
    "ranks",
    "trimmed_mean",
    "vote",
    "weighted",
]


def _prep(x: Tensor, valid: Tensor | None, dim: int) -> tuple[Tensor, Tensor]:
    """Return (x moved to last dim, valid bool of same shape moved to last dim)."""
    v = torch.ones_like(x, dtype=torch.bool) if valid is None else torch.broadcast_to(valid.to(torch.bool), x.shape)
    return x.movedim(dim, -1), v.movedim(dim, -1)


def _weights(x: Tensor, weights: Tensor | None, dim: int) -> Tensor:
    """Broadcast per-teacher weights (K,) or (B, K) to ``x``'s shape."""
    if weights is None:
        return torch.ones_like(x)
    w = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
    d = dim % x.ndim
    if w.ndim == 1:
        shape = [1] * x.ndim
        shape[d] = w.shape[0]
        w = w.reshape(shape)
    elif w.ndim == 2 and d == 1:
        w = w.reshape(w.shape + (1,) * (x.ndim - 2))
    if (w < 0).any():
        raise ConfigError("consensus weights must be non-negative; got a negative teacher weight")
    return torch.broadcast_to(w, x.shape)


def mean(
    x: Tensor, weights: Tensor | None = None, valid: Tensor | None = None, dim: int = 1, fill: float = 0.0
) -> Tensor:
    """Weighted, masked mean over teachers: ``Σ_k w_k v_k x_k / Σ_k w_k v_k``.

    Elements whose total weight is 0 (no valid teacher, or only zero weights) get ``fill``.

    Args:
        x: teacher outputs ``(B, K, ...)`` (teachers on ``dim``).
        weights: non-negative per-teacher weights ``(K,)`` or ``(B, K)``; None = uniform.
        valid: bool mask broadcastable to ``x``; None = all valid.
        dim: the teacher dimension.
        fill: value where no teacher counts.

    Returns:
        ``x`` reduced over ``dim``, e.g. ``(B, ...)``.

    Example:
        >>> mean(torch.tensor([[1.0, 3.0]]), weights=torch.tensor([1.0, 3.0]))
        tensor([2.5000])
    """
    return _wmean(x, _weights(x, weights, dim), valid, dim, fill)


def _sorted_valid(x: Tensor, valid: Tensor | None, dim: int) -> tuple[Tensor, Tensor]:
    """Sort along the teacher dim with invalid entries pushed to the end; return (sorted, n_valid)."""
    xm, vm = _prep(x, valid, dim)
    big = torch.where(vm, xm, torch.full_like(xm, float("inf")))
    s, _ = torch.sort(big, dim=-1)
    n = vm.sum(-1)
    return s, n


def median(x: Tensor, valid: Tensor | None = None, dim: int = 1, fill: float = 0.0) -> Tensor:
    """Masked median over teachers; for an even count it is the mean of the two middle values.

    (``torch.median`` returns the lower middle value instead; we want the true median, as numpy.)

    Args:
        x: teacher outputs ``(B, K, ...)``.
        valid: bool mask broadcastable to ``x``; None = all valid.
        dim: the teacher dimension.
        fill: value for elements without a valid teacher.

    Returns:
        ``x`` reduced over ``dim``, e.g. ``(B, ...)``.

    Example:
        >>> median(torch.tensor([[1.0, 5.0, 2.0, 9.0]]))
        tensor([3.5000])
    """
    s, n = _sorted_valid(x, valid, dim)
    lo = ((n - 1).clamp(min=0) // 2).unsqueeze(-1)
    hi = (n // 2).clamp(max=s.shape[-1] - 1).unsqueeze(-1)
    a = torch.gather(s, -1, lo).squeeze(-1)
    b = torch.gather(s, -1, hi).squeeze(-1)
    ok = n > 0
    a = torch.where(ok, a, torch.zeros_like(a))
    b = torch.where(ok, b, torch.zeros_like(b))
    return torch.where(ok, (a + b) / 2, torch.full_like(a, fill))


def trimmed_mean(x: Tensor, trim: float = 0.1, valid: Tensor | None = None, dim: int = 1, fill: float = 0.0) -> Tensor:
    """Mean after cutting ``floor(trim * n)`` values from each end (n = valid teachers per element).

    Same convention as ``scipy.stats.trim_mean(a, proportiontocut=trim)``.

    Args:
        x: teacher outputs ``(B, K, ...)``.
        trim: share cut from each end, in [0, 0.5).
        valid: bool mask broadcastable to ``x``; None = all valid.
        dim: the teacher dimension.
        fill: value for elements without a valid teacher.

    Returns:
        ``x`` reduced over ``dim``.

    Example:
        >>> trimmed_mean(torch.tensor([[0.0, 1.0, 2.0, 100.0]]), trim=0.25)
        tensor([1.5000])
    """
    if not 0.0 <= trim < 0.5:
        raise ConfigError(f"trimmed_mean: trim must be in [0, 0.5), got {trim}")
    s, n = _sorted_valid(x, valid, dim)
    g = torch.floor(n.to(torch.float64) * trim).to(n.dtype).unsqueeze(-1)
    r = torch.arange(s.shape[-1], device=s.device)
    keep = (r >= g) & (r < n.unsqueeze(-1) - g)
    cnt = keep.sum(-1)
    tot = torch.where(keep, s, torch.zeros_like(s)).sum(-1)
    return torch.where(cnt > 0, tot / cnt.clamp(min=1).to(s.dtype), torch.full_like(tot, fill))


def weighted(
    x: Tensor,
    var: Tensor,
    weights: Tensor | None = None,
    valid: Tensor | None = None,
    dim: int = 1,
    eps: float = 1e-8,
    fill: float = 0.0,
) -> Tensor:
    """Inverse-variance weighted mean: ``Σ_k x_k / (σ²_k + eps) / Σ_k 1 / (σ²_k + eps)``.

    The minimum-variance unbiased combination of independent estimates; optional extra per-teacher
    ``weights`` multiply in.

    Args:
        x: teacher outputs ``(B, K, ...)``.
        var: each teacher's predicted variance, shaped like ``x`` or broadcastable (e.g. ``(1, K, 1)``).
        weights: extra non-negative per-teacher weights ``(K,)`` or ``(B, K)``.
        valid: bool mask broadcastable to ``x``.
        dim: the teacher dimension.
        eps: added to the variances.
        fill: value where no teacher counts.

    Returns:
        ``x`` reduced over ``dim``.

    Example:
        >>> weighted(torch.tensor([[0.0, 3.0]]), torch.tensor([[1.0, 2.0]]), eps=0.0)
        tensor([1.])
    """
    if (var < 0).any():
        raise ConfigError("weighted consensus: variances must be non-negative")
    w = 1.0 / (torch.broadcast_to(var, x.shape).to(x.dtype) + eps)
    w = w * _weights(x, weights, dim)
    return _wmean(x, w, valid, dim, fill)


def _wmean(x: Tensor, w: Tensor, valid: Tensor | None, dim: int, fill: float) -> Tensor:
    if valid is not None:
        w = w * torch.broadcast_to(valid.to(torch.bool), x.shape).to(x.dtype)
    den = w.sum(dim)
    num = (w * torch.where(w > 0, x, torch.zeros_like(x))).sum(dim)  # NaN in invalid entries is harmless
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, torch.full_like(num, fill))


def dispersion(x: Tensor, kind: str = "std", valid: Tensor | None = None, dim: int = 1) -> tuple[Tensor, Tensor]:
    """Per-element spread over teachers; returns ``(dispersion, n_valid)``.

    ``std``: population standard deviation (ddof = 0) of the valid teachers. ``mad``: median absolute
    deviation from the (true) median, unscaled (no 1.4826 factor), as
    ``scipy.stats.median_abs_deviation(scale=1.0)``.

    Args:
        x: teacher outputs ``(B, K, ...)``.
        kind: ``std`` or ``mad``.
        valid: bool mask broadcastable to ``x``.
        dim: the teacher dimension.

    Returns:
        ``(dispersion, n_valid)``, both reduced over ``dim``.

    Example:
        >>> dispersion(torch.tensor([[1.0, 3.0]]))[0]
        tensor([1.])
    """
    xm, vm = _prep(x, valid, dim)
    n = vm.sum(-1)
    if kind == "std":
        m = mean(xm, valid=vm, dim=-1)
        d2 = torch.where(vm, (xm - m.unsqueeze(-1)) ** 2, torch.zeros_like(xm))
        var = d2.sum(-1) / n.clamp(min=1).to(xm.dtype)
        return var.clamp(min=0).sqrt(), n
    if kind == "mad":
        med = median(xm, valid=vm, dim=-1)
        return median((xm - med.unsqueeze(-1)).abs(), valid=vm, dim=-1), n
    raise ConfigError(f"unknown dispersion {kind!r}; use 'std' or 'mad'")


def agreement_mask(
    x: Tensor,
    threshold: float | None = None,
    quantile: float | None = None,
    kind: str = "std",
    valid: Tensor | None = None,
    dim: int = 1,
    reduce_dims: tuple[int, ...] = (),
    min_valid: int = 1,
) -> tuple[Tensor, Tensor]:
    """Where do the teachers agree? Returns ``(mask, coverage)``.

    Dispersion (``kind`` = ``std`` | ``mad``, see :func:`dispersion`) is computed per element over
    the teacher dim; ``reduce_dims`` (dims of the *output*, e.g. ``(1,)`` for the channel of
    ``(B, C, H, W)``) averages it, so a pixel of a normal map is kept or dropped as a whole.
    Keep elements with dispersion ``<= threshold`` (absolute), or, with ``quantile`` = q, those with
    dispersion ``<=`` the per-sample q-quantile of the dispersions of that sample's elements (so
    roughly a fraction q is kept). Elements with fewer than ``min_valid`` valid teachers are dropped.

    Args:
        x: teacher outputs ``(B, K, ...)``.
        threshold: absolute dispersion bound (give this or ``quantile``).
        quantile: per-sample quantile of the dispersions to keep below.
        kind: ``std`` or ``mad``.
        valid: bool mask broadcastable to ``x``.
        dim: the teacher dimension.
        reduce_dims: output dims over which the dispersion is averaged.
        min_valid: fewest valid teachers an element needs.

    Returns:
        ``(mask, coverage)``: bool mask shaped like the reduced output, and the kept fraction of all
        output elements (a 0-dim float tensor).

    Example:
        >>> agreement_mask(torch.tensor([[[1.0, 5.0], [1.1, 9.0]]]), threshold=0.1)[0]  # (B=1, K=2, N=2)
        tensor([[ True, False]])
    """
    if (threshold is None) == (quantile is None):
        raise ConfigError("agreement_mask: give exactly one of threshold= or quantile=")
    d, n = dispersion(x, kind=kind, valid=valid, dim=dim)
    ok = n >= max(min_valid, 1)
    if reduce_dims:
        d = torch.where(ok, d, torch.zeros_like(d))
        cnt = ok.to(d.dtype).sum(reduce_dims, keepdim=True)
        d = d.sum(reduce_dims, keepdim=True) / cnt.clamp(min=1)
        ok = cnt > 0
        d = torch.broadcast_to(d, n.shape)
        ok = torch.broadcast_to(ok, n.shape)
    if threshold is not None:
        mask = ok & (d <= threshold)
    else:
        if not 0.0 <= float(quantile) <= 1.0:
            raise ConfigError(f"agreement_mask: quantile must be in [0, 1], got {quantile}")
        flat = torch.where(ok, d, torch.full_like(d, float("nan"))).reshape(d.shape[0], -1).float()
        q = torch.nanquantile(flat, float(quantile), dim=1)
        q = q.reshape((-1,) + (1,) * (d.ndim - 1)).to(d.dtype)
        mask = ok & (d <= q)
    coverage = mask.float().mean() if mask.numel() else torch.tensor(0.0)
    return mask, coverage


class Vote(NamedTuple):
    """Categorical consensus: ``labels`` (B, ...), ``probs`` (B, C, ...), ``confidence`` (B, ...).

    Example:
        >>> vote(torch.tensor([[[0.9, 0.1], [0.4, 0.6]]])).labels
        tensor([0])
    """

    labels: Tensor
    probs: Tensor
    confidence: Tensor


def vote(
    probs: Tensor,
    method: str = "mean",
    weights: Tensor | None = None,
    valid: Tensor | None = None,
    dim: int = 1,
    class_dim: int = 2,
    from_logits: bool = False,
) -> Vote:
    """Categorical consensus of K teachers' class distributions ``(B, K, C, ...)``.

    ``mean``: weighted average of the probabilities; ``confidence = 1 - H(p̄) / log C``
    (entropy-based, 1 = one-hot, 0 = uniform). ``majority``: each valid teacher casts its weight for
    its argmax class; ``probs`` is the normalised vote histogram, ``confidence`` the winner's vote
    share. Ties go to the lowest class index (like ``torch.argmax``/``scipy.stats.mode``).
    Elements with no valid teacher get uniform probs and confidence 0.

    Args:
        probs: class probabilities (or logits with ``from_logits``) ``(B, K, C, ...)``.
        method: ``mean`` or ``majority``.
        weights: non-negative per-teacher weights ``(K,)`` or ``(B, K)``.
        valid: bool mask broadcastable to ``probs``.
        dim: the teacher dimension.
        class_dim: the class dimension of ``probs``.
        from_logits: apply a softmax over ``class_dim`` first.

    Returns:
        A :class:`Vote` ``(labels, probs, confidence)``.

    Example:
        >>> v = vote(torch.tensor([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]]), method="majority")
        >>> v.labels, v.confidence
        (tensor([0]), tensor([0.6667]))
    """
    p = probs.softmax(class_dim) if from_logits else probs
    C = p.shape[class_dim]
    if method == "mean":
        v = None if valid is None else torch.broadcast_to(valid.to(torch.bool), p.shape)
        pbar = mean(p, weights=weights, valid=v, dim=dim, fill=1.0 / C)
        cdim = class_dim - 1 if class_dim > dim else class_dim
        ent = -(pbar * pbar.clamp(min=1e-30).log()).sum(cdim)
        conf = 1.0 - ent / math.log(C) if C > 1 else torch.ones_like(ent)
        return Vote(pbar.argmax(cdim), pbar, conf.clamp(0.0, 1.0))
    if method == "majority":
        top = p.argmax(class_dim, keepdim=True)
        onehot = torch.zeros_like(p).scatter_(class_dim, top, 1.0)
        w = _weights(onehot, weights, dim)
        if valid is not None:
            w = w * torch.broadcast_to(valid.to(torch.bool), p.shape).to(p.dtype)
        counts = (w * onehot).sum(dim)
        cdim = class_dim - 1 if class_dim > dim else class_dim
        tot = counts.sum(cdim, keepdim=True)
        hist = torch.where(tot > 0, counts / tot.clamp(min=1e-30), torch.full_like(counts, 1.0 / C))
        conf = torch.where(tot.squeeze(cdim) > 0, hist.amax(cdim), torch.zeros_like(tot.squeeze(cdim)))
        return Vote(hist.argmax(cdim), hist, conf)
    raise ConfigError(f"unknown vote method {method!r}; use 'mean' or 'majority'")


METHODS = ("mean", "median", "trimmed_mean", "weighted")


def combine(x: Tensor, method: str = "median", **kwargs) -> Tensor:
    """Dispatch by name (for configs): ``mean`` | ``median`` | ``trimmed_mean`` | ``weighted``.

    Args:
        x: teacher outputs ``(B, K, ...)``.
        method: one of :data:`METHODS`.
        **kwargs: passed to the op (``weights``, ``valid``, ``dim``, ``trim``, ``var``, ...).

    Returns:
        The op's result.

    Example:
        >>> combine(torch.tensor([[1.0, 2.0, 10.0]]), "median")
        tensor([2.])
    """
    fns = {"mean": mean, "median": median, "trimmed_mean": trimmed_mean, "weighted": weighted}
    if method not in fns:
        raise ConfigError(f"unknown consensus method {method!r}; choose one of {', '.join(METHODS)}")
    return fns[method](x, **kwargs)


# ----------------------------------------------------------------------------- ranking combiners

NORMALIZATIONS = ("zscore", "minmax", "none")
FUSION_METHODS = ("zscore", "minmax", "rrf", "median_rank", "agreement")
MISSING_POLICIES = ("drop", "floor")


def _valid_like(x: Tensor, valid: Tensor | None) -> Tensor:
    return torch.ones_like(x, dtype=torch.bool) if valid is None else torch.broadcast_to(valid.to(torch.bool), x.shape)


def normalize_scores(x: Tensor, valid: Tensor | None = None, method: str = "zscore", dim: int = -1) -> Tensor:
    """Normalise each score list over its valid candidates (``dim``), e.g. per (query, teacher).

    Scores of different teachers (BM25, cosine, minus-rank) live on unrelated scales, so they are
    put on one before fusing. ``zscore``: ``(x - μ) / σ`` with the population σ of the valid entries;
    ``minmax``: ``(x - min) / (max - min)`` into [0, 1]; ``none``: unchanged. A constant list maps to
    0; invalid entries (any value, NaN included) come out as 0.

    Args:
        x: scores, e.g. ``(B, K, N)`` (queries, teachers, candidates).
        valid: bool mask broadcastable to ``x``; None = all valid.
        method: one of :data:`NORMALIZATIONS`.
        dim: the candidate dimension.

    Returns:
        A tensor shaped like ``x``.

    Example:
        >>> normalize_scores(torch.tensor([[1.0, 2.0, 3.0]]), method="minmax")
        tensor([[0.0000, 0.5000, 1.0000]])
    """
    if method not in NORMALIZATIONS:
        raise ConfigError(f"unknown normalisation {method!r}; choose one of {', '.join(NORMALIZATIONS)}")
    v = _valid_like(x, valid)
    zero = torch.zeros_like(x)
    xv = torch.where(v, x, zero)
    if method == "none":
        return xv
    n = v.sum(dim, keepdim=True).clamp(min=1).to(x.dtype)
    if method == "zscore":
        mu = xv.sum(dim, keepdim=True) / n
        sd = (torch.where(v, (xv - mu) ** 2, zero).sum(dim, keepdim=True) / n).sqrt()
        out = (xv - mu) / torch.where(sd > 0, sd, torch.ones_like(sd))
        out = torch.where(sd > 0, out, zero)
    else:
        lo = torch.where(v, x, torch.full_like(x, float("inf"))).amin(dim, keepdim=True)
        hi = torch.where(v, x, torch.full_like(x, float("-inf"))).amax(dim, keepdim=True)
        span = hi - lo
        ok = torch.isfinite(span) & (span > 0)
        lo = torch.where(ok, lo, torch.zeros_like(lo))
        out = torch.where(ok, (xv - lo) / torch.where(ok, span, torch.ones_like(span)), zero)
    return torch.where(v, out, zero)


def ranks(x: Tensor, valid: Tensor | None = None, dim: int = -1) -> Tensor:
    """1-based ranks by descending score among the valid entries of each list; invalid entries get 0.

    Ties are broken by position (the earlier entry ranks first), so put candidates in a stable
    order (e.g. sorted by doc id, as ``data.ir.runs_to_tensor`` does) for deterministic ranks.

    Args:
        x: scores, e.g. ``(B, K, N)``.
        valid: bool mask broadcastable to ``x``; None = all valid.
        dim: the candidate dimension.

    Returns:
        A long tensor shaped like ``x``.

    Example:
        >>> ranks(torch.tensor([[1.0, 3.0, 3.0]]))
        tensor([[3, 1, 2]])
    """
    v = _valid_like(x, valid).movedim(dim, -1)
    xm = x.movedim(dim, -1)
    order = torch.sort(xm, dim=-1, descending=True, stable=True).indices  # by score, ties by position
    vo = torch.gather(v, -1, order)
    order = torch.gather(order, -1, torch.sort((~vo).to(torch.uint8), dim=-1, stable=True).indices)  # valid first
    pos = torch.empty_like(order)
    pos.scatter_(-1, order, torch.arange(1, order.shape[-1] + 1, device=x.device).expand_as(order).contiguous())
    return torch.where(v, pos, torch.zeros_like(pos)).movedim(-1, dim)


def fuse_scores(
    x: Tensor,
    valid: Tensor | None = None,
    method: str = "zscore",
    weights: Tensor | None = None,
    rrf_k: float = 60.0,
    missing: str = "drop",
) -> tuple[Tensor, Tensor]:
    """Fuse K teachers' candidate scores per query: ``(B, K, N)`` -> ``(B, N)`` and its valid mask.

    ``zscore`` / ``minmax``: each teacher's list is normalised over the candidates it scored
    (:func:`normalize_scores`), then the weighted mean over the teachers that scored the candidate
    (``Σ_k w_k x̂_k / Σ_k w_k`` over valid k: under ``missing="drop"`` a missing teacher drops out and
    the others' weights renormalise; under ``"floor"`` it counts with its lowest normalised score).
    ``rrf`` (reciprocal-rank fusion, Cormack et al. 2009): ``Σ_k w_k / (rrf_k + r_k)``
    with ``r_k`` the 1-based rank among the candidates teacher k scored (ties by position); a missing
    teacher adds nothing, as in ``ranx``. A candidate is valid in the output when some teacher with a
    positive weight scored it; invalid outputs are 0. ``median_rank`` (NGC-style): see
    :func:`median_rank_scores` (a missing teacher counts as ranking the candidate just below its
    list; weights only select teachers, ``w_k > 0``). ``agreement``: the ``zscore`` fusion weighted
    per query by :func:`agreement_weights` (times ``weights`` if given); no labels needed; a
    candidate scored only by teachers of weight 0 stays in the output at the neutral z-score 0.

    Args:
        x: scores ``(B, K, N)`` (queries, teachers, candidates); higher is better.
        valid: bool ``(B, K, N)`` (or broadcastable); None = every teacher scored every candidate.
        method: one of :data:`FUSION_METHODS`.
        weights: non-negative per-teacher weights ``(K,)`` or ``(B, K)``; None = all 1.
        rrf_k: RRF's rank offset.
        missing: how ``zscore`` / ``minmax`` / ``agreement`` treat a teacher that scored some of the
            query's candidates but not this one: ``drop`` (it drops out of the mean) or ``floor`` (it
            counts with its lowest normalised score of the query, i.e. at the bottom of its list, the
            rank-free analogue of ``median_rank``'s choice). See :data:`MISSING_POLICIES`.

    Returns:
        ``(fused (B, N), valid (B, N))``.

    Example:
        >>> x = torch.tensor([[[1.0, 2.0, 3.0], [30.0, 10.0, 20.0]]])
        >>> fuse_scores(x, method="rrf", rrf_k=1.0)[0]
        tensor([[0.7500, 0.5833, 0.8333]])
    """
    if x.ndim != 3:
        raise ValueError(f"fuse_scores expects (B, K, N) scores, got shape {tuple(x.shape)}")
    if method not in FUSION_METHODS:
        raise ConfigError(f"unknown fusion {method!r}; choose one of {', '.join(FUSION_METHODS)}")
    if missing not in MISSING_POLICIES:
        raise ConfigError(f"unknown missing-teacher policy {missing!r}; choose one of {', '.join(MISSING_POLICIES)}")
    v = _valid_like(x, valid)
    w = _weights(x, weights, 1)
    out_valid = (v & (w > 0)).any(1)
    if method == "agreement":  # candidates scored only by zero-agreement teachers stay valid, at z = 0
        weights = agreement_weights(x, v & (w > 0)) * w[..., 0]
        method = "zscore"
    if method == "median_rank":
        fused = median_rank_scores(x, v & (w > 0))
    elif method == "rrf":
        r = ranks(x, v, dim=-1).to(x.dtype)
        contrib = torch.where(v, w / (rrf_k + r.clamp(min=1)), torch.zeros_like(x))
        fused = contrib.sum(1)
    else:
        z = normalize_scores(x, v, method, dim=-1)
        zv = v
        if missing == "floor":
            covers = v.any(-1, keepdim=True)
            lo = torch.where(v, z, torch.full_like(z, float("inf"))).amin(-1, keepdim=True)
            z = torch.where(v, z, torch.where(covers, lo, torch.zeros_like(lo)))
            zv = v | covers
        fused = mean(z, weights=weights, valid=zv, dim=1, fill=0.0)
    return torch.where(out_valid, fused, torch.zeros_like(fused)), out_valid


def median_rank_scores(x: Tensor, valid: Tensor | None = None) -> Tensor:
    """Median-rank consensus (NGC-style) of K rankings per query: ``(B, K, N)`` -> ``(B, N)`` scores.

    Each teacher's candidates are ranked (:func:`ranks`, 1 = best, ties by position). A teacher that
    did not rank a candidate counts as ranking it **just below its own list** (``n_k + 1``, ``n_k`` =
    the candidates it ranked for that query): a first stage that did not retrieve a passage is evidence
    against it, and taking the median only over the teachers that ranked it would let one weak
    teacher's single vote put a passage on top. A teacher that ranked nothing for a query abstains
    there. The score is ``-(median rank)``; ties of the median are broken by the mean rank (lower
    first), scaled below half a rank step so it never overrides the median. Candidates no teacher
    ranked get 0 (mark them invalid with ``(valid.any(1))``).

    Args:
        x: scores ``(B, K, N)``; higher is better.
        valid: bool ``(B, K, N)`` (or broadcastable); None = all valid.

    Returns:
        ``(B, N)`` scores, higher = better consensus rank.

    Example:
        >>> x = torch.tensor([[[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [3.0, 1.0, 2.0]]])
        >>> median_rank_scores(x)  # per candidate ranks (1,3,1), (2,1,3), (3,2,2): medians 1, 2, 2
        tensor([[-1.1667, -2.2000, -2.2333]])
    """
    v = _valid_like(x, valid)
    r = ranks(x, v, dim=-1).to(torch.float64)
    n_k = v.sum(-1, keepdim=True)  # (B, K, 1)
    covers = n_k > 0
    r = torch.where(v, r, (n_k + 1).to(r.dtype))
    med = median(r, valid=torch.broadcast_to(covers, r.shape), dim=1)
    mu = mean(r, valid=torch.broadcast_to(covers, r.shape), dim=1)
    scale = 2.0 * (x.shape[-1] + 2)
    out = -(med + mu / scale)
    any_v = v.any(1)
    return torch.where(any_v, out, torch.zeros_like(out)).to(x.dtype if x.is_floating_point() else torch.float64)


def kendall_tau(x: Tensor, y: Tensor, valid: Tensor | None = None) -> Tensor:
    """Kendall's τ-b between two score lists over their last dim, counting only entries valid in both.

    ``τ_b = (C - D) / sqrt((n0 - n1)(n0 - n2))`` with C/D the concordant/discordant pairs, n0 all
    pairs, n1/n2 the pairs tied in ``x``/``y`` (as ``scipy.stats.kendalltau``, variant ``b``). Lists
    with fewer than 2 common entries, or constant in one of them, give 0 (no evidence of agreement).
    Cost is O(N²) per list.

    Args:
        x: scores ``(..., N)``.
        y: scores broadcastable to ``x``.
        valid: bool mask broadcastable to ``x`` (entries where both lists have a score).

    Returns:
        ``(...)`` τ-b values in [-1, 1].

    Example:
        >>> kendall_tau(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 2.0]))
        tensor(0.3333)
    """
    x, y = torch.broadcast_tensors(x, y)
    v = _valid_like(x, valid)
    dx = torch.sign(x.unsqueeze(-1) - x.unsqueeze(-2))
    dy = torch.sign(y.unsqueeze(-1) - y.unsqueeze(-2))
    pair = (v.unsqueeze(-1) & v.unsqueeze(-2)).to(x.dtype)
    pair = torch.triu(pair, diagonal=1)
    dx = torch.nan_to_num(dx) * pair
    dy = torch.nan_to_num(dy) * pair
    s = (dx * dy).sum((-1, -2))
    tx = (dx != 0).to(x.dtype).sum((-1, -2))
    ty = (dy != 0).to(x.dtype).sum((-1, -2))
    den = (tx * ty).sqrt()
    return torch.where(den > 0, s / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(s))


def agreement_weights(x: Tensor, valid: Tensor | None = None, base: str = "zscore", floor: float = 0.0) -> Tensor:
    """Per-query teacher weights from agreement with the others: ``(B, K, N)`` -> ``(B, K)``, no labels.

    For each query and teacher k, the leave-one-out consensus of the other teachers is their
    ``base`` fusion (:func:`fuse_scores`); k's weight is Kendall's τ-b (:func:`kendall_tau`) between its
    scores and that consensus over the candidates both ranked, clipped at ``floor`` (a teacher that
    disagrees with the rest gets no say). A teacher that scored fewer than 2 candidates of a query, or
    a query with a single teacher, gets τ = 0 there; a query where every weight is 0 falls back to
    uniform weights over the teachers that scored something.

    Args:
        x: scores ``(B, K, N)``; higher is better.
        valid: bool ``(B, K, N)``; None = all valid.
        base: the fusion of the others (``zscore``, ``minmax``, ``rrf`` or ``median_rank``).
        floor: lower clip of τ.

    Returns:
        ``(B, K)`` non-negative weights (not normalised).

    Example:
        >>> x = torch.tensor([[[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 1.0, 2.0]]])
        >>> agreement_weights(x)  # the third teacher disagrees with the others: weight 0
        tensor([[0.6667, 0.9129, 0.0000, 0.6667]])
    """
    if base == "agreement" or base not in FUSION_METHODS:
        raise ConfigError(f"agreement_weights: unknown base fusion {base!r}; choose zscore, minmax, rrf or median_rank")
    v = _valid_like(x, valid)
    B, K, _ = x.shape
    out = torch.zeros(B, K, dtype=torch.float64)
    if K > 1:
        for k in range(K):
            others = [j for j in range(K) if j != k]
            cons, cv = fuse_scores(x[:, others], v[:, others], base)
            out[:, k] = kendall_tau(x[:, k].to(torch.float64), cons.to(torch.float64), v[:, k] & cv)
    w = out.clamp(min=floor)
    has = v.any(-1)
    none = (w * has).sum(1, keepdim=True) <= 0
    w = torch.where(none, has.to(w.dtype), w * has)
    return w.to(x.dtype if x.is_floating_point() else torch.float64)
