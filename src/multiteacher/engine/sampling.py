"""Batch samplers of the fit loop: resumable, a function of (seed, epoch) only, DDP-aware.

`fit` asks a sampler for the global batches of an epoch and resumes mid-epoch with
`set_position(epoch, start_batch)`, so a sampler must give the same batches for the same
(seed, epoch) in every session. Three kinds:

- `EpochBatchSampler`: a seeded permutation per epoch, cut into batches (the default).
- `LengthGroupedBatchSampler`: batches of similar sample length (less padding for text).
- `MixtureBatchSampler`: every batch draws a fixed number of samples, with replacement, from each
  of several index pools (e.g. labelled and pseudo-labelled frames); one "epoch" is `steps` batches.

Under DDP each rank takes a strided slice of every global batch, so 1 process with batch B and N
processes with B/N see the same samples per step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from multiteacher.errors import ConfigError

if TYPE_CHECKING:
    from multiteacher.engine.loop import FitConfig

__all__ = ["EpochBatchSampler", "LengthGroupedBatchSampler", "MixtureBatchSampler", "make_sampler"]


class EpochBatchSampler(Sampler[list[int]]):
    """Seeded per-epoch permutation cut into global batches, split across ranks by striding, resumable mid-epoch.

    Args:
        n: number of training samples.
        batch_size: global batch size (divisible by `world`).
        seed: the run's seed; the permutation of epoch e is a function of (seed, e) only.
        shuffle: permute the samples each epoch (else index order).
        drop_last: drop the last, short batch of an epoch.
        rank: this process's rank.
        world: number of processes.

    Example:
        >>> s = EpochBatchSampler(10, 4, seed=0)
        >>> s.batches_per_epoch(), sorted(sum(s.epoch_batches(), [])) == sorted(sum(s.epoch_batches(), []))
        (2, True)
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True, drop_last: bool = True,
                 rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise ConfigError(f"fit.batch_size={batch_size} must be divisible by the {world} processes")
        self.n, self.batch, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.drop_last, self.rank, self.world = drop_last, rank, world
        self.epoch, self.start = 0, 0

    def set_position(self, epoch: int, start_batch: int) -> None:
        """Continue at batch `start_batch` of epoch `epoch` (what a resumed fit calls).

        Args:
            epoch: epoch index (0-based).
            start_batch: first batch of that epoch to yield.

        Returns:
            None.

        Example:
            >>> s = EpochBatchSampler(10, 2, seed=0); s.set_position(1, 3); len(s)
            2
        """
        self.epoch, self.start = epoch, start_batch

    def batches_per_epoch(self) -> int:
        """Global batches in one epoch.

        Returns:
            `n // batch_size`, plus one for a short last batch without `drop_last`.

        Example:
            >>> EpochBatchSampler(10, 4, 0, drop_last=False).batches_per_epoch()
            3
        """
        full, rest = divmod(self.n, self.batch)
        return full + (1 if rest and not self.drop_last else 0)

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch() - self.start)

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def _order(self, g: torch.Generator) -> list[int]:
        return torch.randperm(self.n, generator=g).tolist() if self.shuffle else list(range(self.n))

    def epoch_batches(self) -> list[list[int]]:
        """The global batches of the current epoch, in order (a function of seed and epoch only).

        Returns:
            A list of batches, each a list of sample indices.

        Example:
            >>> EpochBatchSampler(4, 2, 0, shuffle=False).epoch_batches()
            [[0, 1], [2, 3]]
        """
        order = self._order(self._generator())
        return [order[b * self.batch:(b + 1) * self.batch] for b in range(self.batches_per_epoch())]

    def __iter__(self) -> Iterator[list[int]]:
        for chunk in self.epoch_batches()[self.start:]:
            yield chunk[self.rank::self.world]


