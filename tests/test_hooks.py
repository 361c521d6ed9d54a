"""Forward hooks by module path: capture, transform, mask; hooks are removed on exit."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from multiteacher.errors import ConfigError
from multiteacher.hooks import apply_mask, capture, get_submodule, mask_output, transform_output


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        nn.Linear(4, 3),
    )


def _n_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_get_submodule_and_error() -> None:
    net = _net()
    assert get_submodule(net, "1.2") is net[1][2]
    assert get_submodule(net, "") is net
    with pytest.raises(ConfigError) as e:
        get_submodule(net, "1.9")
    assert "'1.9'" in str(e.value) and "valid paths: 0, 1, 1.0" in str(e.value) and "\n" not in str(e.value)


def test_capture_records_outputs_and_removes_hooks() -> None:
    net, x = _net(), torch.randn(2, 1, 5, 5)
    with capture(net, ["0", "1.2"]) as feats:
        out = net(x)
    assert feats["0"].shape == (2, 4, 5, 5)
    ref = net[1](net[0](x))
    torch.testing.assert_close(feats["1.2"], ref)
    torch.testing.assert_close(out, net[2](ref))
    assert feats["1.2"].requires_grad
    assert _n_hooks(net) == 0
    with capture(net, ["1.2"], detach=True) as feats:
        net(x)
    assert not feats["1.2"].requires_grad


def test_transform_output_changes_forward_and_cleans_up_on_error() -> None:
    net, x = _net(), torch.randn(2, 1, 5, 5)
    base = net(x)
    with transform_output(net, "1", lambda h: torch.zeros_like(h)):
        torch.testing.assert_close(net(x), net[2].bias.expand(2, 3))
    torch.testing.assert_close(net(x), base)
    with pytest.raises(RuntimeError), transform_output(net, "1", lambda h: h * 2):
        raise RuntimeError("boom")
    assert _n_hooks(net) == 0


def test_mask_output_vector_and_channel_masks() -> None:
    net, x = _net(), torch.randn(2, 1, 5, 5)
    # vector mask on the flattened (B, 4) features: zeroing channel 0 == removing its weight column
    m = torch.tensor([0.0, 1.0, 1.0, 1.0])
    rec: dict[str, torch.Tensor] = {}
    with mask_output(net, "1.2", lambda h: m.expand_as(h), record=rec):
        out = net(x)
    feats = net[1](net[0](x)) * m
    torch.testing.assert_close(out, net[2](feats))
    assert rec["1.2"].shape == (2, 4)
    # channel mask (B, C) on a (B, C, H, W) map broadcasts over space
    cm = torch.rand(2, 4)
    # hooks run in the order the blocks are entered: capture after the mask sees the masked output
    with mask_output(net, "0", lambda h: cm), capture(net, ["0"]) as feats0:
        net(x)
    torch.testing.assert_close(feats0["0"], net[0](x) * cm[:, :, None, None])
    with capture(net, ["0"]) as feats0, mask_output(net, "0", lambda h: cm):
        net(x)
    torch.testing.assert_close(feats0["0"], net[0](x))
    torch.testing.assert_close(apply_mask(torch.ones(2, 4, 3, 3), cm)[:, :, 2, 1], cm)


def test_mask_gradients_reach_masknet_only_through_hook() -> None:
    net = _net()
    for p in net.parameters():
        p.requires_grad_(False)
    masknet = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid())
    with mask_output(net, "1.2", masknet):
        net(torch.randn(3, 1, 5, 5)).sum().backward()
    assert masknet[0].weight.grad is not None and masknet[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
