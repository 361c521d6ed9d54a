"""Metrics vs references: numpy loops (dense), scikit-learn (classification), ir-measures and
hand-computed trec_eval formulas (IR)."""

from __future__ import annotations

import math

import ir_measures
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from multiteacher.errors import ConfigError, DataError
from multiteacher.metrics import classify, dense, ir

# ------------------------------------------------------------------------------------------ dense


def test_depth_metrics_numpy():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 5, size=(2, 1, 8, 8))
    pred = gt * rng.uniform(0.7, 1.4, size=gt.shape)
    gt[0, 0, 0, :4] = 0.0  # invalid (no depth)
    mask = np.ones_like(gt, bool)
    mask[1, 0, :2] = False
    v = (gt > 1e-3) & mask
    p, g = pred[v], gt[v]
    ref = {
        "abs_rel": np.mean(np.abs(p - g) / g),
        "rmse": np.sqrt(np.mean((p - g) ** 2)),
        "delta1": np.mean(np.maximum(p / g, g / p) < 1.25),
    }
    ours = dense.depth_metrics(torch.tensor(pred).float(), torch.tensor(gt).float(), torch.tensor(mask))
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], rel=1e-5), k
    empty = dense.depth_metrics(torch.ones(1, 4), torch.zeros(1, 4))
    assert all(math.isnan(x) for x in empty.values())


def test_normal_metrics_numpy():
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(2, 3, 6, 6))
    pred = gt + rng.normal(scale=0.3, size=gt.shape) * 2
    gt[1, :, 0, 0] = 0  # no normal -> invalid
    gn = gt / np.maximum(np.linalg.norm(gt, axis=1, keepdims=True), 1e-12)
    pn = pred / np.linalg.norm(pred, axis=1, keepdims=True)
    ang = np.degrees(np.arccos(np.clip((gn * pn).sum(1), -1, 1)))
    e = ang[np.linalg.norm(gt, axis=1) > 0]
    ours = dense.normal_metrics(torch.tensor(pred), torch.tensor(gt), thresholds=(11.25, 30.0))
    assert ours["mean_deg"] == pytest.approx(e.mean(), rel=1e-6)
    assert ours["median_deg"] == pytest.approx(np.median(e), rel=1e-6)
    assert ours["pct_11.25"] == pytest.approx(100 * np.mean(e < 11.25), rel=1e-6)
    assert ours["pct_30"] == pytest.approx(100 * np.mean(e < 30), rel=1e-6)
    # hand-computed: 90° and 0°
    a = torch.tensor([[[[1.0, 0.0]], [[0.0, 0.0]], [[0.0, 2.0]]]])  # (1, 3, 1, 2)
    b = torch.tensor([[[[0.0, 0.0]], [[1.0, 0.0]], [[0.0, 1.0]]]])
    assert dense.angular_error_deg(a, b).flatten().tolist() == pytest.approx([90.0, 0.0], abs=1e-4)


def _np_miou(pred, tgt, C, ignore):
    ious = []
    keep = tgt != ignore
    for c in range(C):
        tp = np.sum((pred == c) & (tgt == c) & keep)
        fp = np.sum((pred == c) & (tgt != c) & keep)
        fn = np.sum((pred != c) & (tgt == c) & keep)
        if tp + fp + fn > 0:
            ious.append(tp / (tp + fp + fn))
    return np.mean(ious), np.sum((pred == tgt) & keep) / keep.sum()


def test_semantic_metrics_numpy():
    rng = np.random.default_rng(2)
    C = 6
    tgt = rng.integers(0, C - 1, size=(3, 10, 10))  # class 5 never in the target
    pred = np.where(rng.random(tgt.shape) < 0.7, tgt, rng.integers(0, C - 2, size=tgt.shape))
    tgt[0, :3] = 255
    ref_miou, ref_acc = _np_miou(pred, tgt, C, 255)
    ours = dense.semantic_metrics(torch.tensor(pred), torch.tensor(tgt), C, 255)
    assert ours["miou"] == pytest.approx(ref_miou, rel=1e-9)
    assert ours["pixel_acc"] == pytest.approx(ref_acc, rel=1e-9)
    logits = torch.nn.functional.one_hot(torch.tensor(pred), C).permute(0, 3, 1, 2).float()
    assert dense.semantic_metrics(logits, torch.tensor(tgt), C, 255) == ours
    cm = dense.confusion_matrix(torch.tensor(pred), torch.tensor(tgt), C, 255).numpy()
    assert cm.sum() == (tgt != 255).sum() and cm[2, 3] == np.sum((tgt == 2) & (pred == 3))
    with pytest.raises(ValueError):
        dense.miou(torch.tensor([7]), torch.tensor([1]), C)
    assert math.isnan(dense.pixel_accuracy(torch.zeros(3), torch.full((3,), 255)))


