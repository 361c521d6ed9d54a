"""Engine text teachers: RunTeacher's explicit missingness, fingerprints, the teacher cache, mixed pools."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from multiteacher.data.ir import IRData
from multiteacher.errors import ConfigError, UserError
from multiteacher.teachers.base import Teacher
from multiteacher.teachers.pool import TeacherPool
from multiteacher.teachers.text import CrossEncoderTeacher, RunTeacher, cached_run, pair_id


def _data() -> IRData:
    cands = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"x": 1.0, "y": 0.5}}
    passages = {"a": "alpha", "b": "beta beta", "c": "gamma", "x": "xi", "y": "upsilon"}
    return IRData("toy", {"q1": "first", "q2": "second"}, passages, cands)


def test_run_teacher_has_no_score_where_it_did_not_retrieve() -> None:
    t = RunTeacher("splade", {"q1": {"a": 9.0, "c": 4.0}, "q3": {"z": 1.0}})
    assert isinstance(t, Teacher)
    out = t.predict([pair_id("q1", "a"), pair_id("q1", "b"), pair_id("q2", "x"), pair_id("q1", "c")])
    assert out.dtype == torch.float64
    assert out[0].item() == 9.0 and out[3].item() == 4.0
    assert math.isnan(out[1].item()) and math.isnan(out[2].item())
    assert t.predict({"ids": [pair_id("q3", "z")]}).tolist() == [1.0]
    with pytest.raises(UserError, match="pair ids under 'ids'"):
        t.predict({"pairs": [("q", "p")]})


def test_run_teacher_from_file_by_rank_and_fingerprint(tmp_path: Path) -> None:
    p = tmp_path / "llm.run"
    p.write_text("q1 Q0 c 1 0.1 llm\nq1 Q0 a 2 0.9 llm\n")
    by_rank = RunTeacher.from_file(p, by="rank")
    by_score = RunTeacher.from_file(p)
    assert by_rank.name == "llm"
    assert by_rank.predict([pair_id("q1", "c"), pair_id("q1", "a")]).tolist() == [-1.0, -2.0]
    assert by_score.predict([pair_id("q1", "c"), pair_id("q1", "a")]).tolist() == [0.1, 0.9]
    assert by_rank.fingerprint != by_score.fingerprint
    fp = by_score.fingerprint
    p.write_text("q1 Q0 c 1 0.2 llm\nq1 Q0 a 2 0.9 llm\n")
    assert RunTeacher.from_file(p).fingerprint != fp  # a changed file never reuses a stale cache
    assert RunTeacher("a", {"q": {"d": 1.0}}).fingerprint != RunTeacher("a", {"q": {"d": 2.0}}).fingerprint


def test_cached_run_keeps_missingness_and_reuses_the_cache(tmp_path: Path) -> None:
    d = _data()
    t = RunTeacher("partial", {"q1": {"a": 5.0, "b": 1.0}, "q2": {"y": 2.0}, "q9": {"n": 0.0}})
    run = cached_run(t, d, tmp_path / "cache", progress=False)
    assert run == {"q1": {"a": 5.0, "b": 1.0}, "q2": {"y": 2.0}}  # c, x: no score; q9 is not a candidate query
    entries = list((tmp_path / "cache" / "teacher-outputs").iterdir())
    assert len(entries) == 1
    stored = np.concatenate([np.load(f) for f in sorted(entries[0].glob("shard-*.npy"))])
    assert int(np.isnan(stored).sum()) == 2  # the cache holds NaN for the two missing pairs

    class Counting:
        name, fingerprint, calls = "len", "fp-len", 0

        def predict(self, batch):
            Counting.calls += 1
            return torch.tensor([float(len(p)) for _, p in batch["pairs"]])

    c = Counting()
    r1 = cached_run(c, d, tmp_path / "cache", batch_size=2, progress=False)
    n = Counting.calls
    assert r1 == {"q1": {"a": 5.0, "b": 9.0, "c": 5.0}, "q2": {"x": 2.0, "y": 7.0}}
    assert cached_run(c, d, tmp_path / "cache", batch_size=2, progress=False) == r1 and Counting.calls == n


def test_mixed_pool_serves_one_batch_to_run_and_live_teachers() -> None:
    class Live:
        name, fingerprint = "live", "fp-live"

        def predict(self, batch):
            return torch.tensor([float(len(q) + len(p)) for q, p in batch["pairs"]], dtype=torch.float64)

    pool = TeacherPool([RunTeacher("run", {"q1": {"a": 2.0}}), Live()])
    batch = {"ids": [pair_id("q1", "a"), pair_id("q1", "b")], "pairs": [("first", "alpha"), ("first", "beta beta")]}
    out = pool.predict_dict(batch)
    assert out["run"][0].item() == 2.0 and math.isnan(out["run"][1].item())
    assert out["live"].tolist() == [10.0, 14.0]


def test_live_teacher_bad_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"teacher 'ce': cannot load the model '.*nowhere'"):
        CrossEncoderTeacher("ce", str(tmp_path / "nowhere"))
