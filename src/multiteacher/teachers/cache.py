"""On-disk cache of teacher outputs, keyed by (teacher fingerprint, data fingerprint, sample ids).

Storage: one plain NumPy `.npy` file per shard of `shard_size` consecutive samples, read with
`np.load(mmap_mode="r")`. We chose `.npy` because it is the simplest format that memory-maps with
zero copies and zero extra dependencies (a 128-byte header, then raw C-order bytes), so a cached
epoch is read at page-cache speed and only the rows a batch touches are paged in; each shard is
one ordinary file, which makes atomic writes (temp + fsync + rename), per-shard SHA-256 checksums
and per-rank writing trivial. safetensors would also memory-map but adds nothing for one array per
shard; Arrow and zarr bring dependencies and chunk/compression layers teacher logits and feature
maps don't need.

Layout of one cache entry (`<cache dir>/teacher-outputs/<key>/`, never the data directory):

    meta.json              key parts, number of samples, shard size, number of shards
    ids.json               the sample ids, in order (row i of the cache is sample ids[i])
    shard-00000.npy        outputs of samples [0, shard_size)
    shard-00000.json       that shard's rows, bytes, dtype, shape and SHA-256 (written after it)
    manifest.json          all shards' checksums, written once the cache is complete

The key hashes the teacher fingerprint, the data fingerprint, the ids, the shard size and the
storage dtype (`dtype=np.float16` halves a cache of float32 outputs), so a
changed teacher or dataset never reuses stale outputs. Shard `s` belongs to rank `s % world`:
each process writes only its shards (no gather) and the files are byte-identical whatever the
number of processes. A fill skips shards whose size and checksum match their sidecar, so a killed
fill resumes where it stopped, and a truncated or corrupted shard is recomputed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from multiteacher.data.registry import resolve_cache_dir, resolve_data_dir
from multiteacher.errors import DataError, UserError
from multiteacher.io import TMP_MARK, atomic_open, atomic_write_json, sha256_file
from multiteacher.killpoints import killpoint
from multiteacher.progress import progress as progress_bar

FORMAT_VERSION = 1
SUBDIR = "teacher-outputs"

# (path, inode, size, mtime_ns) of shards whose checksum this process already verified
_verified: set[tuple[str, int, int, int]] = set()


def _plain_id(i: Any) -> int | str:
    if isinstance(i, np.generic) or (hasattr(i, "item") and not isinstance(i, int | str)):
        i = i.item()
    if isinstance(i, bool) or not isinstance(i, int | str):
        raise UserError(f"sample id {i!r} has type {type(i).__name__}; sample ids must be int or str")
    return i


def ids_fingerprint(ids: Sequence[Any]) -> str:
    """SHA-256 of the ordered sample ids."""
    text = json.dumps([_plain_id(i) for i in ids], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _to_numpy(out: Any) -> np.ndarray:
    if hasattr(out, "detach"):  # torch.Tensor, without importing torch here
        out = out.detach().cpu()
        if str(out.dtype) == "torch.bfloat16":
            out = out.float()
        out = out.numpy()
    if isinstance(out, dict | list | tuple):
        raise UserError(
            f"teacher predict returned a {type(out).__name__}; a TeacherCache stores one array per "
            "teacher — cache each output in its own TeacherCache (e.g. teacher_fp + ':features')"
        )
    arr = np.asarray(out)
    if arr.dtype == object:
        raise UserError("teacher predict returned an object array; return a numeric array or tensor")
    return arr


def _get_batch(data: Any, idx: np.ndarray, collate: Callable[[list[Any]], Any] | None) -> Any:
    """The batch of samples at positions `idx` from an array, a tensor, a dataset or a loader fn."""
    if isinstance(data, np.ndarray):
        return data[idx]
    if type(data).__module__.startswith("torch") and hasattr(data, "index_select"):
        import torch

        return data[torch.from_numpy(idx)]
    if hasattr(data, "__getitem__"):
        samples = [data[int(i)] for i in idx]
        if collate is None:
            from torch.utils.data import default_collate

            collate = default_collate
        return collate(samples)
    if callable(data):
        return data(idx)
    raise UserError(
        f"cannot read samples from a {type(data).__name__}: pass an array, a map-style dataset "
        "(len + indexing) or a function mapping sample positions to a batch"
    )


def _check_not_in_data_dir(root: Path) -> None:
    data = resolve_data_dir()
    try:
        root.resolve().relative_to(data.resolve())
    except ValueError:
        return
    raise UserError(
        f"teacher cache root {root} is inside the data directory {data}, which may be read-only — "
        "use the cache directory (--cache-dir or MULTITEACHER_CACHE)"
    )


class CachedArray:
    """A read-only view over memory-mapped shards, indexed by position (row) like an array.

    `a[i]`, `a[slice]`, `a[positions]` and `a.by_id(ids)` return NumPy arrays holding just those
    rows; `a.shards` are the raw `np.memmap`s for zero-copy access; `np.asarray(a)` materialises all.
    Pickling (e.g. into spawned DataLoader workers) sends the shard paths, not the data.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], shard_size: int, ids: Sequence[Any]) -> None:
        self.paths = [str(p) for p in paths]
        self.shards = [np.load(p, mmap_mode="r", allow_pickle=False) for p in self.paths]
        self.shard_size = shard_size
        self.ids = list(ids)
        self._index: dict[Any, int] | None = None
        first = self.shards[0]
        self.dtype = first.dtype
        self.shape = (sum(len(s) for s in self.shards), *first.shape[1:])

    def __reduce__(self) -> tuple[Any, ...]:
        return (CachedArray, (self.paths, self.shard_size, self.ids))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _rows(self, pos: np.ndarray) -> np.ndarray:
        pos = np.asarray(pos, dtype=np.int64)
        n = len(self)
        pos = np.where(pos < 0, pos + n, pos)
        if pos.size and (pos.min() < 0 or pos.max() >= n):
            raise IndexError(f"row index out of range for cached outputs of {n} samples")
        out = np.empty((len(pos), *self.shape[1:]), dtype=self.dtype)
        shard = pos // self.shard_size
        local = pos % self.shard_size
        for s in np.unique(shard):
            m = shard == s
            out[m] = self.shards[s][local[m]]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple[Any, ...] = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, int | np.integer):
            k = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= k < len(self):
                raise IndexError(f"row {key} out of range for {len(self)} samples")
            row = self.shards[k // self.shard_size][k % self.shard_size]
            return np.array(row[rest] if rest else row)
        if isinstance(key, slice):
            pos = np.arange(len(self))[key]
        else:
            key = np.asarray(key.cpu() if hasattr(key, "cpu") else key)
            pos = np.flatnonzero(key) if key.dtype == bool else key
        out = self._rows(pos)
        return out[(slice(None), *rest)] if rest else out

    def by_id(self, ids: Sequence[Any]) -> np.ndarray:
        """Rows for sample `ids` (DataError naming the first id not in the cache)."""
        if self._index is None:
            self._index = {i: r for r, i in enumerate(self.ids)}
        try:
            pos = np.fromiter((self._index[_plain_id(i)] for i in ids), dtype=np.int64, count=len(ids))
        except KeyError as e:
            raise DataError(f"sample id {e.args[0]!r} is not in this teacher cache") from None
        return self._rows(pos)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate([np.asarray(s) for s in self.shards])
        return out.astype(dtype, copy=False) if dtype is not None else out

    def __repr__(self) -> str:
        return f"CachedArray(shape={self.shape}, dtype={self.dtype}, shards={len(self.shards)})"


class TeacherCache:
    """One teacher's outputs on one ordered set of samples, stored as memory-mapped shards.

    Scoring a teacher is often the slowest part of distillation; the cache scores each sample
    once, keyed by (teacher fingerprint, data fingerprint, ids, shard size, dtype), so a changed
    teacher or dataset never reuses stale outputs and a killed fill resumes shard by shard. See
    the module docstring for the on-disk layout. Most code calls `cached_outputs` (or
    `TeacherPool.cached_outputs`) instead of using this class directly.

    Args:
        root: cache directory (None: ``--cache-dir`` > ``MULTITEACHER_CACHE`` > the user cache
            dir); it must not be inside the data directory.
        teacher_fp: the teacher's fingerprint (`Teacher.fingerprint`).
        data_fp: the data's fingerprint (e.g. `data_fingerprint(...)`).
        ids: one unique, stable id per sample, in order (row i is sample ``ids[i]``).
        shard_size: samples per shard file.
        dtype: storage dtype (None: the teacher's; ``np.float16`` halves a float32 cache).

    Example:
        >>> cache = TeacherCache(None, teacher.fingerprint, data_fp, ids)          # doctest: +SKIP
        >>> cache.fill(teacher.predict, dataset, batch_size=64, rank=rank, world=world)  # doctest: +SKIP
        >>> logits = cache.open()   # CachedArray; logits[batch_positions] -> np.ndarray  # doctest: +SKIP
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None,
        teacher_fp: str,
        data_fp: str,
        ids: Sequence[Any],
        *,
        shard_size: int = 1024,
        dtype: Any = None,
    ) -> None:
        if shard_size < 1:
            raise UserError(f"shard_size must be >= 1, got {shard_size}")
        self.root = resolve_cache_dir(root)
        _check_not_in_data_dir(self.root)
        self.ids = [_plain_id(i) for i in ids]
        if not self.ids:
            raise UserError("TeacherCache needs at least one sample id")
        if len(set(self.ids)) != len(self.ids):
            seen: set[Any] = set()
            dup = next(i for i in self.ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise DataError(f"duplicate sample id {dup!r} in the ids given to TeacherCache; ids must be unique")
        self.teacher_fp = str(teacher_fp)
        self.data_fp = str(data_fp)
        self.ids_fp = ids_fingerprint(self.ids)
        self.shard_size = int(shard_size)
        self.n = len(self.ids)
        self.num_shards = -(-self.n // self.shard_size)
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.meta = {
            "format": FORMAT_VERSION,
            "teacher_fp": self.teacher_fp,
            "data_fp": self.data_fp,
            "ids_fp": self.ids_fp,
            "n": self.n,
            "shard_size": self.shard_size,
            "num_shards": self.num_shards,
            "dtype": "native" if self.dtype is None else self.dtype.str,
        }
        self.key = hashlib.sha256(json.dumps(self.meta, sort_keys=True).encode()).hexdigest()[:32]
        self.dir = self.root / SUBDIR / self.key

    # -- paths
    def shard_path(self, s: int) -> Path:
        return self.dir / f"shard-{s:05d}.npy"

    def _sidecar(self, s: int) -> Path:
        return self.dir / f"shard-{s:05d}.json"

    def shard_rows(self, s: int) -> range:
        """Positions (rows) that shard `s` holds."""
        return range(s * self.shard_size, min(self.n, (s + 1) * self.shard_size))

    def shards_of(self, rank: int, world: int) -> list[int]:
        """Shards rank `rank` of `world` writes: `s % world == rank`."""
        if world < 1 or not 0 <= rank < world:
            raise UserError(f"rank {rank} / world {world} is invalid: need 0 <= rank < world")
        return list(range(rank, self.num_shards, world))

    # -- state
    def _read_sidecar(self, s: int) -> dict[str, Any] | None:
        try:
            info = json.loads(self._sidecar(s).read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    def shard_ok(self, s: int, checksum: bool = False) -> bool:
        """True when shard `s` is written, has the right size and (if `checksum`) the right SHA-256."""
        info = self._read_sidecar(s)
        if info is None or info.get("rows") != len(self.shard_rows(s)):
            return False
        path = self.shard_path(s)
        try:
            st = path.stat()
        except OSError:
            return False
        if st.st_size != info.get("bytes"):
            return False
        if checksum:
            stamp = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp not in _verified:
                if sha256_file(path) != info.get("sha256"):
                    return False
                _verified.add(stamp)
        return True

    def missing_shards(self, checksum: bool = False) -> list[int]:
        """Shards not (validly) written yet."""
        return [s for s in range(self.num_shards) if not self.shard_ok(s, checksum)]

    def is_complete(self, checksum: bool = False) -> bool:
        """All shards present with the right sizes (and checksums, if asked)."""
        return not self.missing_shards(checksum)

    def verify(self) -> list[int]:
        """Shards whose size or checksum is wrong or that are missing (full read of every shard)."""
        return self.missing_shards(checksum=True)

    # -- writing
    def _write_header(self) -> None:
        meta_path = self.dir / "meta.json"
        try:
            if json.loads(meta_path.read_text()) == self.meta and (self.dir / "ids.json").is_file():
                return
        except (OSError, ValueError):
            pass
        atomic_write_json(self.dir / "ids.json", self.ids)
        atomic_write_json(meta_path, self.meta)

    def _clean_tmp(self, s: int) -> None:
        for name in (self.shard_path(s).name, self._sidecar(s).name):
            for p in self.dir.glob(f".{name}{TMP_MARK}*"):
                p.unlink(missing_ok=True)

    def write_shard(self, s: int, arr: np.ndarray) -> None:
        """Atomically write shard `s` (then its sidecar with size and checksum)."""
        arr = np.ascontiguousarray(arr)
        if len(arr) != len(self.shard_rows(s)):
            raise DataError(f"shard {s} needs {len(self.shard_rows(s))} rows, teacher gave {len(arr)}")
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        data = buf.getbuffer()
        self._clean_tmp(s)
        self._sidecar(s).unlink(missing_ok=True)  # the shard is invalid until its new sidecar lands
        with atomic_open(self.shard_path(s), "wb") as f:
            half = len(data) // 2
            f.write(data[:half])
            f.flush()
            killpoint("cache/shard_write")
            f.write(data[half:])
        info = {
            "file": self.shard_path(s).name,
            "shard": s,
            "start": self.shard_rows(s).start,
            "rows": len(arr),
            "bytes": len(data),
            "dtype": arr.dtype.str,
            "shape": list(arr.shape),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        atomic_write_json(self._sidecar(s), info)

    def fill(
        self,
        predict_fn: Callable[[Any], Any],
        data: Any,
        *,
        batch_size: int | None = None,
        collate: Callable[[list[Any]], Any] | None = None,
        rank: int = 0,
        world: int = 1,
        checksum: bool = True,
        progress: bool = True,
        allow_nonfinite: bool = False,
    ) -> int:
        """Compute and write this rank's missing shards; returns how many shards it computed.

        `data[i]` (or row `i` of an array/tensor) is sample `ids[i]`; `data` may also be a function
        mapping an array of positions to a batch. `predict_fn(batch)` returns an array or tensor
        with one row per sample. Shards already written with a matching size (and checksum, when
        `checksum`) are skipped, so a killed fill resumes; others, e.g. truncated, are recomputed.
        A NaN or infinite output is a DataError naming the sample (nothing is cached), unless
        `allow_nonfinite` (for outputs that use NaN on purpose, e.g. invalid pixels).
        """
        own = self.shards_of(rank, world)
        if hasattr(data, "__len__") and not callable(data) and len(data) != self.n:
            raise DataError(f"data has {len(data)} samples but the cache has {self.n} ids; pass one id per sample")
        bs = int(batch_size or self.shard_size)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_header()
        todo = [s for s in own if not self.shard_ok(s, checksum)]
        for s in progress_bar(todo, desc=f"teacher cache {self.key[:8]} rank {rank}", enabled=bool(progress)):
            rows = self.shard_rows(s)
            outs = []
            for b in range(rows.start, rows.stop, bs):
                idx = np.arange(b, min(b + bs, rows.stop))
                out = _to_numpy(predict_fn(_get_batch(data, idx, collate)))
                if out.ndim == 0 or len(out) != len(idx):
                    raise DataError(
                        f"teacher returned {0 if out.ndim == 0 else len(out)} rows for a batch of "
                        f"{len(idx)} samples (ids {self.ids[idx[0]]!r}..); return one row per sample"
                    )
                if not allow_nonfinite:
                    self._check_finite(out, idx)
                outs.append(out)
            arr = np.concatenate(outs) if len(outs) > 1 else outs[0]
            if self.dtype is not None:
                arr = arr.astype(self.dtype)
            self.write_shard(s, arr)
            killpoint("cache/after_shard")
        self.finalize()
        return len(todo)

    def _check_finite(self, out: np.ndarray, idx: np.ndarray) -> None:
        """DataError naming the first sample whose teacher output holds NaN or inf."""
        if out.dtype.kind not in "fc" or np.isfinite(out).all():
            return
        flat = out.reshape(len(out), -1)
        ok = np.isfinite(flat)
        bad = int(np.flatnonzero(~ok.all(axis=1))[0])
        value = flat[bad][~ok[bad]][0]
        raise DataError(
            f"teacher {self.teacher_fp[:12]} output for sample id {self.ids[int(idx[bad])]!r} is {value} "
            f"(not finite) and was not cached — fix the teacher or its input (or pass allow_nonfinite=True)"
        )

    def finalize(self) -> bool:
        """Write `manifest.json` (per-shard checksums) if every shard is present; True if complete."""
        if not self.is_complete():
            return False
        infos = [self._read_sidecar(s) or {} for s in range(self.num_shards)]
        kinds = {(i["dtype"], tuple(i["shape"][1:])) for i in infos}
        if len(kinds) > 1:
            raise DataError(
                f"teacher cache {self.dir}: shards disagree on dtype/shape {sorted(kinds)}; the teacher "
                "changed while filling — delete the directory and fill again"
            )
        manifest = {
            **self.meta,
            "complete": True,
            "row_dtype": infos[0]["dtype"],
            "row_shape": infos[0]["shape"][1:],
            "shards": infos,
        }
        path = self.dir / "manifest.json"
        try:
            if json.loads(path.read_text()) == manifest:
                return True
        except (OSError, ValueError):
            pass
        atomic_write_json(path, manifest)
        return True

    def wait(self, timeout: float | None = None, poll: float = 0.5) -> None:
        """Block until every rank's shards are written (for multi-process fills)."""
        t0 = time.monotonic()
        while not self.finalize():
            if timeout is not None and time.monotonic() - t0 > timeout:
                missing = self.missing_shards()
                raise DataError(
                    f"teacher cache {self.dir} still misses shards {missing[:8]} after {timeout:.0f}s; "
                    "did another rank fail? run the fill again"
                )
            time.sleep(poll)

    # -- reading
    def open(self) -> CachedArray:
        """Memory-map the complete cache (DataError if shards are missing or truncated)."""
        missing = self.missing_shards()
        if missing:
            raise DataError(
                f"teacher cache {self.dir} is incomplete or damaged ({len(missing)} of {self.num_shards} "
                f"shards missing, e.g. {missing[0]}); fill it again to recompute them"
            )
        self.finalize()
        return CachedArray([self.shard_path(s) for s in range(self.num_shards)], self.shard_size, self.ids)

    def read(self, ids: Sequence[Any] | None = None) -> np.ndarray:
        """Outputs for sample `ids` (all samples if None) as an in-memory array."""
        arr = self.open()
        return np.asarray(arr) if ids is None else arr.by_id(ids)


def cached_outputs(
    predict_fn: Callable[[Any], Any],
    data: Any,
    ids: Sequence[Any],
    *,
    teacher_fp: str,
    data_fp: str,
    root: str | os.PathLike[str] | None = None,
    shard_size: int = 1024,
    batch_size: int | None = None,
    collate: Callable[[list[Any]], Any] | None = None,
    rank: int = 0,
    world: int = 1,
    dtype: Any = None,
    checksum: bool = True,
    wait_timeout: float | None = 3600.0,
    progress: bool = True,
    allow_nonfinite: bool = False,
) -> CachedArray:
    """Score `data` with `predict_fn` into the teacher cache once, then memory-map the outputs.

    The first call fills the cache (this rank's shards; with ``world > 1`` it then waits for the
    other ranks); later calls with the same key only open it. Use it for any callable teacher;
    `TeacherPool.cached_outputs` does this for every teacher of a pool and stacks them ``(B, K, ...)``.

    Args:
        predict_fn: maps a batch of `data` to outputs (tensor or array, first axis the batch).
        data: an indexable dataset, tensor or array; batches are ``data[positions]`` (or
            `collate` of the items).
        ids: one unique, stable id per sample of `data`, in order.
        teacher_fp: fingerprint of the teacher (changes when its outputs could change).
        data_fp: fingerprint of the data.
        root: cache directory (None: ``MULTITEACHER_CACHE`` or the user cache dir).
        shard_size: samples per shard file.
        batch_size: samples per `predict_fn` call (None: one shard at a time).
        collate: builds a batch from a list of items when `data` is not sliceable.
        rank: this process's rank (it writes shards ``s % world == rank``).
        world: number of processes filling the cache together.
        dtype: storage dtype (None: the outputs' own).
        checksum: verify shards' SHA-256 before reusing them.
        wait_timeout: seconds to wait for other ranks' shards.
        progress: show a progress bar while filling.
        allow_nonfinite: accept NaN/inf outputs instead of raising a DataError.

    Returns:
        a `CachedArray`: ``arr[positions]`` and ``arr.by_id(ids)`` read rows as numpy arrays.

    Example:
        >>> import numpy as np, multiteacher as mt
        >>> x = np.arange(6, dtype=np.float32).reshape(3, 2)
        >>> arr = mt.cached_outputs(lambda b: 2 * b, x, ["a", "b", "c"], teacher_fp="double",
        ...                         data_fp="x", root=tmp_cache, progress=False)  # doctest: +SKIP
        >>> arr.by_id(["c"])  # doctest: +SKIP
        array([[ 8., 10.]], dtype=float32)
    """
    cache = TeacherCache(root, teacher_fp, data_fp, ids, shard_size=shard_size, dtype=dtype)
    cache.fill(
        predict_fn,
        data,
        batch_size=batch_size,
        collate=collate,
        rank=rank,
        world=world,
        checksum=checksum,
        progress=progress,
        allow_nonfinite=allow_nonfinite,
    )
    if world > 1:
        cache.wait(wait_timeout)
    return cache.open()


def teacher_outputs(teacher: Any, data: Any, ids: Sequence[Any], data_fp: str, **kwargs: Any) -> CachedArray:
    """`cached_outputs` for a `Teacher`: uses its `predict` and `fingerprint`.

    Args:
        teacher: an object following the `Teacher` protocol.
        data: the dataset it predicts on.
        ids: one unique, stable id per sample.
        data_fp: fingerprint of the data.
        **kwargs: passed to `cached_outputs`.

    Returns:
        the memory-mapped `CachedArray` of the teacher's outputs.

    Example:
        >>> arr = teacher_outputs(mt.ModuleTeacher(net, "t"), x, ids, data_fp)  # doctest: +SKIP
    """
    return cached_outputs(teacher.predict, data, ids, teacher_fp=teacher.fingerprint, data_fp=data_fp, **kwargs)
