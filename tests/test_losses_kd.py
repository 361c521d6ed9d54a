"""KD losses vs numpy re-implementations of the published formulas (Hinton 2015, FitNets, DKD 2022).

torchdistill cannot be installed here (it needs torchvision), so the references are written from
the papers / the official DKD code in float64 numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax as np_log_softmax
from scipy.special import softmax as np_softmax

from multiteacher.errors import ConfigError
from multiteacher.losses import kd as K

TOL = dict(rtol=1e-5, atol=1e-6)


def _np_kd(s, t, T, axis=1):
    """Σ_c p_t (log p_t - log p_s) · T² per position (float64)."""
    lpt = np_log_softmax(t / T, axis=axis)
    lps = np_log_softmax(s / T, axis=axis)
    return (np.exp(lpt) * (lpt - lps)).sum(axis) * T**2


def _rand(*shape, seed=0, scale=3.0):
    return np.random.default_rng(seed).normal(size=shape) * scale


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kd_kl_vectors_numpy(T):
    s, t = _rand(8, 10, seed=1), _rand(8, 10, seed=2)
    ours = K.kd_kl(torch.tensor(s).float(), torch.tensor(t).float(), T)
    assert ours.item() == pytest.approx(_np_kd(s, t, T).mean(), rel=1e-5)  # batchmean
    per = K.kd_kl(torch.tensor(s).float(), torch.tensor(t).float(), T, reduction="none")
    np.testing.assert_allclose(per.numpy(), _np_kd(s, t, T), rtol=1e-4, atol=1e-6)


def test_kd_kl_equals_pytorch_batchmean_recipe():
    """The torchdistill / Hinton recipe: KLDivLoss(batchmean)(log_softmax(s/T), softmax(t/T)) · T²."""
    s, t = torch.randn(6, 5), torch.randn(6, 5)
    T = 3.0
    ref = torch.nn.KLDivLoss(reduction="batchmean")((s / T).log_softmax(1), (t / T).softmax(1)) * T**2
    torch.testing.assert_close(K.kd_kl(s, t, T), ref, **TOL)


def test_kd_kl_dense_per_pixel_with_ignore_index():
    s, t = _rand(2, 4, 3, 5, seed=3), _rand(2, 4, 3, 5, seed=4)
    target = np.random.default_rng(5).integers(0, 4, size=(2, 3, 5))
    target[0, 0, :3] = 255
    T = 2.0
    per = _np_kd(s, t, T)  # (B, H, W)
    valid = target != 255
    S, Tt = torch.tensor(s).float(), torch.tensor(t).float()
    # without ignore: normalised by B·H·W
    assert K.kd_kl(S, Tt, T).item() == pytest.approx(per.sum() / per.size, rel=1e-5)
    ours = K.kd_kl(S, Tt, T, target=torch.tensor(target), ignore_index=255)
    assert ours.item() == pytest.approx(per[valid].sum() / valid.sum(), rel=1e-5)
    # an explicit mask does the same
    ours_m = K.kd_kl(S, Tt, T, mask=torch.tensor(valid))
    assert ours_m.item() == pytest.approx(ours.item(), rel=1e-6)


@pytest.mark.parametrize("per_sample", [False, True])
def test_multi_teacher_mixture_numpy(per_sample):
    B, Kt, C, T = 5, 3, 7, 2.0
    s, t = _rand(B, C, seed=6), _rand(B, Kt, C, seed=7)
    w = np.abs(_rand(B, Kt, seed=8)) if per_sample else np.array([0.5, 0.3, 0.2])
    wn = w / w.sum(-1, keepdims=True)
    wn = np.broadcast_to(wn, (B, Kt))
    pmix = (wn[:, :, None] * np_softmax(t / T, axis=2)).sum(1)
    ref = ((pmix * (np.log(pmix) - np_log_softmax(s / T, axis=1))).sum(1) * T**2).mean()
    ours = K.multi_teacher_kd(torch.tensor(s).float(), torch.tensor(t).float(), T, weights=torch.tensor(w))
    assert ours.item() == pytest.approx(ref, rel=1e-5)


def test_multi_teacher_select_and_edge_cases():
    B, Kt, C = 4, 3, 5
    s, t = torch.randn(B, C), torch.randn(B, Kt, C)
    sel = torch.tensor([2, 0, 1, 2])
    ref = np.mean([_np_kd(s[b : b + 1].numpy(), t[b, sel[b]][None].numpy(), 4.0)[0] for b in range(B)])
    assert K.multi_teacher_kd(s, t, select=sel).item() == pytest.approx(ref, rel=1e-5)
    # K = 1 and all-equal teachers reduce to single-teacher KD
    torch.testing.assert_close(K.multi_teacher_kd(s, t[:, :1]), K.kd_kl(s, t[:, 0]), **TOL)
    same = t[:, :1].expand(B, Kt, C)
    torch.testing.assert_close(K.multi_teacher_kd(s, same), K.kd_kl(s, t[:, 0]), **TOL)
    # a zero weight switches a teacher off
    w = torch.tensor([0.0, 1.0, 0.0])
    torch.testing.assert_close(K.multi_teacher_kd(s, t, weights=w), K.kd_kl(s, t[:, 1]), **TOL)
    with pytest.raises(ConfigError):
        K.multi_teacher_kd(s, t, weights=torch.tensor([-1.0, 1.0, 1.0]))


def test_multi_teacher_dense():
    s, t = torch.randn(2, 4, 3, 3), torch.randn(2, 3, 4, 3, 3)
    pmix = np_softmax(t.numpy() / 4.0, axis=2).mean(1)
    per = (pmix * (np.log(pmix) - np_log_softmax(s.numpy() / 4.0, axis=1))).sum(1) * 16
    assert K.multi_teacher_kd(s, t).item() == pytest.approx(per.mean(), rel=1e-5)


def _np_dkd_official(s, t, y, alpha, beta, T):
    """float64 transcription of the official DKD code (megvii-research/mdistiller, dkd.py)."""
    B, C = s.shape
    gt = np.zeros((B, C))
    gt[np.arange(B), y] = 1
    other = 1 - gt
    ps, pt = np_softmax(s / T, axis=1), np_softmax(t / T, axis=1)

    def cat_mask(p):
        return np.stack([(p * gt).sum(1), (p * other).sum(1)], 1)

    bs, bt = cat_mask(ps), cat_mask(pt)
    tckd = (bt * (np.log(bt) - np.log(bs))).sum() * T**2 / B
    pt2 = np_softmax(t / T - 1000.0 * gt, axis=1)
    lps2 = np_log_softmax(s / T - 1000.0 * gt, axis=1)
    nckd = (pt2 * (np.log(pt2 + 1e-300) - lps2) * other).sum() * T**2 / B
    return alpha * tckd + beta * nckd


@pytest.mark.parametrize(("alpha", "beta", "T"), [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0)])
def test_dkd_matches_official_formula(alpha, beta, T):
    s, t = _rand(6, 10, seed=9, scale=2), _rand(6, 10, seed=10, scale=2)
    y = np.random.default_rng(11).integers(0, 10, size=6)
    ours = K.dkd(torch.tensor(s).float(), torch.tensor(t).float(), torch.tensor(y), alpha, beta, T)
    assert ours.item() == pytest.approx(_np_dkd_official(s, t, y, alpha, beta, T), rel=1e-4)


def test_dkd_decomposition_identity():
    """Zhao et al. Eq. (3): KD = TCKD + (1 - p_t^T) · NCKD, per sample."""
    s, t = torch.randn(7, 6) * 2, torch.randn(7, 6) * 2
    y = torch.randint(0, 6, (7,))
    T = 2.0
    tckd, nckd = K.dkd(s, t, y, temperature=T, return_parts=True)
    pt = (t / T).softmax(1).gather(1, y[:, None]).squeeze(1)
    kd = K.kd_kl(s, t, T, reduction="none")
    torch.testing.assert_close(tckd + (1 - pt) * nckd, kd, rtol=1e-4, atol=1e-5)


def test_fitnet_numpy_and_module():
    fs, ft = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    assert K.fitnet(fs, ft).item() == pytest.approx(((fs.numpy() - ft.numpy()) ** 2).mean(), rel=1e-5)
    mask = torch.zeros(2, 3, 3, dtype=torch.bool)
    mask[0, 1:, :] = True
    d2 = ((fs.numpy() - ft.numpy()) ** 2)[0, :, 1:, :]
    assert K.fitnet(fs, ft, mask).item() == pytest.approx(d2.mean(), rel=1e-5)
    mod = K.FitNetLoss(8, 4, kind="conv")
    x = torch.randn(2, 8, 3, 3)
    with torch.no_grad():
        ref = ((mod.proj(x) - ft) ** 2).mean()
    torch.testing.assert_close(mod(x, ft), ref)
    mod(x, ft).backward()
    assert mod.proj.weight.grad is not None and torch.isfinite(mod.proj.weight.grad).all()
    lin = K.FitNetLoss(5, 3, kind="linear")
    assert lin(torch.randn(4, 5), torch.randn(4, 3)).ndim == 0
    assert isinstance(K.FitNetLoss(4, 4).proj, torch.nn.Identity)
    with pytest.raises(ConfigError):
        K.FitNetLoss(4, 5, projector=False)
    with pytest.raises(ValueError, match="projector"):
        K.fitnet(torch.randn(2, 3), torch.randn(2, 4))


LOSSES = {
    "kd": lambda s, t, y: K.kd_kl(s, t[:, 0], 4.0),
    "kd_dense_ignore": lambda s, t, y: K.kd_kl(
        s.reshape(2, 5, 2, 2), t[:, 0].reshape(2, 5, 2, 2), 2.0, target=y.reshape(2, 2, 2), ignore_index=255
    ),
    "multi": lambda s, t, y: K.multi_teacher_kd(s, t, 4.0),
    "multi_select": lambda s, t, y: K.multi_teacher_kd(s, t, 4.0, select=torch.tensor([1, 0, 2, 1, 0, 2, 1, 0])),
    "dkd": lambda s, t, y: K.dkd(s, t[:, 0], y.clamp(max=4)),
    "fitnet": lambda s, t, y: K.fitnet(s, t[:, 0]),
}


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_gradients_finite(name, dtype, scale):
    g = torch.Generator().manual_seed(12)
    s = (torch.randn(8, 5, generator=g) * scale).to(dtype).requires_grad_()
    t = (torch.randn(8, 3, 5, generator=g) * scale).to(dtype)
    y = torch.randint(0, 5, (8,), generator=g)
    y[:3] = 255
    loss = LOSSES[name](s, t, y)
    loss.backward()
    assert torch.isfinite(loss).item() and torch.isfinite(s.grad.float()).all()


def test_edge_cases():
    s = torch.randn(3, 4, requires_grad=True)
    # student == teacher -> 0; ties (uniform logits) are fine
    assert K.kd_kl(s.detach(), s.detach()).item() == pytest.approx(0.0, abs=1e-6)
    assert K.kd_kl(torch.zeros(3, 4), torch.zeros(3, 4)).item() == pytest.approx(0.0, abs=1e-7)
    assert K.dkd(s.detach(), s.detach(), torch.tensor([0, 1, 2])).item() == pytest.approx(0.0, abs=1e-5)
    # everything ignored -> zero loss, zero (finite) gradient
    loss = K.kd_kl(s, torch.randn(3, 4), target=torch.full((3,), 255), ignore_index=255)
    loss.backward()
    assert loss.item() == 0.0 and (s.grad == 0).all()
    with pytest.raises(ConfigError):
        K.kd_kl(s, s, temperature=0)
    with pytest.raises(ConfigError, match="ignore_index needs target"):
        K.kd_kl(s, s, ignore_index=255)


def test_modules_match_functions():
    s, t, y = torch.randn(4, 5), torch.randn(4, 2, 5), torch.randint(0, 5, (4,))
    torch.testing.assert_close(K.KDLoss(3.0)(s, t[:, 0]), K.kd_kl(s, t[:, 0], 3.0))
    torch.testing.assert_close(K.DKDLoss(1.0, 2.0, 3.0)(s, t[:, 0], y), K.dkd(s, t[:, 0], y, 1.0, 2.0, 3.0))
    w = torch.tensor([0.25, 0.75])
    mod = K.MultiTeacherKDLoss(2.0, weights=w)
    torch.testing.assert_close(mod(s, t), K.multi_teacher_kd(s, t, 2.0, weights=w))
    sel = torch.tensor([0, 1, 1, 0])
    torch.testing.assert_close(mod(s, t, select=sel), K.multi_teacher_kd(s, t, 2.0, select=sel))


def test_torchdistill_kdloss_if_installed():
    """torchdistill's KDLoss (when installed; it needs torchvision): alpha·CE + (1-alpha)·T²·KL."""
    td = pytest.importorskip("torchdistill.losses.mid_level")
    s, t, y = torch.randn(6, 8), torch.randn(6, 8), torch.randint(0, 8, (6,))
    for T in (1.0, 4.0):
        soft = td.KDLoss("s", "o", "t", "o", temperature=T, alpha=0.0)({"s": {"o": s}}, {"t": {"o": t}})
        torch.testing.assert_close(K.kd_kl(s, t, T), soft * T**2, **TOL)
        mixed = td.KDLoss("s", "o", "t", "o", temperature=T, alpha=0.3)({"s": {"o": s}}, {"t": {"o": t}}, y)
        ours = 0.3 * torch.nn.functional.cross_entropy(s, y) + 0.7 * K.kd_kl(s, t, T)
        torch.testing.assert_close(ours, mixed, **TOL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(LOSSES))
