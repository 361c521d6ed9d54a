"""TeacherPool: several teachers, one call, outputs stacked along a teacher axis.

Layout: ``(B, K, ...)`` — batch first, teachers second — everywhere in the engine.
`pool.predict(batch)` returns that stack, which is what `multiteacher.consensus` (mean, median,
agreement over teachers, ``dim=1``), `multiteacher.routing` (per-instance gates ``(B, K)``) and
`multiteacher.losses.kd.multi_teacher_kd` take. `pool.cached_outputs(...)` caches every teacher on
disk once and returns a `StackedCache` whose ``[positions]`` gives the same ``(B, K, ...)`` stack
from memory-mapped shards.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from multiteacher.errors import UserError
from multiteacher.teachers.base import Teacher, fingerprint_callable, fingerprint_obj
from multiteacher.teachers.cache import CachedArray, cached_outputs

TEACHER_DIM = 1  # the teacher axis of every stack: (B, K, ...)


def _check_stackable(names: Sequence[str], outs: Sequence[Any]) -> None:
    shapes = {tuple(o.shape) for o in outs}
    if len(shapes) > 1:
        desc = ", ".join(f"{n}: {tuple(o.shape)}" for n, o in zip(names, outs))
        raise UserError(
            f"teacher outputs have different shapes and cannot be stacked ({desc}); "
            "map them to a common output space or use predict_dict"
        )


class StackedCache:
    """Cached outputs of every teacher in a pool, read back stacked as ``(B, K, ...)``.

    Made by `TeacherPool.cached_outputs`; indexing with sample positions (or `by_id` with sample
    ids) reads each teacher's memory-mapped shards and stacks them on axis 1, in pool order.

    Args:
        arrays: one `CachedArray` per teacher, by name, in pool order.

    Example:
        >>> cached = pool.cached_outputs(x, ids, data_fp, root=cache_dir)  # doctest: +SKIP
        >>> cached[[0, 1, 2]].shape  # (B, K, C)                          # doctest: +SKIP
        (3, 2, 10)
    """

    def __init__(self, arrays: dict[str, CachedArray]) -> None:
        self.arrays = arrays
        self.names = list(arrays)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def __getitem__(self, key: Any) -> np.ndarray:
        outs = [a[key] for a in self.arrays.values()]
        _check_stackable(self.names, outs)
        return np.stack(outs, axis=TEACHER_DIM)

    def by_id(self, ids: Sequence[Any]) -> np.ndarray:
        """Outputs of the samples named by `ids`, stacked ``(B, K, ...)``.

        Args:
            ids: sample ids as given to `cached_outputs`.

        Returns:
            array ``(len(ids), K, ...)``.
        """
        outs = [a.by_id(ids) for a in self.arrays.values()]
        _check_stackable(self.names, outs)
        return np.stack(outs, axis=TEACHER_DIM)

    def torch(self, key: Any) -> torch.Tensor:
        """`self[key]` as a tensor ``(B, K, ...)``.

        Args:
            key: sample positions (anything numpy indexing takes).

        Returns:
            tensor ``(B, K, ...)`` sharing memory with the read array.
        """
        return torch.from_numpy(self[key])


class TeacherPool:
    """An ordered set of teachers with unique names, predicted together as ``(B, K, ...)``.

    The pool is how a student sees its teachers: one `predict` call runs every teacher on the
    batch and stacks their outputs on axis 1, ready for the consensus ops, a `Router` or
    `multi_teacher_kd`. `cached_outputs` scores a whole dataset once into the on-disk teacher cache.

    Args:
        teachers: objects following the `Teacher` protocol (`ModuleTeacher`, `PrecomputedTeacher`,
            or your own); their names must be unique.

    Example:
        >>> import torch, multiteacher as mt
        >>> pool = mt.TeacherPool([mt.PrecomputedTeacher("a", torch.tensor([[1.0], [2.0]])),
        ...                        mt.PrecomputedTeacher("b", torch.tensor([[3.0], [6.0]]))])
        >>> pool.predict([0, 1]).shape   # (B, K, 1)
        torch.Size([2, 2, 1])
        >>> mt.mean(pool.predict([0, 1])).squeeze(-1)  # over teachers, per sample
        tensor([2., 4.])
    """

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
        """Teacher names in pool order (index k of the teacher axis is `names[k]`)."""
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
        """Each teacher's outputs for `batch`, by name (for teachers whose outputs differ in shape).

        Args:
            batch: whatever the teachers' `predict` takes.

        Returns:
            ``{name: outputs}`` in pool order.
        """
        return {t.name: t.predict(batch) for t in self.teachers}

    def predict(self, batch: Any) -> torch.Tensor:
        """Every teacher's outputs for `batch`, stacked on the teacher axis: ``(B, K, ...)``.

        Args:
            batch: whatever the teachers' `predict` takes.

        Returns:
            tensor ``(B, K, ...)``; ``[:, k]`` is teacher `names[k]`.

        Example:
            >>> y = pool.predict(x)           # doctest: +SKIP
            >>> mt.median(y)                  # consensus over the K teachers: (B, ...)  # doctest: +SKIP
        """
        outs = [torch.as_tensor(o) for o in self.predict_dict(batch).values()]
        _check_stackable(self.names, outs)
        return torch.stack(outs, dim=TEACHER_DIM)

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
        """Cache each teacher's outputs on `data` once (see `cached_outputs`) and return them stacked.

        A second call with the same teachers and data reads the cache instead of predicting; a
        changed teacher (weights, config) or data fingerprint computes afresh.

        Args:
            data: an indexable dataset (or tensor) the teachers predict on.
            ids: one stable id per sample of `data` (joins the cache key).
            data_fp: fingerprint of the data (e.g. `data_fingerprint(...)`).
            root: cache directory (default: the user cache dir / ``MULTITEACHER_CACHE``).
            predict_fns: per-teacher overrides of how it is called (e.g. to pick features); the
                override's code (`fingerprint_callable`) joins the cache key, so it never reuses the
                plain outputs, nor another override's.
            **kwargs: passed on (`shard_size`, `batch_size`, `rank`, `world`, `dtype`, `progress`, ...).

        Returns:
            a `StackedCache`; ``cached[positions]`` is an array ``(B, K, ...)``.

        Example:
            >>> cached = pool.cached_outputs(x, ids, mt.data_fingerprint(ids=ids), root="/tmp/c")  # doctest: +SKIP
            >>> targets = cached.torch(batch_positions)   # (B, K, C)  # doctest: +SKIP
        """
        predict_fns = predict_fns or {}
        arrays = {}
        for t in self.teachers:
            fn = predict_fns.get(t.name)
            fp = t.fingerprint
            if fn is not None:
                fp = f"{fp}:{fingerprint_callable(fn, f'predict_fns[{t.name!r}]')}"
            arrays[t.name] = cached_outputs(
                fn or t.predict, data, ids, teacher_fp=fp, data_fp=data_fp, root=root, **kwargs
            )
        return StackedCache(arrays)
