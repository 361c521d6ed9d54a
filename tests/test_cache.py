"""Teacher-output cache: keys, sharding across processes, kill + resume, damaged shards."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from multiteacher.errors import DataError, UserError
from multiteacher.io import leftover_temp_files
from multiteacher.teachers.cache import TeacherCache, cached_outputs, teacher_outputs

N, SHARD = 50, 7  # 8 shards, the last one holds a single row
IDS = [f"s{i}" for i in range(N)]

FILL = """
import sys
import numpy as np
from multiteacher.teachers.cache import TeacherCache
root, rank, world = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
N, SHARD = 50, 7
X = (np.arange(N * 4, dtype=np.float32).reshape(N, 4) / N)
W = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
cache = TeacherCache(root, "teacher-a", "data-a", [f"s{i}" for i in range(N)], shard_size=SHARD)
cache.fill(lambda x: np.tanh(x @ W), X, batch_size=3, rank=rank, world=world, progress=False)
"""


def _data() -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(N * 4, dtype=np.float32).reshape(N, 4) / N
    w = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    return x, w


def _spawn(root: Path, rank: int = 0, world: int = 1, kill_at: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MULTITEACHER_KILL_AT", None)
    if kill_at:
        env["MULTITEACHER_KILL_AT"] = kill_at
    return subprocess.Popen([sys.executable, "-c", FILL, str(root), str(rank), str(world)], env=env)


def _fill(root: Path, rank: int = 0, world: int = 1, kill_at: str | None = None) -> int:
    return _spawn(root, rank, world, kill_at).wait(timeout=60)


def _files(root: Path) -> dict[str, bytes]:
    """All cache files (relative path -> bytes); there must be exactly one cache entry."""
    entries = list((root / "teacher-outputs").iterdir())
    assert len(entries) == 1
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(entries[0].rglob("*")) if p.is_file()}


def _cache(root: Path, teacher: str = "teacher-a", data: str = "data-a", ids=IDS) -> TeacherCache:
    return TeacherCache(root, teacher, data, ids, shard_size=SHARD)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("ref")
    assert _fill(root) == 0
    files = _files(root)
    assert sum(n.endswith(".npy") for n in files) == 8 and any(n.endswith("manifest.json") for n in files)
    return files


def test_two_processes_equal_one(tmp_path: Path, reference: dict[str, bytes]) -> None:
    procs = [_spawn(tmp_path, rank, 2) for rank in (0, 1)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    _cache(tmp_path).finalize()  # whichever rank finished last wrote it; make sure either way
    assert _files(tmp_path) == reference


def test_one_rank_writes_only_its_shards(tmp_path: Path) -> None:
    assert _fill(tmp_path, rank=1, world=3) == 0
    cache = _cache(tmp_path)
    assert cache.missing_shards() == [0, 2, 3, 5, 6]
    assert not cache.is_complete() and not (cache.dir / "manifest.json").exists()
    with pytest.raises(DataError, match="incomplete"):
        cache.open()


@pytest.mark.parametrize("kill_at", ["cache/shard_write@3", "cache/after_shard@5"])
def test_kill_during_fill_then_resume(tmp_path: Path, reference: dict[str, bytes], kill_at: str) -> None:
    assert _fill(tmp_path, kill_at=kill_at) == -9  # SIGKILL
    cache = _cache(tmp_path)
    done = 2 if kill_at.endswith("@3") else 5
    assert cache.missing_shards() == list(range(done, 8))
    assert bool(leftover_temp_files(tmp_path)) == ("shard_write" in kill_at)  # killed mid-write
    # resume in-process and count the work: only the missing shards are computed
    x, w = _data()
    calls: list[int] = []
    cache.fill(lambda b: calls.append(len(b)) or np.tanh(b @ w), x, batch_size=3, progress=False)
    assert sum(calls) == N - done * SHARD
    assert leftover_temp_files(tmp_path) == []
    assert _files(tmp_path) == reference


def test_changed_teacher_data_or_ids_changes_key(tmp_path: Path) -> None:
    x, w = _data()
    a = _cache(tmp_path)
    a.fill(lambda b: np.tanh(b @ w), x, progress=False)
    others = [
        _cache(tmp_path, teacher="teacher-b"),
        _cache(tmp_path, data="data-b"),
        _cache(tmp_path, ids=IDS[::-1]),
        TeacherCache(tmp_path, "teacher-a", "data-a", IDS, shard_size=SHARD + 1),
        TeacherCache(tmp_path, "teacher-a", "data-a", IDS, shard_size=SHARD, dtype=np.float16),
    ]
    assert len({a.dir, *(o.dir for o in others)}) == 6
    assert a.is_complete() and not any(o.is_complete() for o in others)
    assert _cache(tmp_path).is_complete()  # same key again: reused


def test_truncated_shard_detected_and_recomputed(tmp_path: Path) -> None:
    x, w = _data()
    cache = _cache(tmp_path)
    cache.fill(lambda b: np.tanh(b @ w), x, progress=False)
    before = _files(tmp_path)
    path = cache.shard_path(3)
    path.write_bytes(path.read_bytes()[:100])
    assert cache.missing_shards() == [3] and not cache.is_complete()
    with pytest.raises(DataError, match="incomplete or damaged"):
        cache.open()
    calls: list[int] = []
    assert cache.fill(lambda b: calls.append(len(b)) or np.tanh(b @ w), x, progress=False) == 1
    assert sum(calls) == SHARD
    assert _files(tmp_path) == before


def test_corrupted_shard_detected_by_checksum(tmp_path: Path) -> None:
    x, w = _data()
    cache = _cache(tmp_path)
    cache.fill(lambda b: np.tanh(b @ w), x, progress=False)
    before = _files(tmp_path)
    raw = bytearray(cache.shard_path(1).read_bytes())
    raw[-5] ^= 0xFF  # same size, different bytes
    cache.shard_path(1).write_bytes(bytes(raw))
    assert cache.is_complete()  # the cheap size check cannot see it ...
    assert cache.verify() == [1]  # ... the checksum does
    assert cache.fill(lambda b: np.tanh(b @ w), x, progress=False) == 1
    assert _files(tmp_path) == before and cache.verify() == []


def test_read_by_ids_and_positions(tmp_path: Path) -> None:
    x, w = _data()
    arr = cached_outputs(
        lambda b: np.tanh(b @ w),
        x,
        IDS,
        teacher_fp="t",
        data_fp="d",
        root=tmp_path,
        shard_size=SHARD,
        progress=False,
    )
    assert arr.shape == (N, 3) and len(arr) == N and arr.dtype == np.float32
    assert all(isinstance(s, np.memmap) for s in arr.shards)
    want = np.asarray(arr)
    np.testing.assert_allclose(want, np.tanh(x @ w), rtol=1e-6)  # BLAS may round per batch size
    pos = np.random.default_rng(1).permutation(N)[:17]
    np.testing.assert_array_equal(arr[pos], want[pos])
    np.testing.assert_array_equal(arr[torch.from_numpy(pos)], want[pos])
    np.testing.assert_array_equal(arr[5:30:4], want[5:30:4])
    np.testing.assert_array_equal(arr[-1], want[-1])
    np.testing.assert_array_equal(arr[pos, 1], want[pos, 1])
    np.testing.assert_array_equal(arr.by_id(["s9", "s0", "s49"]), want[[9, 0, 49]])
    cache = TeacherCache(tmp_path, "t", "d", IDS, shard_size=SHARD)
    np.testing.assert_array_equal(cache.read(["s3"]), want[[3]])
    with pytest.raises(DataError, match="'nope'"):
        arr.by_id(["nope"])
    blob = pickle.dumps(arr)
    assert len(blob) < 4000  # paths, not data
    np.testing.assert_array_equal(pickle.loads(blob)[pos], want[pos])


def test_torch_dataset_teacher_and_dtype(tmp_path: Path) -> None:
    """A map-style dataset of (x, y) pairs, a torch teacher and float16 storage."""
    from multiteacher.teachers.base import ModuleTeacher

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 2)
    x = torch.randn(20, 4)
    dataset = [(x[i], i % 2) for i in range(20)]
    teacher = ModuleTeacher(net, "lin", forward=lambda m, b: m(b[0]))
    arr = teacher_outputs(
        teacher,
        dataset,
        list(range(20)),
        "ds",
        root=tmp_path,
        shard_size=8,
        batch_size=5,
        dtype=np.float16,
        progress=False,
    )
    assert arr.dtype == np.float16
    np.testing.assert_allclose(arr[:], net(x).detach().numpy(), atol=2e-3)


def test_bad_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="duplicate sample id 's1'"):
        TeacherCache(tmp_path, "t", "d", ["s0", "s1", "s1"])
    monkeypatch.setenv("MULTITEACHER_DATA", str(tmp_path / "data"))
    with pytest.raises(UserError, match="inside the data directory"):
        TeacherCache(tmp_path / "data" / "cache", "t", "d", IDS)
    cache = _cache(tmp_path)
    x, _ = _data()
    with pytest.raises(DataError, match="returned 2 rows for a batch of 3"):
        cache.fill(lambda b: b[:2], x, batch_size=3, progress=False)
    with pytest.raises(DataError, match="data has 10 samples"):
        cache.fill(lambda b: b, x[:10], progress=False)
    with pytest.raises(UserError, match="rank 2 / world 2"):
        cache.fill(lambda b: b, x, rank=2, world=2, progress=False)
