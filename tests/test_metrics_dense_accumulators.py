"""Dense-metric accumulators: chunk-by-chunk `update` + `compute` equals the whole-array result
(random data cut into uneven chunks), equals independent numpy references, and hand-computed golden
values; `merge` of two halves equals one pass."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from multiteacher.metrics import dense

CUTS = [0, 1, 4, 5, 11, 17]  # uneven chunks of 17 frames (one of a single frame, one empty)


def _chunks(*arrays: torch.Tensor):
    for a, b in itertools.pairwise(CUTS):
        yield tuple(x[a:b] for x in arrays)


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0.2, 6.0, (17, 9, 7))
    pred = gt * rng.uniform(0.6, 1.5, gt.shape)
    pred[0, 0, :3] = -0.5  # non-positive predictions: valid, fail δ
    gt[2, :2] = 0.0  # no depth
    gt[3, 1, 1] = np.nan
    mask = rng.random(gt.shape) > 0.2
    return torch.tensor(pred), torch.tensor(gt), torch.tensor(mask)


def test_depth_chunks_equal_whole_array_and_numpy() -> None:
    pred, gt, mask = _data()
    acc = dense.DepthMetrics()
    for p, g, m in _chunks(pred, gt, mask):
        acc.update(p, g, m)
    got = acc.compute()
    whole = dense.DepthMetrics().update(pred, gt, mask).compute()
    assert got == pytest.approx(whole, rel=1e-12)
    P, G, M = pred.numpy(), gt.numpy(), mask.numpy()
    v = np.isfinite(G) & (G > 1e-3) & M
    p, g = P[v], G[v]
    ref = {"abs_rel": np.mean(np.abs(p - g) / g), "rmse": np.sqrt(np.mean((p - g) ** 2)),
           "delta1": np.mean((p > 0) & (np.maximum(p / g, g / np.where(p > 0, p, 1)) < 1.25)),
           "mae": np.mean(np.abs(p - g))}
    assert got == pytest.approx(ref, rel=1e-12)
    assert dense.depth_metrics(pred, gt, mask) == pytest.approx({k: ref[k] for k in ("abs_rel", "rmse", "delta1")})
    assert dense.abs_rel(pred, gt, mask) == pytest.approx(ref["abs_rel"], rel=1e-12)
    assert dense.rmse(pred, gt, mask) == pytest.approx(ref["rmse"], rel=1e-12)


def test_depth_golden() -> None:
    # pixels (pred, gt): (1, 2), (3, 2), (4, 4), (9, 0 -> invalid)
    m = dense.DepthMetrics().update(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]))
    m.update(torch.tensor([4.0, 9.0]), torch.tensor([4.0, 0.0]))
    got = m.compute()
    assert got["abs_rel"] == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert got["rmse"] == pytest.approx(math.sqrt((1 + 1 + 0) / 3))
    assert got["mae"] == pytest.approx(2 / 3)
    assert got["delta1"] == pytest.approx(1 / 3)  # 2/1 and 3/2 fail, 4/4 passes
    assert all(math.isnan(v) for v in dense.DepthMetrics().compute().values())


def test_normals_chunks_equal_whole_array_with_median() -> None:
    rng = np.random.default_rng(1)
    gt = torch.tensor(rng.normal(size=(17, 3, 5, 4)))
    pred = gt + torch.tensor(rng.normal(scale=0.6, size=gt.shape))
    gt[4, :, 0, 0] = 0.0  # no normal: invalid
    mask = torch.tensor(rng.random((17, 5, 4)) > 0.3)
    acc = dense.NormalMetrics(thresholds=(11.25, 30.0), median=True)
    for p, g, m in _chunks(pred, gt, mask):
        acc.update(p, g, m)
    whole = dense.normal_metrics(pred, gt, mask, thresholds=(11.25, 30.0))
    got = acc.compute()
    assert got.keys() == whole.keys()
    assert got == pytest.approx(whole, rel=1e-12)
    assert got["median_deg"] == whole["median_deg"]  # the same angles, sorted
    e = dense.angular_error_deg(pred, gt)[(gt.norm(dim=1) > 0) & mask].numpy()
    assert got["mean_deg"] == pytest.approx(e.mean(), rel=1e-12)
    assert got["median_deg"] == pytest.approx(np.median(e), rel=1e-12)
    assert got["pct_30"] == pytest.approx(100 * np.mean(e < 30), rel=1e-12)


def test_normals_golden() -> None:
    up = torch.tensor([0.0, 0.0, 1.0])
    gt = up.repeat(3, 1)[None].permute(0, 2, 1)[..., None]  # (1, 3, 3, 1): three pixels, all up
    pred = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])[None].permute(0, 2, 1)[..., None]
    got = dense.NormalMetrics(thresholds=(11.25, 50.0), median=True).update(pred, gt).compute()
    assert got["mean_deg"] == pytest.approx((0 + 90 + 45) / 3)
    assert got["median_deg"] == pytest.approx(45.0)
    assert got["pct_11.25"] == pytest.approx(100 / 3) and got["pct_50"] == pytest.approx(200 / 3)


def test_semantic_chunks_equal_whole_array_exactly_and_merge() -> None:
    rng = np.random.default_rng(2)
    C = 5
    tgt = torch.tensor(rng.integers(0, C, (17, 6, 6)))
    logits = torch.tensor(rng.normal(size=(17, C, 6, 6)))
    tgt[0, :2] = 255
    mask = torch.tensor(rng.random((17, 6, 6)) > 0.25)
    acc = dense.SemanticMetrics(C)
    for p, g, m in _chunks(logits, tgt, mask):
        acc.update(p, g, m)
    masked = torch.where(mask, tgt, torch.full_like(tgt, 255))
    assert acc.compute() == dense.semantic_metrics(logits, masked, C)  # integer statistics: exact
    a, b = dense.SemanticMetrics(C), dense.SemanticMetrics(C)
    a.update(logits[:9], tgt[:9], mask[:9])
    b.update(logits[9:], tgt[9:], mask[9:])
    assert a.merge(b).compute() == acc.compute()
    with pytest.raises(TypeError):
        a.merge(dense.DepthMetrics())


def test_semantic_golden() -> None:
    # cm[true, pred]: (0,0) x2, (0,1) x1, (1,1) x1, (2,0) x1; one ignored pixel
    pred = torch.tensor([0, 0, 1, 1, 0, 2])
    tgt = torch.tensor([0, 0, 0, 1, 2, 255])
    got = dense.SemanticMetrics(3).update(pred, tgt).compute()
    # IoU: class 0: 2 / (3 + 3 - 2) = 0.5; class 1: 1 / (2 + 1 - 1) = 0.5; class 2: 0 / (0 + 1 - 0) = 0
    assert got == {"miou": pytest.approx(1 / 3), "pixel_acc": pytest.approx(3 / 5)}
    m = dense.SemanticMetrics(3)
    m.update(pred, tgt)
    m.reset()
    assert math.isnan(m.compute()["miou"])