def test_cuda_matches_cpu(name):
    g = torch.Generator().manual_seed(13)
    s, t = torch.randn(8, 5, generator=g) * 3, torch.randn(8, 3, 5, generator=g) * 3
    y = torch.randint(0, 5, (8,), generator=g)
    y[:3] = 255
    a = s.clone().requires_grad_()
    ref = LOSSES[name](a, t, y)
    ref.backward()
    b = s.cuda().requires_grad_()
    got = LOSSES[name](b, t.cuda(), y.cuda())
    got.backward()
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(b.grad.cpu(), a.grad, rtol=1e-3, atol=1e-5)


def test_mutual_kd_numpy_and_gradients_into_both():
    T = 3.0
    for shape in ((6, 5), (2, 4, 3, 5)):  # vectors; dense: averaged over pixels too
        s, t = _rand(*shape, seed=11), _rand(*shape, seed=12)
        S = torch.tensor(s).float().requires_grad_()
        Tt = torch.tensor(t).float().requires_grad_()
        val = K.mutual_kd(S, Tt, T)
        assert val.item() == pytest.approx(_np_kd(s, t, T).mean(), rel=1e-5)
        val.backward()
        assert S.grad.abs().sum() > 0 and Tt.grad.abs().sum() > 0  # kd_kl would leave Tt.grad None
    # golden value: uniform student vs one-hot-ish teacher at T = 1 is KL(softmax(t) || U)
    s0, t0 = torch.zeros(2, 3), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    assert K.mutual_kd(s0, t0, 1.0).item() == pytest.approx(0.1232844595, rel=1e-6)
    with pytest.raises(ConfigError):
        K.mutual_kd(s0, t0, 0.0)
