"""fit_router: a learned per-query router beats every fixed teacher when the right teacher depends on a feature."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multiteacher.consensus import fuse_scores
from multiteacher.routing import Router, fit_router


def _problem(n: int, seed: int):
    """Teacher 0 ranks perfectly when f0 > 0 (else reversed), teacher 1 the opposite, teacher 2 is random."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, 3, generator=g)
    N = 8
    truth = torch.arange(N, dtype=torch.float64).flip(0).expand(n, N)  # doc 0 is the relevant one
    pos = (f[:, 0] > 0).unsqueeze(1)
    t0 = torch.where(pos, truth, -truth)
    t1 = torch.where(pos, -truth, truth)
    t2 = torch.rand(n, N, generator=g, dtype=torch.float64)
    x = torch.stack([t0, t1, t2], 1)
    return f, x


def _top1_hit(scores: torch.Tensor) -> torch.Tensor:
    """Per query: 1 if doc 0 (the relevant one) is ranked first — this problem's quality."""
    return (scores.argmax(-1) == 0).double()


def test_router_beats_every_fixed_teacher_on_held_out_queries() -> None:
    f_tr, x_tr = _problem(200, 0)
    f_te, x_te = _problem(200, 1)
    targets = torch.stack([_top1_hit(x_tr[:, k]) for k in range(3)], 1)
    router = fit_router(f_tr, targets, steps=300, seed=0)
    assert isinstance(router, Router)
    w = router(f_te).weights.detach().double()
    fused, _ = fuse_scores(x_te, method="zscore", weights=w)
    routed = _top1_hit(fused).mean().item()
    # hand reference: teachers 0 / 1 are right on the queries with f0 > 0 / f0 <= 0 only; teacher 2 at random
    share = (f_te[:, 0] > 0).double().mean().item()
    fixed = [_top1_hit(x_te[:, k]).mean().item() for k in range(3)]
    assert fixed[0] == pytest.approx(share) and fixed[1] == pytest.approx(1 - share)
    assert routed > max(fixed) + 0.3, (routed, fixed)
    assert routed >= 0.95


def test_router_uniform_when_features_carry_no_signal() -> None:
    g = torch.Generator().manual_seed(0)
    f = torch.randn(100, 2, generator=g)
    targets = torch.tensor([[1.0, 0.0]] * 50 + [[0.0, 1.0]] * 50)[torch.randperm(100, generator=g)]
    router = fit_router(f, targets, balance=1.0, steps=200)
    mean_w = router(f).weights.mean(0).detach().numpy()
    np.testing.assert_allclose(mean_w, [0.5, 0.5], atol=0.1)
