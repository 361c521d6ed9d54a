"""fit's options for jobs outside a run: LocalContext, ckpt_dir outside the run directory, a caller's
sampler (MixtureBatchSampler), FitState.extra kept across a resume, cosine floor (min_lr_ratio),
ckpt_every=0."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from multiteacher import killpoints
from multiteacher.engine.context import LocalContext
from multiteacher.engine.loop import FitConfig, FitState, fit, lr_factor
from multiteacher.engine.sampling import MixtureBatchSampler


class Killed(Exception):
    pass


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True))


def _step(m: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], state: FitState) -> torch.Tensor:
    loss = nn.functional.mse_loss(m(batch[0]), batch[1])
    state.extra.setdefault("losses", []).append(loss.item())
    return loss


CFG = FitConfig(max_steps=9, batch_size=5, lr=0.05, val_every=9, ckpt_every=2, scheduler="cosine", min_lr_ratio=0.1,
                log_every=3)


def _run(tmp: Path, name: str) -> tuple[nn.Module, object, LocalContext]:
    torch.manual_seed(0)
    m = nn.Linear(3, 1)
    ctx = LocalContext(seed=1, run_dir=tmp / "run")
    sampler = MixtureBatchSampler([range(20), range(20, 40)], [3, 2], steps=CFG.max_steps, seed=5)
    res = fit(ctx, name, m, _data(), _step, CFG, ckpt_dir=tmp / "job" / name, sampler=sampler)
    return m, res, ctx


def test_ckpt_dir_sampler_and_extra_survive_a_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref, ref_res, ref_ctx = _run(tmp_path, "ref")
    assert (tmp_path / "job" / "ref" / "done.json").exists() and not (tmp_path / "run").exists()
    assert len(ref_res.extra["losses"]) == 9
    assert [(r["fit"], r["step"]) for r in ref_ctx.records] == [("ref", 3), ("ref", 6), ("ref", 9)]
    assert ref_ctx.records[0]["train/loss"] == ref_res.extra["losses"][2]
    monkeypatch.setattr(killpoints, "_die", lambda: (_ for _ in ()).throw(Killed()))
    monkeypatch.setenv("MULTITEACHER_KILL_AT", "fit/step@6")
    killpoints.reset()
    with pytest.raises(Killed):
        _run(tmp_path, "k")
    last = torch.load(tmp_path / "job" / "k" / "last.pt", weights_only=False)
    assert last["state"]["step"] == 4 and len(last["state"]["extra"]["losses"]) == 4
    monkeypatch.delenv("MULTITEACHER_KILL_AT")
    killpoints.reset()
    m, res, _ = _run(tmp_path, "k")
    assert res.extra["losses"] == ref_res.extra["losses"]  # the first 4 restored, the rest recomputed equal
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), m.state_dict().values()))


def test_mixture_sampler_batches_and_resume_position() -> None:
    s = MixtureBatchSampler([[0, 1, 2], [7, 8]], [2, 3], steps=4, seed=9)
    batches = s.epoch_batches()
    assert len(batches) == 4 and all(len(b) == 5 for b in batches)
    assert all(set(b[:2]) <= {0, 1, 2} and set(b[2:]) <= {7, 8} for b in batches)
    s.set_position(0, 2)
    assert list(s) == batches[2:]
    rank1 = MixtureBatchSampler([[0, 1, 2], [7, 8]], [2, 3], steps=4, seed=9, rank=1, world=5)
    assert [b[0] for b in rank1] == [b[1] for b in batches]


def test_cosine_floor_golden() -> None:
    cfg = FitConfig(max_steps=10, scheduler="cosine", min_lr_ratio=0.2)
    assert lr_factor(0, cfg) == 1.0
    assert lr_factor(5, cfg) == pytest.approx(0.2 + 0.8 * 0.5)
    assert lr_factor(10, cfg) == pytest.approx(0.2)
    # NGC edges' old schedule, bit for bit
    old = [float(0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * s / 15))) for s in range(16)]
    assert [lr_factor(s, FitConfig(max_steps=15, scheduler="cosine", min_lr_ratio=0.05)) for s in range(16)] == old
    assert lr_factor(3, FitConfig(max_steps=10, scheduler="cosine")) == 0.5 * (1 + math.cos(math.pi * 0.3))


def test_ckpt_every_zero_checkpoints_only_at_validations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = FitConfig(max_steps=6, batch_size=5, val_every=6, ckpt_every=0)
    with_default = FitConfig(max_steps=6, batch_size=5, val_every=6, ckpt_every=5)  # control: resume point at 5
    monkeypatch.setattr(killpoints, "_die", lambda: (_ for _ in ()).throw(Killed()))
    for name, c in (("z", cfg), ("d", with_default)):
        monkeypatch.setenv("MULTITEACHER_KILL_AT", "fit/step@6")
        killpoints.reset()
        with pytest.raises(Killed):
            fit(LocalContext(seed=0, run_dir=tmp_path), name, nn.Linear(3, 1), _data(), _step, c)
    assert (tmp_path / "checkpoints" / "d" / "last.pt").exists()
    monkeypatch.delenv("MULTITEACHER_KILL_AT")
    killpoints.reset()
    assert not (tmp_path / "checkpoints" / "z" / "last.pt").exists()
