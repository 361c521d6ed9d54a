"""Length-grouped batches in the fit loop: `LengthGroupedBatchSampler` and `fit.length_grouped`."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from multiteacher import killpoints
from multiteacher.config import RecipeConfig
from multiteacher.engine.loop import EpochBatchSampler, FitConfig, LengthGroupedBatchSampler, fit
from multiteacher.engine.setup import seed_everything
from multiteacher.errors import ConfigError
from multiteacher.io import clean_temp_files, leftover_temp_files
from multiteacher.runs import RunContext


def lengths(n: int = 203, seed: int = 0) -> list[int]:
    r = random.Random(seed)
    return [r.randint(5, 200) for _ in range(n)]


def flat(batches: list[list[int]]) -> list[int]:
    return [i for b in batches for i in b]


# ----------------------------------------------------------------------------- sampler


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("group_batches", [1, 3, 50])
def test_every_index_once_per_epoch(drop_last: bool, group_batches: int) -> None:
    lens = lengths()
    s = LengthGroupedBatchSampler(lens, 8, seed=1, drop_last=drop_last, group_batches=group_batches)
    for epoch in range(3):
        s.set_position(epoch, 0)
        batches = list(s)
        idx = flat(batches)
        assert len(idx) == len(set(idx))  # no index twice
        assert len(batches) == s.batches_per_epoch() == len(s)
        if drop_last:
            assert len(idx) == (len(lens) // 8) * 8 and all(len(b) == 8 for b in batches)
        else:
            assert sorted(idx) == list(range(len(lens)))
            assert sorted(len(b) for b in batches)[1:] == [8] * (len(batches) - 1)  # one short batch
    assert s.batches_per_epoch() == EpochBatchSampler(len(lens), 8, seed=1, drop_last=drop_last).batches_per_epoch()


def test_deterministic_by_seed_and_epoch() -> None:
    lens = lengths()

    def epoch(seed: int, e: int) -> list[list[int]]:
        s = LengthGroupedBatchSampler(lens, 8, seed=seed, group_batches=5)
        s.set_position(e, 0)
        return list(s)

    assert epoch(3, 0) == epoch(3, 0) and epoch(3, 1) == epoch(3, 1)
    assert epoch(3, 0) != epoch(4, 0)  # another seed
    assert epoch(3, 0) != epoch(3, 1)  # another epoch
    assert sorted(map(sorted, epoch(3, 0))) != sorted(map(sorted, epoch(3, 1)))  # other batch contents, not only order


def test_batches_hold_similar_lengths_and_pad_less() -> None:
    lens = lengths(400)

    def padded(batches: list[list[int]]) -> int:
        return sum(len(b) * max(lens[i] for i in b) for b in batches)

    grouped = LengthGroupedBatchSampler(lens, 16, seed=0, group_batches=50).epoch_batches()
    rand = EpochBatchSampler(len(lens), 16, seed=0).epoch_batches()
    assert padded(grouped) < 0.75 * padded(rand)
    # one pool (25 batches <= 50): the batches cut the length-sorted list into consecutive ranges
    ranges = sorted((min(lens[i] for i in b), max(lens[i] for i in b)) for b in grouped)
    assert all(hi <= lo_next for (_, hi), (lo_next, _) in itertools.pairwise(ranges))
    # ... and come in a shuffled order, not longest first
    firsts = [max(lens[i] for i in b) for b in grouped]
    assert firsts != sorted(firsts, reverse=True)


def test_pools_keep_the_random_permutation() -> None:
    """group_batches=1: each batch is a batch of the plain sampler, only reordered."""
    lens = lengths()
    g = LengthGroupedBatchSampler(lens, 8, seed=5, group_batches=1).epoch_batches()
    plain = EpochBatchSampler(len(lens), 8, seed=5).epoch_batches()
    assert sorted(map(sorted, g)) == sorted(map(sorted, plain))


def test_resume_mid_epoch_is_exact() -> None:
    lens = lengths()
    full = LengthGroupedBatchSampler(lens, 8, seed=2, group_batches=4)
    full.set_position(1, 0)
    epoch1 = list(full)
    s = LengthGroupedBatchSampler(lens, 8, seed=2, group_batches=4)
    s.set_position(1, 7)
    assert len(s) == len(epoch1) - 7 and list(s) == epoch1[7:]


def test_ranks_split_each_global_batch() -> None:
    lens = lengths()
    one = list(LengthGroupedBatchSampler(lens, 8, seed=3))
    r0 = list(LengthGroupedBatchSampler(lens, 8, seed=3, rank=0, world=2))
    r1 = list(LengthGroupedBatchSampler(lens, 8, seed=3, rank=1, world=2))
    assert [sorted(a + b) for a, b in zip(r0, r1)] == [sorted(x) for x in one]
    with pytest.raises(ConfigError):
        LengthGroupedBatchSampler(lens, 7, seed=0, world=2)
    with pytest.raises(ConfigError):
        LengthGroupedBatchSampler(lens, 8, seed=0, group_batches=0)


def test_no_shuffle_is_length_sorted_pools() -> None:
    lens = [3, 9, 1, 7, 5, 8, 2]
    s = LengthGroupedBatchSampler(lens, 2, seed=0, shuffle=False, drop_last=False, group_batches=2)
    # pools of 4 indices in index order, each sorted longest first (ties keep index order)
    assert list(s) == [[1, 3], [0, 2], [5, 4], [6]]


# ----------------------------------------------------------------------------- fit


class Seqs(Dataset):
    """Variable-length token sequences; the label is whether token 1 occurs."""

    def __init__(self, n: int = 96) -> None:
        g = torch.Generator().manual_seed(0)
        self.lens = torch.randint(2, 40, (n,), generator=g).tolist()
        self.x = [torch.randint(1, 20, (k,), generator=g) for k in self.lens]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return i, self.x[i]


def collate(items: list[tuple[int, torch.Tensor]]) -> dict[str, torch.Tensor]:
    width = max(len(x) for _, x in items)
    ids = torch.zeros(len(items), width, dtype=torch.long)
    for r, (_, x) in enumerate(items):
        ids[r, : len(x)] = x
    return {"idx": torch.tensor([i for i, _ in items]), "ids": ids}


class Bag(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.emb = nn.Embedding(20, 8, padding_idx=0)
        self.out = nn.Sequential(nn.Dropout(0.1), nn.Linear(8, 2))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.emb(ids).sum(1) / (ids > 0).sum(1, keepdim=True))


CFG = FitConfig(max_steps=30, batch_size=8, lr=0.01, val_every=10, ckpt_every=5, log_every=5, length_grouped=True,
                length_group_batches=4)


def make_ctx(run_dir: Path) -> RunContext:
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunContext(run_dir=run_dir, data_dir=run_dir, cache_dir=run_dir,
                      config=RecipeConfig(recipe="example", name="t", seed=7))


def run_fit(run_dir: Path, seen: list[list[int]] | None = None) -> tuple[nn.Module, object]:
    seed_everything(0)
    data, m = Seqs(), Bag()

    def step(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if seen is not None:
            seen.append(batch["idx"].tolist())
        y = (batch["ids"] == 1).any(1).long()
        return nn.functional.cross_entropy(model(batch["ids"]), y)

    def evaluate(model: nn.Module) -> dict[str, float]:
        b = collate([data[i] for i in range(len(data))])
        return {"val/loss": float(nn.functional.cross_entropy(model(b["ids"]), (b["ids"] == 1).any(1).long()))}

    res = fit(make_ctx(run_dir), "m", m, data, step, CFG, evaluate, collate_fn=collate, lengths=data.lens)
    return m, res


def test_fit_uses_length_grouped_batches(tmp_path: Path) -> None:
    seen: list[list[int]] = []
    run_fit(tmp_path / "a", seen)
    lens = Seqs().lens
    s = LengthGroupedBatchSampler(lens, 8, seed=7, group_batches=4)
    expected = []
    for epoch in range(3):  # 96 / 8 = 12 batches per epoch, 30 steps
        s.set_position(epoch, 0)
        expected += list(s)
    assert seen == expected[:30]


@pytest.mark.parametrize("point", ["fit/step@13", "fit/checkpoint_write@3", "fit/step@25"])
def test_resume_after_kill_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str) -> None:
    class Killed(Exception):
        pass

    ref_seen: list[list[int]] = []
    ref, ref_res = run_fit(tmp_path / "ref", ref_seen)

    def die() -> None:
        raise Killed

    monkeypatch.setattr(killpoints, "_die", die)
    monkeypatch.setenv("MULTITEACHER_KILL_AT", point)
    killpoints.reset()
    seen: list[list[int]] = []
    with pytest.raises(Killed):
        run_fit(tmp_path / "k", seen)
    monkeypatch.delenv("MULTITEACHER_KILL_AT")
    clean_temp_files(tmp_path / "k")
    torch.manual_seed(12345)
    resumed: list[list[int]] = []
    got, res = run_fit(tmp_path / "k", resumed)
    assert resumed == ref_seen[len(ref_seen) - len(resumed):]  # the resumed run continues the same batches
    assert res.history == ref_res.history
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), got.state_dict().values()))
    assert leftover_temp_files(tmp_path / "k") == []
    killpoints.reset()


def test_length_grouped_needs_lengths(tmp_path: Path) -> None:
    data = Seqs()

    def step(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(batch["ids"]).sum()

    cfg = CFG.model_copy(update={"max_steps": 2, "val_every": 2})
    with pytest.raises(ConfigError, match="length_grouped"):
        fit(make_ctx(tmp_path / "a"), "m", Bag(), data, step, cfg, collate_fn=collate)
    with pytest.raises(ConfigError, match="lengths"):
        fit(make_ctx(tmp_path / "b"), "m", Bag(), data, step, cfg, collate_fn=collate, lengths=data.lens[:-1])
    # off by default: lengths are ignored and the order is the plain sampler's
    seen: list[list[int]] = []

    def rec(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.append(batch["idx"].tolist())
        return model(batch["ids"]).sum()

    plain = cfg.model_copy(update={"length_grouped": False})
    fit(make_ctx(tmp_path / "c"), "m", Bag(), data, rec, plain, collate_fn=collate, lengths=data.lens)
    assert seen == EpochBatchSampler(len(data), 8, seed=7).epoch_batches()[:2]
