"""Significance tests over paired per-query (or per-fold) values, and Holm's correction.

- :func:`paired_randomization_test`: sign-flip randomisation test of the mean difference (Fisher;
  the standard IR test, Smucker et al. CIKM 2007). Exact over all ``2^n`` sign vectors when
  ``2^n <= n_resamples``, otherwise seeded Monte Carlo. p-values use the conventions of
  ``scipy.stats.permutation_test(permutation_type="samples")``: exact p = count / 2^n, Monte Carlo
  p = (count + 1) / (R + 1), two-sided p = 2 · min(p_less, p_greater) capped at 1.
- :func:`paired_t_test`: Student's paired t-test (as ``scipy.stats.ttest_rel``).
- :func:`holm`: Holm (1979) step-down adjusted p-values (family-wise error control).

Inputs are equal-length sequences/arrays, or two ``{key: value}`` dicts (e.g. per-query values from
:func:`multiteacher.metrics.ir.per_query`) which are aligned by key; mismatched keys raise
``DataError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy import stats as _st

from multiteacher.errors import ConfigError, DataError

__all__ = ["SignificanceResult", "holm", "paired_randomization_test", "paired_t_test", "paired_values"]

_ALTERNATIVES = ("two-sided", "greater", "less")


class SignificanceResult(NamedTuple):
    """``statistic`` (mean of a - b, or t), ``p_value``, ``n`` pairs, ``method``: exact | monte-carlo | t."""

    statistic: float
    p_value: float
    n: int
    method: str


def paired_values(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Align two paired samples: dicts by key (sorted), sequences by position. float64 arrays."""
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            raise DataError("paired test: give two dicts {key: value} or two sequences, not one of each")
        ka, kb = set(a), set(b)
        if ka != kb:
            diff = sorted(map(str, ka ^ kb))[:5]
            raise DataError(
                f"paired test: the two systems cover different keys (e.g. {diff}); evaluate both on the same queries"
            )
        keys = sorted(ka, key=str)
        x = np.array([a[k] for k in keys], dtype=np.float64)
        y = np.array([b[k] for k in keys], dtype=np.float64)
    else:
        x = np.asarray(a, dtype=np.float64).reshape(-1)
        y = np.asarray(b, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise DataError(f"paired test: {x.size} values vs {y.size}; the samples must be paired")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise DataError("paired test: values must be finite numbers")
    return x, y


def _check_alt(alternative: str) -> None:
    if alternative not in _ALTERNATIVES:
        raise ConfigError(f"unknown alternative {alternative!r}; use one of {', '.join(_ALTERNATIVES)}")


def paired_randomization_test(
    a: Sequence[float] | Mapping,
    b: Sequence[float] | Mapping,
    n_resamples: int = 10_000,
    seed: int = 0,
    alternative: str = "two-sided",
    batch: int = 4096,
) -> SignificanceResult:
    """Sign-flip randomisation test of ``H0: mean(a - b) = 0`` (see module docstring).

    Exact (all ``2**n`` sign flips) when that is no more than ``n_resamples``, Monte Carlo otherwise.

    Args:
        a: Per-query values of system A (a sequence, or a mapping id -> value paired by id with ``b``).
        b: Per-query values of system B, paired with ``a``.
        n_resamples: Monte Carlo resamples (also the limit for the exact test).
        seed: Seed of the Monte Carlo sign flips.
        alternative: ``"two-sided"``, ``"greater"`` (A > B) or ``"less"``.
        batch: Sign-flip vectors evaluated per matrix product.

    Returns:
        ``SignificanceResult(statistic=mean(a - b), p_value, n, method)``.

    Example:
        >>> r = paired_randomization_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
        >>> r.statistic, r.p_value, r.method   # only the all-positive flip reaches 2: 2 * 1/8
        (2.0, 0.25, 'exact')
    """
    _check_alt(alternative)
    if n_resamples < 1:
        raise ConfigError(f"n_resamples must be >= 1, got {n_resamples}")
    x, y = paired_values(a, b)
    d = x - y
    n = d.size
    if n == 0:
        raise DataError("paired test: no pairs to compare")
    obs = float(d.mean())
    gamma = abs(np.finfo(np.float64).eps * 100 * obs)
    exact = n < 63 and 2**n <= n_resamples
    le = ge = 0
    if exact:
        total = 2**n
        bits = np.arange(n, dtype=np.int64)
        for start in range(0, total, batch):
            codes = np.arange(start, min(start + batch, total), dtype=np.int64)
            signs = 1.0 - 2.0 * ((codes[:, None] >> bits[None, :]) & 1)
            null = signs @ d / n
            le += int(np.count_nonzero(null <= obs + gamma))
            ge += int(np.count_nonzero(null >= obs - gamma))
        p_less, p_greater = le / total, ge / total
    else:
        rng = np.random.default_rng(seed)
        done = 0
        while done < n_resamples:
            m = min(batch, n_resamples - done)
            signs = rng.choice(np.array([-1.0, 1.0]), size=(m, n))
            null = signs @ d / n
            le += int(np.count_nonzero(null <= obs + gamma))
            ge += int(np.count_nonzero(null >= obs - gamma))
            done += m
        p_less, p_greater = (le + 1) / (n_resamples + 1), (ge + 1) / (n_resamples + 1)
    p = {"less": p_less, "greater": p_greater, "two-sided": min(1.0, 2 * min(p_less, p_greater))}[alternative]
    return SignificanceResult(obs, float(p), n, "exact" if exact else "monte-carlo")


def paired_t_test(
    a: Sequence[float] | Mapping, b: Sequence[float] | Mapping, alternative: str = "two-sided"
) -> SignificanceResult:
    """Paired t-test: ``t = mean(d) / (sd(d) / sqrt(n))`` with ``sd`` at ddof 1, df = n - 1.

    Degenerate cases: all differences zero -> t = 0, p = 1; constant non-zero difference ->
    t = ±inf, p = 0 (two-sided or the matching one-sided), 1 otherwise. Needs n >= 2.
    """
    _check_alt(alternative)
    x, y = paired_values(a, b)
    d = x - y
    n = d.size
    if n < 2:
        raise DataError(f"paired t-test needs at least 2 pairs, got {n}")
    m = d.mean()
    sd = d.std(ddof=1)
    if sd == 0 or not np.isfinite(sd):
        if m == 0:
            return SignificanceResult(0.0, 1.0, n, "t")
        t = math.copysign(math.inf, m)
        agrees = alternative == "two-sided" or (alternative == "greater") == (m > 0)
        p = 0.0 if agrees else 1.0
        return SignificanceResult(t, p, n, "t")
    t = float(m / (sd / math.sqrt(n)))
    dist = _st.t(df=n - 1)
    if alternative == "two-sided":
        p = 2.0 * dist.sf(abs(t))
    elif alternative == "greater":
        p = dist.sf(t)
    else:
        p = dist.cdf(t)
    return SignificanceResult(t, float(min(1.0, p)), n, "t")


def holm(p_values: Sequence[float] | Mapping) -> list[float] | dict:
    """Holm step-down adjusted p-values, in the input order (a dict in gives a dict out).

    Sort ascending ``p_(1) <= ... <= p_(m)``; ``p̃_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``.
    Reject ``H_(i)`` at level α iff ``p̃_(i) <= α``.

    Args:
        p_values: Unadjusted p-values, a sequence or a mapping name -> p.

    Returns:
        The adjusted p-values in the input order (a dict when a mapping came in).

    Example:
        >>> holm([0.01, 0.04, 0.03])
        [0.03, 0.06, 0.06]
    """
    if isinstance(p_values, Mapping):
        keys = list(p_values)
        adj = holm([p_values[k] for k in keys])
        return dict(zip(keys, adj))
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    if p.size and (np.isnan(p).any() or (p < 0).any() or (p > 1).any()):
        raise DataError("holm: p-values must lie in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adj_sorted = np.maximum.accumulate(scaled)
    out = np.empty(m)
    out[order] = adj_sorted
    return [float(v) for v in out]
