"""Ranking combiners of the consensus layer on (B, K, N) with a valid mask: golden values vs numpy by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from multiteacher.consensus import fuse_scores, normalize_scores, ranks
from multiteacher.data.ir import fuse_runs, runs_to_tensor, tensor_to_run
from multiteacher.errors import ConfigError

# one query, three teachers, four candidates; teacher 1 did not retrieve candidate 3, teacher 2 has ties
X = torch.tensor([[[4.0, 1.0, 3.0, 2.0], [0.5, 0.9, 0.1, float("nan")], [7.0, 7.0, 1.0, 7.0]]], dtype=torch.float64)
V = ~torch.isnan(X)


def _np_z(a: np.ndarray) -> np.ndarray:
    return (a - a.mean()) / a.std()  # numpy's std is the population std (ddof=0)


def _np_minmax(a: np.ndarray) -> np.ndarray:
    return (a - a.min()) / (a.max() - a.min())


def _np_ranks(a: np.ndarray) -> np.ndarray:
    order = np.lexsort((np.arange(len(a)), -a))  # descending score, ties by position
    r = np.empty(len(a), dtype=np.int64)
    r[order] = np.arange(1, len(a) + 1)
    return r


def test_normalize_scores_golden_with_missing() -> None:
    z = normalize_scores(X, V, "zscore")
    np.testing.assert_allclose(z[0, 0].numpy(), _np_z(np.array([4.0, 1.0, 3.0, 2.0])))
    np.testing.assert_allclose(z[0, 1, :3].numpy(), _np_z(np.array([0.5, 0.9, 0.1])))
    assert z[0, 1, 3].item() == 0.0  # missing: 0, not NaN
    mm = normalize_scores(X, V, "minmax")
    np.testing.assert_allclose(mm[0, 1, :3].numpy(), [0.5, 1.0, 0.0])
    np.testing.assert_allclose(mm[0, 2].numpy(), _np_minmax(np.array([7.0, 7.0, 1.0, 7.0])))
    const = torch.tensor([[2.0, 2.0, 2.0]])
    assert normalize_scores(const, method="zscore").tolist() == [[0.0, 0.0, 0.0]]
    assert normalize_scores(const, method="minmax").tolist() == [[0.0, 0.0, 0.0]]
    with pytest.raises(ConfigError, match="unknown normalisation"):
        normalize_scores(const, method="softmax")


def test_ranks_golden_ties_and_missing() -> None:
    r = ranks(X, V)
    assert r[0, 0].tolist() == _np_ranks(np.array([4.0, 1.0, 3.0, 2.0])).tolist() == [1, 4, 2, 3]
    assert r[0, 1].tolist() == [2, 1, 3, 0]  # the missing candidate gets no rank
    assert r[0, 2].tolist() == _np_ranks(np.array([7.0, 7.0, 1.0, 7.0])).tolist() == [1, 2, 4, 3]  # ties by position
    # a valid -inf score still ranks before invalid entries
    assert ranks(torch.tensor([[float("-inf"), 0.0, 5.0]]), torch.tensor([[True, False, True]])).tolist() == [[2, 0, 1]]


def test_fuse_scores_golden_with_missing_and_ties() -> None:
    w = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    fused, valid = fuse_scores(X, V, "zscore", w)
    z = [_np_z(np.array([4.0, 1.0, 3.0, 2.0])), _np_z(np.array([0.5, 0.9, 0.1])), _np_z(np.array([7.0, 7.0, 1.0, 7.0]))]
    expect = [(1 * z[0][n] + 2 * z[1][n] + 0.5 * z[2][n]) / 3.5 for n in range(3)]
    expect.append((1 * z[0][3] + 0.5 * z[2][3]) / 1.5)  # teacher 1 is missing: the others' weights renormalise
    np.testing.assert_allclose(fused[0].numpy(), expect)
    assert valid.tolist() == [[True, True, True, True]]
    rrf, _ = fuse_scores(X, V, "rrf", w, rrf_k=10.0)
    r = [[1, 4, 2, 3], [2, 1, 3, None], [1, 2, 4, 3]]
    wl = [1.0, 2.0, 0.5]
    expect = [sum(wl[k] / (10.0 + r[k][n]) for k in range(3) if r[k][n] is not None) for n in range(4)]
    np.testing.assert_allclose(rrf[0].numpy(), expect)


def test_fuse_scores_zero_weight_and_nothing_valid() -> None:
    x = torch.tensor([[[1.0, 2.0], [3.0, 1.0]]])
    v = torch.tensor([[[True, True], [True, False]]])
    fused, valid = fuse_scores(x, v, "minmax", torch.tensor([0.0, 1.0]))
    assert valid.tolist() == [[True, False]]  # only a zero-weight teacher scored candidate 1
    assert fused.tolist() == [[0.0, 0.0]]  # candidate 0 is teacher 1's only entry: minmax of a constant list
    with pytest.raises(ValueError, match=r"\(B, K, N\)"):
        fuse_scores(x[0])
    with pytest.raises(ConfigError, match="unknown fusion"):
        fuse_scores(x, method="median")


def test_runs_to_tensor_roundtrip_and_fuse_runs() -> None:
    runs = {"a": {"q1": {"d2": 1.0, "d1": 3.0}}, "b": {"q1": {"d1": 0.5}, "q2": {"x": 2.0}}}
    t = runs_to_tensor(runs)
    assert t.qids == ["q1", "q2"] and t.docids == [["d1", "d2"], ["x"]] and t.teachers == ["a", "b"]
    assert t.scores.shape == (2, 2, 2)
    assert t.valid.tolist() == [[[True, True], [True, False]], [[False, False], [True, False]]]
    assert tensor_to_run(t.scores[:, 0], t.valid[:, 0], t.qids, t.docids) == runs["a"]
    assert tensor_to_run(t.scores[:, 1], t.valid[:, 1], t.qids, t.docids) == runs["b"]
    cands = runs_to_tensor(runs, candidates={"q1": ["d1", "d2", "d3"]})
    assert cands.qids == ["q1"] and cands.docids == [["d1", "d2", "d3"]] and not cands.valid[0, :, 2].any()
    fused = fuse_runs(runs, "rrf", rrf_k=0.0)
    assert fused == {"q1": {"d1": 1 / 1 + 1 / 1, "d2": 1 / 2}, "q2": {"x": 1.0}}
    with pytest.raises(ValueError, match="1 weights for 2 teachers"):
        fuse_runs(runs, weights=[1.0])
