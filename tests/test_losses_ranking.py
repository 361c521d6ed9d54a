"""Ranking losses vs sentence-transformers' cross-encoder losses on the same scores, and numpy formulas.

The sentence-transformers losses call a CrossEncoder on (query, doc) text pairs; ``_FakeCE`` stands in
for the model: each "document" string is an index into a fixed score vector, so both implementations
see exactly the same student scores.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sentence_transformers.cross_encoder import CrossEncoder
from sentence_transformers.cross_encoder import losses as st_losses
from torch import nn

from multiteacher.errors import ConfigError
from multiteacher.losses import ranking as R

TOL = dict(rtol=1e-5, atol=1e-6)


class _FakeCE(CrossEncoder):
    """Minimal CrossEncoder stand-in (no weights): score of pair (q, "i") is flat_scores[i]."""

    def __init__(self, flat_scores: torch.Tensor) -> None:
        nn.Module.__init__(self)
        self.flat = flat_scores

    @property
    def num_labels(self) -> int:
        return 1

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def preprocess(self, pairs, prompt=None, task=None):
        return {"idx": torch.tensor([int(d) for _, d in pairs])}

    def forward(self, features):
        return {"scores": self.flat[features["idx"]].unsqueeze(-1)}


def _listwise_inputs(lengths: list[int], seed: int = 0):
    """Padded (B, L) student/teacher/mask plus the sentence-transformers (inputs, labels, model)."""
    g = torch.Generator().manual_seed(seed)
    B, L = len(lengths), max(lengths)
    s = torch.randn(B, L, generator=g, dtype=torch.float64).float()
    t = torch.randn(B, L, generator=g, dtype=torch.float64).float()
    mask = torch.zeros(B, L, dtype=torch.bool)
    for b, n in enumerate(lengths):
        mask[b, :n] = True
    flat = s[mask]
    docs, labels, k = [], [], 0
    for b, n in enumerate(lengths):
        docs.append([str(k + i) for i in range(n)])
        labels.append(t[b, :n].clone())
        k += n
    inputs = [[f"q{b}" for b in range(B)], docs]
    return s, t, mask, inputs, labels, _FakeCE(flat)


# ---------------------------------------------------------------- listwise vs sentence-transformers


@pytest.mark.parametrize("lengths", [[5, 5, 5], [6, 3, 1, 4]])
def test_listnet_matches_sentence_transformers(lengths):
    s, t, mask, inputs, labels, model = _listwise_inputs(lengths, 1)
    ref = st_losses.ListNetLoss(model)(inputs, labels)
    ours = R.listnet(s, t, mask)
    torch.testing.assert_close(ours, ref, **TOL)


@pytest.mark.parametrize("lengths", [[5, 5, 5], [6, 3, 1, 4]])
def test_distill_ranknet_matches_sentence_transformers(lengths):
    s, t, mask, inputs, labels, model = _listwise_inputs(lengths, 2)
    ref = st_losses.RankNetLoss(model, reduction_log="natural")(inputs, labels)
    ours = R.distill_ranknet(s, t, mask)
    torch.testing.assert_close(ours, ref, **TOL)


@pytest.mark.parametrize("lengths", [[5, 5, 5], [6, 3, 1, 4]])
@pytest.mark.parametrize("alpha", [1.0, 2.5])
def test_adr_mse_matches_sentence_transformers(lengths, alpha):
    s, t, mask, inputs, labels, model = _listwise_inputs(lengths, 3)
    ref = st_losses.ADRMSELoss(model, alpha=alpha)(inputs, labels)
    ours = R.adr_mse(s, t, mask, alpha=alpha)
    torch.testing.assert_close(ours, ref, **TOL)


def test_adr_mse_with_teacher_ties_matches_sentence_transformers():
    s, t, mask, inputs, labels, model = _listwise_inputs([5, 4], 4)
    t = torch.tensor([[3.0, 1.0, 1.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0, 0.0]])
    labels = [t[0, :5].clone(), t[1, :4].clone()]
    ref = st_losses.ADRMSELoss(model)(inputs, labels)
    torch.testing.assert_close(R.adr_mse(s, t, mask), ref, **TOL)


def test_margin_mse_matches_sentence_transformers():
    g = torch.Generator().manual_seed(5)
    B, n = 4, 3
    s = torch.randn(B, 1 + n, generator=g)
    t = torch.randn(B, 1 + n, generator=g) * 3
    # ST MarginMSE: inputs = [queries, positives, neg_1, ..., neg_n] (column-wise)
    flat = s.T.reshape(-1)  # column-major so column c, row b -> index c*B + b
    cols = [[str(c * B + b) for b in range(B)] for c in range(1 + n)]
    ref = st_losses.MarginMSELoss(_FakeCE(flat))([[f"q{b}" for b in range(B)], *cols], t)
    torch.testing.assert_close(R.margin_mse(s, t), ref, **TOL)


def test_info_nce_matches_sentence_transformers_mnrl():
    """MNRL's loss step (hard negatives only, no in-batch sampling): CE of column 0."""
    g = torch.Generator().manual_seed(6)
    B, n = 4, 3
    s = torch.randn(B, 1 + n, generator=g)
    st = st_losses.MultipleNegativesRankingLoss(
        _FakeCE(s.reshape(-1)), num_negatives=None, scale=1.0, activation_fn=nn.Identity()
    )
    ref = st.calculate_loss([s[:, c] for c in range(1 + n)], B)
    torch.testing.assert_close(R.info_nce(s), ref, **TOL)
    ref_scaled = st_losses.MultipleNegativesRankingLoss(
        _FakeCE(s.reshape(-1)), num_negatives=None, scale=20.0, activation_fn=nn.Identity()
    ).calculate_loss([s[:, c] for c in range(1 + n)], B)
    torch.testing.assert_close(R.info_nce(s, temperature=1 / 20.0), ref_scaled, **TOL)


