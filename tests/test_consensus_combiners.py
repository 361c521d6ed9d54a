"""Rank-based teacher combiners (median rank, Kendall tau, agreement weights, RRF) vs numpy/scipy references.

ranx is not used as the reference: it pulls numba/llvmlite; the references below are numpy loops
written from the definitions, and scipy.stats.kendalltau / rankdata.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from multiteacher.consensus import (
    FUSION_METHODS,
    agreement_weights,
    fuse_scores,
    kendall_tau,
    median_rank_scores,
)
from multiteacher.data.ir import fuse_runs


def _data(seed: int, B: int = 3, K: int = 4, N: int = 9, p_missing: float = 0.3, ties: bool = True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, K, N))
    if ties:
        x = np.round(x, 0)  # many ties
    v = rng.random((B, K, N)) > p_missing
    v[0, 1, :] = False  # a teacher that scored nothing for query 0
    x = np.where(v, x, np.nan)
    return x, v


def _ranks_np(row: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """1-based ranks among the valid entries, descending score, ties by position (rankdata 'ordinal')."""
    r = np.zeros(len(row))
    idx = np.flatnonzero(ok)
    r[idx] = stats.rankdata(-row[idx], method="ordinal")
    return r


def _median_rank_ref(x, v):
    B, K, N = x.shape
    out = np.zeros((B, N))
    for b in range(B):
        cols = []
        for k in range(K):
            n_k = v[b, k].sum()
            if n_k == 0:
                continue  # abstains
            r = _ranks_np(x[b, k], v[b, k])
            cols.append(np.where(v[b, k], r, n_k + 1))
        R = np.array(cols)
        med, mu = np.median(R, 0), R.mean(0)
        out[b] = np.where(v[b].any(0), -(med + mu / (2.0 * (N + 2))), 0.0)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_median_rank_matches_numpy_with_missing_and_ties(seed: int) -> None:
    x, v = _data(seed)
    got = median_rank_scores(torch.tensor(x), torch.tensor(v)).numpy()
    np.testing.assert_allclose(got, _median_rank_ref(x, v), atol=1e-12)
    fused, fv = fuse_scores(torch.tensor(x), torch.tensor(v), "median_rank")
    np.testing.assert_allclose(fused.numpy(), _median_rank_ref(x, v), atol=1e-12)
    assert fv.numpy().tolist() == v.any(1).tolist()


def test_median_rank_missing_counts_below_the_list() -> None:
    # candidate c is ranked first by one teacher only; the two others did not retrieve it: it must
    # not beat a candidate that all three rank second.
    x = torch.tensor([[[5.0, 4.0, 1.0], [float("nan"), 4.0, 5.0], [float("nan"), 4.0, 5.0]]])
    v = ~torch.isnan(x)
    s = median_rank_scores(x, v)[0]
    # ranks: a = (1, 3, 3) -> median 3;  b = (2, 2, 2) -> 2;  c = (3, 1, 1) -> 1
    assert s.argsort(descending=True).tolist() == [2, 1, 0]


def test_rrf_matches_hand_computation_with_missing() -> None:
    x, v = _data(5, ties=False)
    k = 60.0
    fused, _ = fuse_scores(torch.tensor(x), torch.tensor(v), "rrf", rrf_k=k)
    B, K, N = x.shape
    ref = np.zeros((B, N))
    for b in range(B):
        for t in range(K):
            r = _ranks_np(x[b, t], v[b, t])
            ref[b] += np.where(v[b, t], 1.0 / (k + r), 0.0)  # a missing teacher adds nothing
    np.testing.assert_allclose(fused.numpy(), ref, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 3, 4])
def test_kendall_tau_b_matches_scipy_with_ties_and_mask(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = np.round(rng.normal(size=(5, 12)), 0)
    b = np.round(a + rng.normal(size=(5, 12)), 0)
    m = rng.random((5, 12)) > 0.25
    got = kendall_tau(torch.tensor(a), torch.tensor(b), torch.tensor(m)).numpy()
    for i in range(5):
        ref = stats.kendalltau(a[i][m[i]], b[i][m[i]]).statistic
        assert got[i] == pytest.approx(ref, abs=1e-12)


def _zfuse_np(x, v):
    B, K, _N = x.shape
    z = np.zeros_like(x)
    for b in range(B):
        for k in range(K):
            ok = v[b, k]
            if ok.sum():
                col = x[b, k][ok]
                sd = col.std()
                z[b, k][ok] = (col - col.mean()) / sd if sd > 0 else 0.0
    w = v.astype(float)
    num, den = (w * z).sum(1), w.sum(1)
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0), den > 0


def test_agreement_weights_match_loo_kendall_reference() -> None:
    x, v = _data(7, K=4, N=10, ties=True)
    got = agreement_weights(torch.tensor(x), torch.tensor(v)).numpy()
    B, K, _N = x.shape
    for b in range(B):
        ref = np.zeros(K)
        for k in range(K):
            others = [j for j in range(K) if j != k]
            cons, cv = _zfuse_np(x[b : b + 1, others], v[b : b + 1, others])
            both = v[b, k] & cv[0]
            if both.sum() >= 2:
                t = stats.kendalltau(x[b, k][both], cons[0][both]).statistic
                ref[k] = 0.0 if np.isnan(t) else max(t, 0.0)
        if (ref * v[b].any(-1)).sum() <= 0:
            ref = v[b].any(-1).astype(float)
        np.testing.assert_allclose(got[b], ref * v[b].any(-1), atol=1e-12)


def test_agreement_fusion_downweights_a_contrarian_teacher() -> None:
    good = torch.arange(10.0)
    noise = torch.randn(2, 10, generator=torch.Generator().manual_seed(0))
    x = torch.stack([good, good + 0.5 * noise[0], good + 0.5 * noise[1], -3 * good])[None]
    w = agreement_weights(x)
    assert w[0, 3] == 0 and (w[0, :3] > 0).all()
    fused, _ = fuse_scores(x, method="agreement")
    assert fused[0].argsort(descending=True)[:3].tolist() == [9, 8, 7]
    plain, _ = fuse_scores(x, method="zscore")
    assert plain[0].std() < fused[0].std()


def test_fusion_methods_registry_and_fuse_runs() -> None:
    assert {"zscore", "rrf", "median_rank", "agreement"} <= set(FUSION_METHODS)
    runs = {
        "a": {"q": {"x": 3.0, "y": 2.0, "z": 1.0}},
        "b": {"q": {"y": 9.0, "z": 8.0}},
        "c": {"q": {"x": 1.0, "y": 2.0}},
    }
    out = fuse_runs(runs, "median_rank")
    # ranks x: (1, 3 [missing: below b's 2], 2) -> 2;  y: (2, 1, 1) -> 1;  z: (3, 2, 3 [missing]) -> 3
    assert sorted(out["q"], key=out["q"].get, reverse=True) == ["y", "x", "z"]
    for m in FUSION_METHODS:
        assert set(fuse_runs(runs, m)["q"]) == {"x", "y", "z"}


def test_per_query_weights_select_teacher() -> None:
    x = torch.tensor([[[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]], [[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    fused, _ = fuse_scores(x, method="zscore", weights=w)
    assert fused.argmax(1).tolist() == [0, 2]


def test_zscore_floor_policy_matches_numpy() -> None:
    x, v = _data(11, ties=False)
    got, gv = fuse_scores(torch.tensor(x), torch.tensor(v), "zscore", missing="floor")
    B, K, N = x.shape
    ref = np.zeros((B, N))
    for b in range(B):
        cols = []
        for k in range(K):
            ok = v[b, k]
            if not ok.any():
                continue  # a teacher that scored nothing for the query abstains
            z = (x[b, k] - x[b, k][ok].mean()) / x[b, k][ok].std()
            cols.append(np.where(ok, z, z[ok].min()))  # missing: at the bottom of its list
        ref[b] = np.mean(cols, 0)
    np.testing.assert_allclose(np.where(gv.numpy(), got.numpy(), 0), np.where(v.any(1), ref, 0), atol=1e-12)
    with pytest.raises(Exception, match="missing-teacher policy"):
        fuse_scores(torch.tensor(x), torch.tensor(v), "zscore", missing="zero")
