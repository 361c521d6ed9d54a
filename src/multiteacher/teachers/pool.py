"""TeacherPool: several teachers, one call, outputs stacked along a teacher axis.

`pool.predict(batch)` returns a tensor `[T, B, ...]` (teacher axis first), the layout that
`consensus.py` (mean/median/agreement over teachers) and `routing.py` (per-instance gates over
teachers) take. `pool.cached_outputs(...)` caches every teacher on disk once and returns a
`StackedCache` whose `[positions]` gives the same `[T, B, ...]` stack from memory-mapped shards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from multiteacher.errors import UserError
from multiteacher.teachers.base import Teacher, fingerprint_obj
from multiteacher.teachers.cache import CachedArray, cached_outputs


def _check_stackable(names: Sequence[str], outs: Sequence[Any]) -> None:
    shapes = {tuple(o.shape) for o in outs}
    if len(shapes) > 1:
        desc = ", ".join(f"{n}: {tuple(o.shape)}" for n, o in zip(names, outs))
        raise UserError(
            f"teacher outputs have different shapes and cannot be stacked ({desc}); "
            "map them to a common output space or use predict_dict"
        )


class StackedCache:
    """Cached outputs of every teacher in a pool; `[positions]` -> array `[T, B, ...]`."""

    def __init__(self, arrays: dict[str, CachedArray]) -> None:
        self.arrays = arrays
        self.names = list(arrays)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, key: Any) -> np.ndarray:
        outs = [a[key] for a in self.arrays.values()]
        _check_stackable(self.names, outs)
        return np.stack(outs)

    def by_id(self, ids: Sequence[Any]) -> np.ndarray:
        outs = [a.by_id(ids) for a in self.arrays.values()]
        _check_stackable(self.names, outs)
        return np.stack(outs)

    def torch(self, key: Any) -> torch.Tensor:
        """`self[key]` as a tensor."""
        return torch.from_numpy(self[key])


class TeacherPool:
    """An ordered set of teachers with unique names."""

    def __init__(self, teachers: Sequence[Teacher]) -> None:
        self.teachers = list(teachers)
        if not self.teachers:
            raise UserError("a TeacherPool needs at least one teacher")
        names = [t.name for t in self.teachers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise UserError(f"teacher names must be unique in a pool; {dup[0]!r} is used twice — rename one")

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.teachers]

    @property
    def fingerprint(self) -> str:
        """Changes when any teacher, or the teachers' order, changes."""
        return fingerprint_obj([[t.name, t.fingerprint] for t in self.teachers])

    def __len__(self) -> int:
        return len(self.teachers)

    def __iter__(self) -> Iterator[Teacher]:
        return iter(self.teachers)

    def __getitem__(self, key: int | str) -> Teacher:
        if isinstance(key, str):
            for t in self.teachers:
                if t.name == key:
                    return t
            raise UserError(f"no teacher named {key!r} in the pool; have {', '.join(self.names)}")
        return self.teachers[key]

    def predict_dict(self, batch: Any) -> dict[str, Any]:
        """Each teacher's outputs for `batch`, by name."""
        return {t.name: t.predict(batch) for t in self.teachers}

    def predict(self, batch: Any, dim: int = 0) -> torch.Tensor:
        """Outputs stacked along a new teacher axis (`dim`, default 0: `[T, B, ...]`)."""
        outs = [torch.as_tensor(o) for o in self.predict_dict(batch).values()]
        _check_stackable(self.names, outs)
        return torch.stack(outs, dim=dim)

    __call__ = predict

    def cached_outputs(
        self,
        data: Any,
        ids: Sequence[Any],
        data_fp: str,
        *,
        root: str | os.PathLike[str] | None = None,
        predict_fns: dict[str, Callable[[Any], Any]] | None = None,
        **kwargs: Any,
    ) -> StackedCache:
        """Cache each teacher's outputs on `data` (see `cached_outputs`) and return them stacked.

        `predict_fns` may override how a named teacher is called (e.g. to pick features); the
        override's qualified name then joins the cache key, so it never reuses the plain outputs.
        Extra keyword arguments (`shard_size`, `batch_size`, `rank`, `world`, `dtype`, ...) pass on.
        """
        predict_fns = predict_fns or {}
        arrays = {}
        for t in self.teachers:
            fn = predict_fns.get(t.name)
            fp = t.fingerprint if fn is None else f"{t.fingerprint}:{getattr(fn, '__qualname__', repr(fn))}"
            arrays[t.name] = cached_outputs(
                fn or t.predict, data, ids, teacher_fp=fp, data_fp=data_fp, root=root, **kwargs
            )
        return StackedCache(arrays)