def test_bce_and_mse_match_sentence_transformers():
    g = torch.Generator().manual_seed(7)
    s = torch.randn(10, generator=g)
    y = (torch.rand(10, generator=g) > 0.5).float()
    t = torch.randn(10, generator=g)
    inputs = [["q"] * 10, [str(i) for i in range(10)]]
    ref_bce = st_losses.BinaryCrossEntropyLoss(_FakeCE(s))(inputs, y)
    ref_mse = st_losses.MSELoss(_FakeCE(s))(inputs, t)
    torch.testing.assert_close(R.pointwise_bce(s, y), ref_bce, **TOL)
    torch.testing.assert_close(R.pointwise_mse(s, t), ref_mse, **TOL)


# ---------------------------------------------------------------- numpy / hand-computed formulas


def _np_softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_hinge_hand_computed():
    s = torch.tensor([[2.0, 0.5, 1.8, 3.0]])
    # margins s+ - s-: 1.5, 0.2, -1.0 -> hinge max(0, 1 - m): 0, 0.8, 2.0 -> mean 0.9333
    assert R.hinge(s).item() == pytest.approx((0 + 0.8 + 2.0) / 3, rel=1e-6)
    mask = torch.tensor([[True, True, False, True]])
    assert R.hinge(s, mask).item() == pytest.approx((0 + 2.0) / 2, rel=1e-6)
    assert R.hinge(s, margin=0.0).item() == pytest.approx(1.0 / 3, rel=1e-6)


def test_listwise_masked_numpy_reference():
    """Padding must not change the loss: compare with numpy on the unpadded lists."""
    rng = np.random.default_rng(8)
    lengths = [4, 2, 6]
    L = max(lengths)
    s = rng.normal(size=(3, L))
    t = rng.normal(size=(3, L))
    mask = np.arange(L)[None] < np.array(lengths)[:, None]
    s_pad = np.where(mask, s, 99.0)  # garbage in padded slots
    t_pad = np.where(mask, t, -77.0)
    ln, rn, nce, mm, pairs = [], [], [], [], 0
    for b, n in enumerate(lengths):
        sb, tb = s[b, :n], t[b, :n]
        ln.append(-(_np_softmax(tb) * np.log(_np_softmax(sb))).sum())
        nce.append(-np.log(_np_softmax(sb)[0]))
        mm.extend(((sb[0] - sb[1:]) - (tb[0] - tb[1:])) ** 2)
        for i in range(n):
            for j in range(n):
                if tb[i] > tb[j]:
                    rn.append(math.log1p(math.exp(-(sb[i] - sb[j]))))
                    pairs += 1
    S, T, M = (torch.tensor(a, dtype=torch.float32) for a in (s_pad, t_pad, mask))
    M = M.bool()
    assert R.listnet(S, T, M).item() == pytest.approx(np.mean(ln), rel=1e-5)
    assert R.info_nce(S, M).item() == pytest.approx(np.mean(nce), rel=1e-5)
    assert R.margin_mse(S, T, M).item() == pytest.approx(np.mean(mm), rel=1e-5)
    assert R.distill_ranknet(S, T, M).item() == pytest.approx(np.mean(rn), rel=1e-5)


def test_adr_mse_hand_computed():
    # teacher ranks: [1, 3, 2]; student scores [0, 0, 0] -> approx ranks all 1 + 2 * 0.5 = 2
    s = torch.zeros(1, 3)
    t = torch.tensor([[3.0, 1.0, 2.0]])
    expect = ((1 - 2) ** 2 / math.log2(2) + (3 - 2) ** 2 / math.log2(4) + 0) / 3
    assert R.adr_mse(s, t).item() == pytest.approx(expect, rel=1e-6)


