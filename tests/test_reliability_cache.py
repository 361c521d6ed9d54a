"""Cache integrity end to end through the `Teacher` adapters: a changed teacher (weights or config) or
changed data never reuses cached outputs, and a damaged shard is recomputed, never served.
(Key composition and shard-level checks: tests/test_cache.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from multiteacher.teachers.base import ModuleTeacher, data_fingerprint
from multiteacher.teachers.cache import TeacherCache, teacher_outputs


def _teacher(config: dict | None = None) -> ModuleTeacher:
    torch.manual_seed(0)
    return ModuleTeacher(torch.nn.Linear(4, 3), "lin", config=config or {"t": 1})


def _expected(teacher: ModuleTeacher, x: torch.Tensor) -> np.ndarray:
    return teacher.predict(x).numpy()


def test_changed_teacher_weights_or_config_never_reuse_the_cache(tmp_path: Path) -> None:
    x = torch.randn(10, 4)
    ids = list(range(10))
    kw = {"data_fp": "d", "root": tmp_path, "shard_size": 4, "progress": False}
    teacher = _teacher()
    first = np.asarray(teacher_outputs(teacher, x, ids, **kw))
    np.testing.assert_array_equal(first, _expected(teacher, x))
    with torch.no_grad():
        teacher.module.weight.add_(1.0)  # changed weights, same object
    second = np.asarray(teacher_outputs(teacher, x, ids, **kw))
    np.testing.assert_array_equal(second, _expected(teacher, x))
    assert not np.array_equal(first, second)
    third = np.asarray(teacher_outputs(_teacher({"t": 2}), x, ids, **kw))  # same weights as `first`, new config
    np.testing.assert_array_equal(third, first)
    assert len(list((tmp_path / "teacher-outputs").iterdir())) == 3  # three keys, nothing reused


def test_changed_data_never_reuses_the_cache(tmp_path: Path) -> None:
    f = tmp_path / "data.npy"
    np.save(f, np.ones((6, 4), np.float32))
    teacher = _teacher()
    kw = {"root": tmp_path / "c", "shard_size": 4, "progress": False}
    a = teacher_outputs(teacher, torch.from_numpy(np.load(f)), list(range(6)), data_fingerprint(files=[f]), **kw)
    np.save(f, np.full((6, 4), 2.0, np.float32))
    x = torch.from_numpy(np.load(f))
    b = teacher_outputs(teacher, x, list(range(6)), data_fingerprint(files=[f]), **kw)
    np.testing.assert_array_equal(np.asarray(b), _expected(teacher, x))
    assert not np.array_equal(np.asarray(a), np.asarray(b))


def test_damaged_shard_is_recomputed_not_served(tmp_path: Path) -> None:
    teacher = _teacher()
    x = torch.randn(10, 4)
    kw = {"data_fp": "d", "root": tmp_path, "shard_size": 4, "progress": False}
    good = np.asarray(teacher_outputs(teacher, x, list(range(10)), **kw))
    cache = TeacherCache(tmp_path, teacher.fingerprint, "d", list(range(10)), shard_size=4)
    for s, damage in ((0, "flip"), (2, "truncate")):
        raw = bytearray(cache.shard_path(s).read_bytes())
        if damage == "flip":
            raw[-1] ^= 0xFF  # same size: only the checksum can tell
        else:
            raw = raw[:-5]
        cache.shard_path(s).write_bytes(bytes(raw))
    assert set(cache.verify()) == {0, 2}
    again = np.asarray(teacher_outputs(teacher, x, list(range(10)), **kw))
    np.testing.assert_array_equal(again, good)
    assert cache.verify() == []
