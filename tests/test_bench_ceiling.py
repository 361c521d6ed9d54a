"""The fp32 ceiling figures of B3/B7 (`bench.b8_flops.fp32_ceiling`) against hand-computed values."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from bench import b8_flops as b8


def test_layer_flops_by_hand() -> None:
    # h=2, f=4, 10 tokens attending over 10: 2*(4*4 + 2*2*4)*10 = 640 matmul FLOPs, 2*2*10*10*2 = 800 attention
    assert b8.layer_flops(2, 4, 10, 10) == 1440.0


def test_fp32_ceiling_by_hand(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}

    def fake_peak(tokens: int, h: int, f: int, **kw: object) -> tuple[float, dict[str, float]]:
        seen.update(tokens=tokens, h=h, f=f)
        return 360.0, {}  # FLOPs per CPU second

    monkeypatch.setattr(b8, "matmul_peak", fake_peak)
    cfg = SimpleNamespace(hidden_size=2, intermediate_size=4, num_hidden_layers=1)
    # two sequences of 10 and 20 tokens: 1440 + (2*32*20 + 4*400*2 = 1280 + 3200) = 5920 useful FLOPs
    out = b8.fp32_ceiling([10, 20], cfg, batch=4, ours_cpu_s=[40.0, 20.0, 30.0], peer_cpu_s=[50.0])
    assert seen == {"tokens": 60, "h": 2, "f": 4}  # 4 sequences of the mean length 15
    assert out["ours_fraction_of_peak"] == 0.5481  # 5920 FLOPs / 30 s (median of the rounds) / 360 FLOP/s
    assert out["peer_fraction_of_peak"] == 0.3289  # 5920 / 50 / 360
    assert out["max_ratio_at_peak"] == 3.041  # 50 s * 360 FLOP/s / 5920 FLOPs
