"""Routing vs numpy/scipy: softmax, top-k, KL-to-uniform (scipy.stats.entropy), CV (scipy.stats.variation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import softmax as np_softmax

from multiteacher import routing as Rt
from multiteacher.errors import ConfigError

TOL = dict(rtol=1e-5, atol=1e-6)


def test_softmax_weights_temperature():
    z = np.random.default_rng(0).normal(size=(6, 4))
    for T in (0.5, 1.0, 3.0):
        np.testing.assert_allclose(Rt.softmax_weights(torch.tensor(z).float(), T).numpy(), np_softmax(z / T, 1), **TOL)


def test_topk_soft_numpy():
    z = np.random.default_rng(1).normal(size=(5, 6))
    w, idx = Rt.topk_weights(torch.tensor(z).float(), k=2, temperature=0.7)
    for b in range(5):
        top = np.argsort(-z[b], kind="stable")[:2]
        ref = np.zeros(6)
        ref[top] = np_softmax(z[b, top] / 0.7)
        np.testing.assert_allclose(w[b].numpy(), ref, **TOL)
        assert set(idx[b].tolist()) == set(top.tolist())


def test_topk_hard_straight_through():
    z = torch.randn(4, 5, requires_grad=True)
    w, idx = Rt.topk_weights(z, k=2, hard=True)
    hard = torch.zeros(4, 5).scatter_(1, idx, 0.5)
    torch.testing.assert_close(w, hard, **TOL)  # forward: exact 1/k on the selected teachers
    (w * torch.arange(5.0)).sum().backward()
    # backward = gradient of the full softmax (straight-through)
    z2 = z.detach().clone().requires_grad_()
    (z2.softmax(1) * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(z.grad, z2.grad, **TOL)


def test_topk_ties_and_k1():
    z = torch.zeros(2, 4)  # all tied: lowest indices win
    w, idx = Rt.topk_weights(z, k=2)
    assert idx.tolist() == [[0, 1], [0, 1]]
    torch.testing.assert_close(w, torch.tensor([[0.5, 0.5, 0, 0]] * 2))
    w1, _ = Rt.topk_weights(torch.randn(3, 1), k=1, hard=True)  # K = 1
    torch.testing.assert_close(w1, torch.ones(3, 1))
    with pytest.raises(ConfigError):
        Rt.topk_weights(z, k=5)


def test_load_balance_kl_vs_scipy():
    p = np_softmax(np.random.default_rng(2).normal(size=(16, 4)) * 2, 1)
    pbar = p.mean(0)
    ref = stats.entropy(pbar, np.full(4, 0.25))
    assert Rt.load_balance_kl(torch.tensor(p).float()).item() == pytest.approx(ref, rel=1e-5)
    mask = np.arange(16) < 10
    ref_m = stats.entropy(p[mask].mean(0), np.full(4, 0.25))
    assert Rt.load_balance_kl(torch.tensor(p).float(), torch.tensor(mask)).item() == pytest.approx(ref_m, rel=1e-5)
    # extremes: uniform -> 0, one teacher takes all -> log K
    assert Rt.load_balance_kl(torch.full((3, 4), 0.25)).item() == pytest.approx(0.0, abs=1e-7)
    onehot = torch.zeros(3, 4)
    onehot[:, 2] = 1
    assert Rt.load_balance_kl(onehot).item() == pytest.approx(np.log(4), rel=1e-6)


def test_load_balance_kl_uniform_vs_scipy():
    p = np_softmax(np.random.default_rng(4).normal(size=(16, 4)) * 2, 1)
    ref = stats.entropy(np.full(4, 0.25), p.mean(0))  # KL(U || p̄)
    P = torch.tensor(p).float()
    assert Rt.load_balance_kl_uniform(P).item() == pytest.approx(ref, rel=1e-5)
    # MST-Distill's official scaling: nn.KLDivLoss(batchmean) on the K-vector divides by K once more
    assert Rt.load_balance_kl_uniform(P, per_teacher=True).item() == pytest.approx(ref / 4, rel=1e-5)
    official = torch.nn.KLDivLoss(reduction="batchmean")(P.mean(0).log(), torch.full((4,), 0.25))
    torch.testing.assert_close(Rt.load_balance_kl_uniform(P, per_teacher=True), official)
    # hand-computed: p̄ = (0.75, 0.25) -> ½ (log(0.5/0.75) + log(0.5/0.25)) = 0.143841
    two = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    assert Rt.load_balance_kl_uniform(two).item() == pytest.approx(0.1438410362, rel=1e-6)
    assert Rt.load_balance_kl_uniform(torch.full((3, 4), 0.25)).item() == pytest.approx(0.0, abs=1e-7)
    z = (torch.randn(8, 4) * 30).requires_grad_()
    Rt.load_balance_kl_uniform(Rt.softmax_weights(z)).backward()
    assert torch.isfinite(z.grad).all()


def test_load_balance_cv_vs_scipy():
    p = np_softmax(np.random.default_rng(3).normal(size=(16, 5)), 1)
    imp = p.sum(0)
    cv = stats.variation(imp)
    assert Rt.load_balance_cv(torch.tensor(p).float(), squared=False).item() == pytest.approx(cv, rel=1e-4)
    assert Rt.load_balance_cv(torch.tensor(p).float()).item() == pytest.approx(cv**2, rel=1e-4)
    assert Rt.load_balance_cv(torch.full((4, 3), 1 / 3)).item() == pytest.approx(0.0, abs=1e-6)
    assert Rt.load_balance_cv(torch.ones(4, 1)).item() == 0.0  # K = 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_balance_losses_gradients_finite(dtype):
    z = (torch.randn(8, 4) * 30).to(dtype).requires_grad_()
    p = Rt.softmax_weights(z)
    loss = Rt.load_balance_kl(p) + Rt.load_balance_cv(p) + Rt.load_balance_cv(p, squared=False)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad.float()).all()
    onehot = torch.zeros(3, 4, requires_grad=True)
    (Rt.load_balance_kl(onehot) + Rt.load_balance_cv(onehot, squared=False)).backward()
    assert torch.isfinite(onehot.grad).all()


def test_routing_stats():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    s = Rt.routing_stats(p, ["mm", "cross", "spec"])
    assert s["usage"] == pytest.approx({"mm": 0.5, "cross": 0.25, "spec": 0.25})
    assert s["mean_weight"]["mm"] == pytest.approx(0.4)
    assert s["entropy"] == pytest.approx(float(stats.entropy(p.numpy(), axis=1).mean()), rel=1e-5)
    assert s["n"] == 4
    with pytest.raises(ConfigError):
        Rt.routing_stats(p, ["a"])


def test_router_vector_and_dense():
    torch.manual_seed(0)
    r = Rt.Router(num_teachers=3, in_features=8, hidden=16, temperature=2.0)
    out = r(torch.randn(5, 8))
    assert out.logits.shape == (5, 3) and out.indices is None
    torch.testing.assert_close(out.weights, (out.logits / 2.0).softmax(-1))
    rd = Rt.Router(num_teachers=4, in_channels=3, hidden=8, top_k=1, hard=True)
    o = rd(torch.randn(2, 3, 16, 16))
    assert o.weights.shape == (2, 4) and o.indices.shape == (2, 1)
    torch.testing.assert_close(o.weights.detach().sum(-1), torch.ones(2))
    assert set(o.weights.detach().unique().tolist()) <= {0.0, 1.0}
    o.weights[:, 0].sum().backward()  # straight-through: the gate gets gradient
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in rd.parameters())
    rs = Rt.Router(num_teachers=4, in_features=6, top_k=2)
    ws = rs(torch.randn(3, 6)).weights
    assert ((ws > 0).sum(-1) == 2).all()
    with pytest.raises(ConfigError):
        Rt.Router(3)
    with pytest.raises(ConfigError):
        Rt.Router(3, in_features=4, top_k=4)
    with pytest.raises(ValueError):
        r(torch.randn(2, 3, 4, 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_router_cuda_bf16_autocast():
    r = Rt.Router(4, in_channels=3, top_k=2, hard=True).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        o = r(torch.randn(4, 3, 16, 16, device="cuda"))
    (o.weights.float().sum() + Rt.load_balance_kl(Rt.softmax_weights(o.logits))).backward()
    assert all(torch.isfinite(p.grad).all() for p in r.parameters())
    torch.testing.assert_close(o.weights.detach().float().sum(-1).cpu(), torch.ones(4))
