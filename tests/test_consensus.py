"""Consensus ops vs numpy / scipy (masked arrays, np.median, scipy.stats.trim_mean, MAD, mode, entropy)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from multiteacher import consensus as C
from multiteacher.errors import ConfigError

TOL = dict(rtol=1e-5, atol=1e-6)


def _data(shape=(2, 5, 3, 4, 4), seed=0, p_valid=0.7):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    valid = rng.random(size=shape) < p_valid
    return x, valid


def _t(a):
    return torch.tensor(a, dtype=torch.float32) if a.dtype != bool else torch.tensor(a)


def _ma(x, valid):
    return np.ma.masked_array(x, mask=~valid)


@pytest.mark.parametrize("shape", [(2, 5, 3, 4, 4), (4, 4, 6), (3, 1, 5)])
def test_mean_and_weighted_mean_vs_numpy(shape):
    x, valid = _data(shape, 1)
    w = np.random.default_rng(2).random(shape[1]) + 0.1
    np.testing.assert_allclose(C.mean(_t(x)).numpy(), x.mean(1), **TOL)
    wb = w.reshape((1, -1) + (1,) * (len(shape) - 2))
    np.testing.assert_allclose(
        C.mean(_t(x), weights=torch.tensor(w)).numpy(), np.average(x, 1, np.broadcast_to(wb, shape)), **TOL
    )
    ref = np.ma.average(_ma(x, valid), axis=1, weights=np.broadcast_to(wb, shape)).filled(0.0)
    ours = C.mean(_t(x), weights=torch.tensor(w), valid=_t(valid)).numpy()
    np.testing.assert_allclose(ours, ref, **TOL)


def test_per_sample_weights():
    x, _ = _data((3, 4, 5), 3)
    w = np.random.default_rng(4).random((3, 4))
    ref = np.stack([np.average(x[b], 0, w[b]) for b in range(3)])
    np.testing.assert_allclose(C.mean(_t(x), weights=torch.tensor(w)).numpy(), ref, **TOL)


@pytest.mark.parametrize("K", [1, 2, 4, 5])
def test_median_true_median_vs_numpy(K):
    x, valid = _data((2, K, 3, 4, 4), 5 + K)
    np.testing.assert_allclose(C.median(_t(x)).numpy(), np.median(x, 1), **TOL)
    ref = np.ma.median(_ma(x, valid), axis=1).filled(0.0)
    np.testing.assert_allclose(C.median(_t(x), valid=_t(valid)).numpy(), ref, **TOL)


def test_median_even_is_average_of_middle():
    x = torch.tensor([[[1.0], [4.0], [2.0], [10.0]]])  # (B=1, K=4, D=1)
    assert C.median(x).item() == 3.0  # torch.median would give 2.0


@pytest.mark.parametrize("trim", [0.0, 0.1, 0.2, 0.25, 0.4])
def test_trimmed_mean_vs_scipy(trim):
    x, valid = _data((2, 7, 3, 3), 9)
    np.testing.assert_allclose(C.trimmed_mean(_t(x), trim).numpy(), stats.trim_mean(x, trim, axis=1), **TOL)
    ours = C.trimmed_mean(_t(x), trim, valid=_t(valid)).numpy()
    ref = np.zeros(ours.shape)
    for idx in np.ndindex(ref.shape):
        b, rest = idx[0], idx[1:]
        vals = x[(b, slice(None), *rest)][valid[(b, slice(None), *rest)]]
        ref[idx] = stats.trim_mean(vals, trim) if vals.size else 0.0
    np.testing.assert_allclose(ours, ref, **TOL)


def test_inverse_variance_weighted():
    x, valid = _data((2, 4, 6), 10)
    var = np.random.default_rng(11).random((2, 4, 6)) + 0.05
    ref = (x / var).sum(1) / (1 / var).sum(1)
    np.testing.assert_allclose(C.weighted(_t(x), _t(var), eps=0).numpy(), ref, **TOL)
    w = 1 / var * valid
    ref_m = np.where(w.sum(1) > 0, (w * x).sum(1) / np.where(w.sum(1) > 0, w.sum(1), 1), 0.0)
    np.testing.assert_allclose(C.weighted(_t(x), _t(var), valid=_t(valid), eps=0).numpy(), ref_m, **TOL)
    # one variance per teacher broadcasts
    v1 = torch.tensor([1.0, 2.0, 4.0, 8.0]).reshape(1, 4, 1)
    ref1 = (x / v1.numpy()).sum(1) / (1 / v1.numpy()).sum(1)
    np.testing.assert_allclose(C.weighted(_t(x), v1, eps=0).numpy(), ref1, **TOL)


@pytest.mark.parametrize("kind", ["std", "mad"])
def test_dispersion_vs_numpy_scipy(kind):
    x, valid = _data((2, 5, 3, 4), 12)
    d, n = C.dispersion(_t(x), kind)
    ref = x.std(1) if kind == "std" else stats.median_abs_deviation(x, axis=1, scale=1.0)
    np.testing.assert_allclose(d.numpy(), ref, **TOL)
    assert (n == 5).all()
    dm, nm = C.dispersion(_t(x), kind, valid=_t(valid))
    refm = np.zeros(dm.shape)
    for idx in np.ndindex(refm.shape):
        vals = x[(idx[0], slice(None), *idx[1:])][valid[(idx[0], slice(None), *idx[1:])]]
        if vals.size:
            refm[idx] = vals.std() if kind == "std" else stats.median_abs_deviation(vals, scale=1.0)
    np.testing.assert_allclose(dm.numpy(), refm, **TOL)
    np.testing.assert_array_equal(nm.numpy(), valid.sum(1))


def test_agreement_mask_threshold_and_quantile():
    x, valid = _data((3, 4, 2, 5, 5), 13)
    sd = x.std(1)
    mask, cov = C.agreement_mask(_t(x), threshold=0.8)
    np.testing.assert_array_equal(mask.numpy(), sd <= 0.8)
    assert cov.item() == pytest.approx((sd <= 0.8).mean(), rel=1e-6)
    q = 0.3
    mask_q, cov_q = C.agreement_mask(_t(x), quantile=q)
    thr = np.quantile(sd.reshape(3, -1), q, axis=1).reshape(3, 1, 1, 1)
    np.testing.assert_array_equal(mask_q.numpy(), sd <= thr + 1e-7)
    assert abs(cov_q.item() - q) < 0.05
    # reduce over channels: one decision per pixel
    mp, _ = C.agreement_mask(_t(x), threshold=0.8, reduce_dims=(1,))
    np.testing.assert_array_equal(mp.numpy(), np.broadcast_to(sd.mean(1, keepdims=True) <= 0.8, sd.shape))
    # validity: elements with < min_valid teachers are dropped
    mv, _ = C.agreement_mask(_t(x), threshold=10.0, valid=_t(valid), min_valid=2)
    np.testing.assert_array_equal(mv.numpy(), valid.sum(1) >= 2)


def test_agreement_mask_edge_cases():
    same = torch.ones(2, 3, 4).mul(torch.arange(4.0))  # all-equal teachers
    m, cov = C.agreement_mask(same, threshold=0.0)
    assert m.all() and cov.item() == 1.0
    m, cov = C.agreement_mask(same, quantile=0.5, kind="mad")  # all ties: everything kept
    assert m.all()
    empty = torch.zeros(2, 3, 4, dtype=torch.bool)
    m, cov = C.agreement_mask(torch.randn(2, 3, 4), threshold=1.0, valid=empty)
    assert not m.any() and cov.item() == 0.0
    m, cov = C.agreement_mask(torch.randn(2, 3, 4), quantile=0.5, valid=empty)
    assert not m.any()
    with pytest.raises(ConfigError):
        C.agreement_mask(same, threshold=1.0, quantile=0.5)
    with pytest.raises(ConfigError):
        C.agreement_mask(same, threshold=1.0, kind="iqr")


def test_empty_mask_fill_and_k1_and_equal():
    x = torch.randn(2, 3, 4)
    none = torch.zeros(2, 3, 4, dtype=torch.bool)
    for fn in (C.mean, C.median, C.trimmed_mean):
        assert (fn(x, valid=none, fill=-1.0) == -1.0).all()
    assert (C.weighted(x, torch.ones(2, 3, 4), valid=none) == 0).all()
    x1 = torch.randn(2, 1, 4)
    for fn in (C.mean, C.median, C.trimmed_mean):
        torch.testing.assert_close(fn(x1), x1[:, 0])
    eq = torch.randn(2, 1, 4).expand(2, 5, 4)
    for fn in (C.mean, C.median, C.trimmed_mean):
        torch.testing.assert_close(fn(eq), eq[:, 0])
    # NaN in invalid teacher entries must not leak
    xn = x.clone()
    xn[:, 0] = float("nan")
    v = torch.ones(2, 3, 4, dtype=torch.bool)
    v[:, 0] = False
    for fn in (C.mean, C.median, C.trimmed_mean):
        assert torch.isfinite(fn(xn, valid=v)).all()


def test_vote_mean_and_entropy_confidence():
    rng = np.random.default_rng(14)
    p = rng.dirichlet(np.ones(5), size=(3, 4, 6, 6)).transpose(0, 1, 4, 2, 3)  # (B, K, C, H, W)
    w = np.array([1.0, 2.0, 0.5, 1.5])
    v = C.vote(_t(p), "mean", weights=torch.tensor(w))
    pbar = np.average(p, axis=1, weights=w)
    np.testing.assert_allclose(v.probs.numpy(), pbar, **TOL)
    np.testing.assert_array_equal(v.labels.numpy(), pbar.argmax(1))
    conf = 1 - stats.entropy(pbar, axis=1) / np.log(5)
    np.testing.assert_allclose(v.confidence.numpy(), conf, rtol=1e-4, atol=1e-5)


def test_vote_majority_vs_scipy_mode():
    rng = np.random.default_rng(15)
    logits = rng.normal(size=(10, 5, 4))  # (B, K, C): vectors
    v = C.vote(_t(logits), "majority", from_logits=True)
    votes = logits.argmax(2)  # (B, K)
    mode = stats.mode(votes, axis=1, keepdims=False)
    np.testing.assert_array_equal(v.labels.numpy(), mode.mode)  # ties -> smallest class, like scipy
    np.testing.assert_allclose(v.confidence.numpy(), mode.count / 5, **TOL)
    # validity + weights
    valid = np.ones((10, 5), bool)
    valid[:, 0] = False
    v2 = C.vote(_t(logits), "majority", valid=_t(valid)[..., None], weights=torch.tensor([9.0, 1, 1, 1, 1]))
    mode2 = stats.mode(votes[:, 1:], axis=1, keepdims=False)
    np.testing.assert_array_equal(v2.labels.numpy(), mode2.mode)
    # no valid teacher -> uniform probs, zero confidence
    v3 = C.vote(_t(logits), "majority", valid=torch.zeros(10, 5, 1, dtype=torch.bool))
    assert (v3.confidence == 0).all() and torch.allclose(v3.probs, torch.full((10, 4), 0.25))
    v4 = C.vote(_t(logits), "mean", valid=torch.zeros(10, 5, 1, dtype=torch.bool), from_logits=True)
    assert torch.allclose(v4.confidence, torch.zeros(10), atol=1e-6)


def test_combine_dispatch_and_errors():
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(C.combine(x, "median"), C.median(x))
    torch.testing.assert_close(C.combine(x, "trimmed_mean", trim=0.2), C.trimmed_mean(x, 0.2))
    with pytest.raises(ConfigError, match="unknown consensus method 'mode'"):
        C.combine(x, "mode")
    with pytest.raises(ConfigError):
        C.vote(x.softmax(2), "borda")
    with pytest.raises(ConfigError):
        C.trimmed_mean(x, 0.5)
    with pytest.raises(ConfigError):
        C.mean(x, weights=torch.tensor([1.0, -1.0, 1.0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_flow(dtype):
    x = torch.randn(2, 4, 3, 5, 5).to(dtype).requires_grad_()
    valid = torch.rand(2, 4, 1, 5, 5) > 0.3
    out = C.mean(x, valid=valid).sum() + C.median(x, valid=valid).sum() + C.trimmed_mean(x, 0.25, valid).sum()
    out = out + C.weighted(x, torch.ones_like(x), valid=valid).sum()
    out.backward()
    assert torch.isfinite(x.grad.float()).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, valid = _data((2, 5, 3, 6, 6), 16)
    X, V = _t(x), _t(valid)
    fns = {
        "mean": lambda x, v: C.mean(x, valid=v),
        "median": lambda x, v: C.median(x, valid=v),
        "trimmed": lambda x, v: C.trimmed_mean(x, 0.2, valid=v),
        "weighted": lambda x, v: C.weighted(x, x.abs() + 0.1, valid=v),
        "agree": lambda x, v: C.agreement_mask(x, quantile=0.4, valid=v, reduce_dims=(1,))[0].float(),
        "vote": lambda x, v: C.vote(x, "majority", valid=v, from_logits=True).probs,
    }
    for name, fn in fns.items():
        torch.testing.assert_close(fn(X.cuda(), V.cuda()).cpu(), fn(X, V), rtol=1e-5, atol=1e-5, msg=name)
