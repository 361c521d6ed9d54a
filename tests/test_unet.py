"""U-Net: shapes for any size, configurable width/depth, parameter count, learns a simple map."""

from __future__ import annotations

import pytest
import torch

from multiteacher.models import UNet


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [(32, 32), (30, 45)])
def test_shapes(depth: int, size: tuple[int, int]) -> None:
    net = UNet(4, 7, width=4, depth=depth)
    assert net(torch.randn(2, 4, *size)).shape == (2, 7, *size)


def test_param_count_matches_design_budget() -> None:
    n = sum(p.numel() for p in UNet(3, 1, width=16, depth=3).parameters())
    assert 100_000 < n < 140_000  # DESIGN.md: width 16, 3 levels ~119k
    assert sum(p.numel() for p in UNet(3, 1, width=32, depth=3).parameters()) > 3.5 * n


def test_bad_args() -> None:
    with pytest.raises(ValueError, match="depth"):
        UNet(3, 1, depth=0)


def test_learns_identity_like_map() -> None:
    torch.manual_seed(0)
    net = UNet(1, 1, width=4, depth=2)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    x = torch.rand(8, 1, 16, 16)
    y = 2 * x - 0.5
    first = None
    for _ in range(150):
        loss = (net(x) - y).abs().mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