# ---------------------------------------------------------------------------------- classification


def test_classification_vs_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 5, size=200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 6, size=200))  # class 5 only predicted
    assert classify.accuracy(p, y) == pytest.approx(accuracy_score(y, p))
    assert classify.weighted_f1(p, y) == pytest.approx(f1_score(y, p, average="weighted", zero_division=0))
    logits = torch.nn.functional.one_hot(torch.tensor(p), 6).float()
    assert classify.classification_metrics(logits, torch.tensor(y)) == pytest.approx(
        {"accuracy": accuracy_score(y, p), "weighted_f1": f1_score(y, p, average="weighted", zero_division=0)}
    )
    with pytest.raises(ValueError):
        classify.accuracy([1, 2], [1])


# ---------------------------------------------------------------------------------------------- ir

QRELS = {"q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 3}, "q2": {"d5": 1, "d6": 2}, "q3": {"d9": 2}}
RUN = {
    "q1": {"d1": 0.9, "d2": 2.0, "d3": 1.5, "d4": 0.1, "x": 0.5},
    "q2": {"d6": 3.0, "d5": 2.0, "y": 1.0},
    "q4": {"d1": 1.0},  # no qrels: ignored
}  # q3 missing from the run: scores 0


def test_ir_matches_ir_measures_and_hand_formulas():
    names = ["nDCG@10", "RR(rel=2)@10", "AP(rel=2)", "R(rel=2)@100", "AP", "R@100"]
    agg = ir.evaluate(RUN, QRELS, names)
    ref = ir_measures.calc_aggregate([ir_measures.parse_measure(n) for n in names], QRELS, RUN)
    for n in names:
        assert agg[n] == pytest.approx(ref[ir_measures.parse_measure(n)], rel=1e-12)
    pq = ir.per_query(RUN, QRELS, names)
    assert set(pq["nDCG@10"]) == {"q1", "q2", "q3"}
    for n in names:  # the aggregate is the mean of the per-query values
        assert np.mean(list(pq[n].values())) == pytest.approx(agg[n], rel=1e-12)
    # q1 ranking: d2(1), d3(0), d1(2), x, d4(3). trec_eval nDCG uses linear gains.
    dcg = 1 / math.log2(2) + 0 + 2 / math.log2(4) + 0 + 3 / math.log2(6)
    idcg = 3 / math.log2(2) + 2 / math.log2(3) + 1 / math.log2(4)
    assert pq["nDCG@10"]["q1"] == pytest.approx(dcg / idcg, rel=1e-9)
    assert pq["RR(rel=2)@10"]["q1"] == pytest.approx(1 / 3)  # first rel>=2 at rank 3
    assert pq["AP(rel=2)"]["q1"] == pytest.approx((1 / 3 + 2 / 5) / 2)
    assert pq["AP"]["q1"] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)
    assert pq["RR(rel=2)@10"]["q2"] == 1.0 and pq["nDCG@10"]["q3"] == 0.0
    assert ir.DEFAULT_MEASURES == ("nDCG@10", "RR(rel=2)@10", "AP(rel=2)", "R(rel=2)@100")
    assert set(ir.evaluate(RUN, QRELS)) == set(ir.DEFAULT_MEASURES)


def test_ir_input_errors():
    with pytest.raises(ConfigError, match="unknown IR measure"):
        ir.evaluate(RUN, QRELS, ["nDCG@x"])
    with pytest.raises(DataError):
        ir.evaluate([("q1", "d1", 1.0)], QRELS)
    with pytest.raises(DataError):
        ir.evaluate({"q1": {"d1": "high"}}, QRELS)
    with pytest.raises(DataError):
        ir.per_query(RUN, {"q1": ["d1"]})
    # int ids are accepted and stringified
    assert ir.evaluate({1: {2: 1.0}}, {1: {2: 2}}, ["nDCG@10"])["nDCG@10"] == 1.0