class LengthGroupedBatchSampler(EpochBatchSampler):
    """`EpochBatchSampler` whose batches hold samples of similar length, so that dynamic padding
    (pad to the longest in the batch) wastes little.

    Per epoch: the same seeded permutation as `EpochBatchSampler` (with `drop_last`, its tail of
    fewer than `batch_size` samples is dropped), cut into pools of `group_batches` batches; each
    pool is sorted by length (longest first; ties keep the random order) and cut into batches; then
    the order of all the epoch's batches is shuffled with the same generator, so that long and short
    batches alternate at random. Every sample is in exactly one batch per epoch (the dropped tail
    aside); the batches are a function of (seed, epoch) only, so `set_position` resumes exactly.
    Under DDP each rank takes a strided slice of every global batch (similar lengths on all ranks).
    `shuffle=False`: no permutation and no batch shuffle (pools in index order, longest first).

    Args:
        lengths: one length per sample (e.g. tokens after truncation).
        batch_size: samples per global batch (as in `EpochBatchSampler`).
        seed: seeds the per-epoch permutation and batch shuffle.
        shuffle: permute each epoch (False: index order).
        drop_last: drop the incomplete last batch.
        rank: this process's rank under DDP.
        world: number of processes under DDP.
        group_batches: batches per length-sorted pool.

    Example:
        >>> s = LengthGroupedBatchSampler([1, 9, 2, 8], 2, seed=0, shuffle=False)
        >>> s.epoch_batches()
        [[1, 3], [2, 0]]
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, shuffle: bool = True,
                 drop_last: bool = True, rank: int = 0, world: int = 1, group_batches: int = 50) -> None:
        super().__init__(len(lengths), batch_size, seed, shuffle, drop_last, rank, world)
        if group_batches < 1:
            raise ConfigError(f"length_group_batches={group_batches} must be >= 1")
        self.lengths = [int(x) for x in lengths]
        self.group_batches = group_batches

    def epoch_batches(self) -> list[list[int]]:
        """The epoch's length-grouped global batches (see the class doc).

        Returns:
            A list of batches, each a list of sample indices.

        Example:
            >>> LengthGroupedBatchSampler([3, 1, 2], 1, 0, shuffle=False).epoch_batches()
            [[0], [2], [1]]
        """
        g = self._generator()
        order = self._order(g)
        if self.drop_last:
            order = order[: (self.n // self.batch) * self.batch]
        pool = self.group_batches * self.batch  # a multiple of the batch: only the last batch can be short
        batches: list[list[int]] = []
        for p in range(0, len(order), pool):
            chunk = sorted(order[p:p + pool], key=lambda i: -self.lengths[i])  # stable
            batches += [chunk[j:j + self.batch] for j in range(0, len(chunk), self.batch)]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        return batches


class MixtureBatchSampler(EpochBatchSampler):
    """Batches that draw, with replacement, a fixed number of samples from each of several index pools.

    Step-budgeted training (NGC edges: "400 steps", not epochs) on a mix of sources: batch b is
    ``concat(rng.choice(pool_i, count_i) for each pool with count_i > 0)`` from one NumPy generator
    seeded with `seed`, so the whole run's batches are a function of `seed` only. One "epoch" is
    `steps` batches; `set_position(0, k)` resumes at batch k exactly.

    Args:
        pools: index arrays, one per source (e.g. labelled and unlabelled frames).
        counts: samples per batch from each pool (their sum is the batch size).
        steps: batches in the epoch (the fit's `max_steps`).
        seed: NumPy seed of the draws.
        rank: this process's rank.
        world: number of processes.

    Example:
        >>> s = MixtureBatchSampler([[0, 1, 2], [10, 11]], [2, 1], steps=3, seed=0)
        >>> [len(b) for b in s.epoch_batches()], all(b[2] >= 10 for b in s.epoch_batches())
        ([3, 3, 3], True)
    """

    def __init__(self, pools: Sequence[Sequence[int]], counts: Sequence[int], steps: int, seed: int,
                 rank: int = 0, world: int = 1) -> None:
        if len(pools) != len(counts):
            raise ConfigError(f"MixtureBatchSampler: {len(pools)} pools but {len(counts)} counts")
        self.pools = [np.asarray(p, dtype=np.int64) for p in pools]
        self.counts = [int(c) for c in counts]
        for p, c in zip(self.pools, self.counts):
            if c > 0 and len(p) == 0:
                raise ConfigError(f"MixtureBatchSampler: {c} samples per batch from an empty pool")
        super().__init__(steps * max(1, sum(self.counts)), max(1, sum(self.counts)), seed, True, True, rank, world)
        self.steps = steps

    def batches_per_epoch(self) -> int:
        """Batches per epoch: `steps`.

        Returns:
            The step budget given at construction.

        Example:
            >>> MixtureBatchSampler([[0]], [1], steps=5, seed=0).batches_per_epoch()
            5
        """
        return self.steps

    def epoch_batches(self) -> list[list[int]]:
        """All `steps` batches (the same for every epoch: the draws depend on `seed` only).

        Returns:
            A list of batches, each a list of sample indices.

        Example:
            >>> MixtureBatchSampler([[4]], [2], steps=1, seed=0).epoch_batches()
            [[4, 4]]
        """
        rng = np.random.default_rng(self.seed)
        out: list[list[int]] = []
        for _ in range(self.steps):
            parts: list[Any] = [rng.choice(p, c) for p, c in zip(self.pools, self.counts) if c > 0]
            out.append(np.concatenate(parts).astype(np.int64).tolist() if parts else [])
        return out


def make_sampler(name: str, train_data: Dataset[Any], cfg: FitConfig, seed: int, rank: int, world: int,
                 lengths: Sequence[int] | None) -> EpochBatchSampler:
    """The sampler `cfg` asks for: `EpochBatchSampler`, or `LengthGroupedBatchSampler` with `cfg.length_grouped`.

    Args:
        name: the fit's name (for error messages).
        train_data: the training set (its length is the number of samples).
        cfg: the fit's config.
        seed: the run's seed.
        rank: this process's rank.
        world: number of processes.
        lengths: per-sample lengths (needed with `cfg.length_grouped`).

    Returns:
        A resumable batch sampler.

    Example:
        >>> from multiteacher.engine.loop import FitConfig
        >>> make_sampler("m", list(range(8)), FitConfig(batch_size=4), 0, 0, 1, None).batches_per_epoch()
        2
    """
    n = len(train_data)  # type: ignore[arg-type]
    if not cfg.length_grouped:
        return EpochBatchSampler(n, cfg.batch_size, seed, cfg.shuffle, cfg.drop_last, rank, world)
    if lengths is None:
        raise ConfigError(f"fit '{name}': fit.length_grouped needs per-sample lengths, which this recipe does not "
                          "give — set fit.length_grouped=false")
    if len(lengths) != n:
        raise ConfigError(f"fit '{name}': {len(lengths)} sample lengths for {n} training samples")
    return LengthGroupedBatchSampler(lengths, cfg.batch_size, seed, cfg.shuffle, cfg.drop_last, rank, world,
                                     cfg.length_group_batches)
