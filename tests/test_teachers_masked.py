"""freeze_teacher and MaskedTeacher: frozen networks specialised by mask nets hooked by module path."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from multiteacher.errors import ConfigError
from multiteacher.teachers import TeacherPool
from multiteacher.teachers.base import ModuleTeacher, Teacher, freeze_teacher
from multiteacher.teachers.masked import MaskedTeacher


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 3))


class _Gate(nn.Module):
    """A learnable per-channel mask: sigmoid(w)."""

    def __init__(self, channels: int, value: float = 0.0) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((channels,), value))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.w).expand(h.shape[0], -1)


def test_freeze_teacher() -> None:
    net = _net().train()
    assert freeze_teacher(net) is net
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    x = torch.randn(5, 4)
    torch.testing.assert_close(net(x), net(x))  # dropout off


def test_masked_output_equals_hand_computed_mask() -> None:
    net = _net()
    gate = _Gate(6, value=0.0)  # sigmoid(0) = 0.5 on every channel of the ReLU output
    t = MaskedTeacher(net, {"1": gate}, name="net@relu")
    x = torch.randn(5, 4)
    ref = net[3](0.5 * torch.relu(net[0](x)))
    torch.testing.assert_close(t.predict(x), ref)
    assert isinstance(t, Teacher) and t.name == "net@relu"
    assert all(not m._forward_hooks for m in net.modules())  # hooks removed after the call
    masks = t.mask_values(x)
    assert list(masks) == ["1"] and torch.allclose(masks["1"], torch.full((5, 6), 0.5))
    # no masks: the plain network, the same as a ModuleTeacher
    torch.testing.assert_close(MaskedTeacher(net, {}).predict(x), ModuleTeacher(net).predict(x))


def test_forward_trains_the_mask_not_the_network() -> None:
    net, gate = _net(), _Gate(6)
    t = MaskedTeacher(net, {"1": gate})
    t.forward(torch.randn(5, 4)).sum().backward()
    assert gate.w.grad is not None and gate.w.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    out = t.predict(torch.randn(2, 4))
    assert out.is_inference() and not out.requires_grad


def test_fingerprint_tracks_mask_weights_and_paths() -> None:
    net = _net()
    a = MaskedTeacher(net, {"1": _Gate(6, 0.0)}, name="t")
    b = MaskedTeacher(net, {"1": _Gate(6, 0.0)}, name="t")
    assert a.fingerprint == b.fingerprint
    assert MaskedTeacher(net, {"1": _Gate(6, 1.0)}, name="t").fingerprint != a.fingerprint
    assert MaskedTeacher(net, {"0": _Gate(6, 0.0)}, name="t").fingerprint != a.fingerprint
    assert MaskedTeacher(net, {}, name="t").fingerprint != a.fingerprint


def test_pool_of_masked_teachers_and_bad_path() -> None:
    net = _net()
    pool = TeacherPool([MaskedTeacher(net, {"1": _Gate(6, v)}, name=f"m{v}") for v in (-2.0, 0.0, 2.0)])
    x = torch.randn(7, 4)
    y = pool.predict(x)
    assert y.shape == (7, 3, 3)  # (B, K, C)
    torch.testing.assert_close(y[:, 1], pool["m0.0"].predict(x))
    with pytest.raises(ConfigError, match="not found"):
        MaskedTeacher(net, {"9": _Gate(6)})