def test_ranks_from_scores_matches_scipy_rankdata():
    from scipy.stats import rankdata

    t = torch.tensor([[3.0, 1.0, 1.0, 5.0, 3.0, 0.0]])
    ours = R.ranks_from_scores(t)[0].numpy()
    np.testing.assert_allclose(ours, rankdata(-t[0].numpy(), method="average"))


def test_info_nce_temperature():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    p = _np_softmax(np.array([1.0, 0.0, -1.0]) / 0.5)
    assert R.info_nce(s, temperature=0.5).item() == pytest.approx(-math.log(p[0]), rel=1e-6)


# ---------------------------------------------------------------- edge cases, gradients, modules

ALL = {
    "bce": lambda s, t, m: R.pointwise_bce(s, (t > 0).float(), m),
    "mse": R.pointwise_mse,
    "hinge": lambda s, t, m: R.hinge(s, m),
    "margin_mse": R.margin_mse,
    "info_nce": lambda s, t, m: R.info_nce(s, m),
    "distill_ranknet": R.distill_ranknet,
    "adr_mse": R.adr_mse,
    "listnet": R.listnet,
}


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradients_finite(name, dtype):
    g = torch.Generator().manual_seed(9)
    s = (torch.randn(3, 6, generator=g) * 5).to(dtype).requires_grad_()
    t = torch.randn(3, 6, generator=g).to(dtype)
    m = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    loss = ALL[name](s, t, m)
    loss.backward()
    assert torch.isfinite(loss).item()
    assert s.grad is not None and torch.isfinite(s.grad.float()).all()
    assert (s.grad[~m] == 0).all(), "padded items must get no gradient"


@pytest.mark.parametrize("name", list(ALL))
def test_all_masked_gives_zero_with_grad(name):
    s = torch.randn(2, 4, requires_grad=True)
    loss = ALL[name](s, torch.randn(2, 4), torch.zeros(2, 4, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("name", list(ALL))
def test_extreme_scores_finite(name):
    s = torch.tensor([[1e4, -1e4, 0.0, 3e3]], requires_grad=True)
    t = torch.tensor([[-5.0, 5.0, 0.0, 1.0]])
    loss = ALL[name](s, t, None)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_ties_and_single_item():
    s = torch.randn(1, 4)
    tied = torch.ones(1, 4)
    assert R.distill_ranknet(s, tied).item() == 0.0  # teacher ties: no pairs
    assert R.adr_mse(torch.zeros(1, 4), tied).item() == pytest.approx(0.0, abs=1e-7)  # attainable
    one = torch.tensor([[True, False, False, False]])
    assert R.listnet(s, torch.randn(1, 4), one).item() == pytest.approx(0.0, abs=1e-6)
    assert R.info_nce(s, one).item() == pytest.approx(0.0, abs=1e-6)
    assert R.margin_mse(s, torch.randn(1, 4), one).item() == 0.0


def test_modules_and_factory():
    s, t = torch.randn(2, 5), torch.randn(2, 5)
    m = torch.ones(2, 5, dtype=torch.bool)
    from multiteacher.losses.registry import RANKING_LOSSES, resolve_loss_name

    assert set(RANKING_LOSSES) == {resolve_loss_name(n) for n in ALL}  # every ranking loss is registered
    for name in ALL:  # the short names (bce, mse) resolve to the canonical pointwise_bce / pointwise_mse
        mod = R.make_ranking_loss(name)
        assert isinstance(mod, RANKING_LOSSES[resolve_loss_name(name)])
        tgt = (t > 0).float() if name == "bce" else t
        ref = ALL[name](s, t, m)
        torch.testing.assert_close(mod(s, tgt, m), ref)
    assert R.make_ranking_loss("listnet", temperature=2.0).temperature == 2.0
    with pytest.raises(ConfigError, match="unknown loss 'lambdarank'"):
        R.make_ranking_loss("lambdarank")
    with pytest.raises(ConfigError):
        R.make_ranking_loss("listnet", bogus=1)
    with pytest.raises(ValueError):
        R.MarginMSELoss()(s)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(ALL))
def test_cuda_matches_cpu(name):
    g = torch.Generator().manual_seed(10)
    s, t = torch.randn(3, 6, generator=g) * 3, torch.randn(3, 6, generator=g)
    m = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    a = s.clone().requires_grad_()
    ref = ALL[name](a, t, m)
    ref.backward()
    b = s.cuda().requires_grad_()
    got = ALL[name](b, t.cuda(), m.cuda())
    got.backward()
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-3, atol=1e-5)
