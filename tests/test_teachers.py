"""Teacher protocol, fingerprints, module/precomputed adapters and TeacherPool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from multiteacher.errors import DataError, UserError
from multiteacher.teachers import (
    ModuleTeacher,
    PrecomputedTeacher,
    Teacher,
    TeacherPool,
    data_fingerprint,
    fingerprint_module,
)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))


def test_module_fingerprint_tracks_weights_config_and_code() -> None:
    a, b = ModuleTeacher(_net(0), "t"), ModuleTeacher(_net(0), "t")
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 64
    assert ModuleTeacher(_net(1), "t").fingerprint != a.fingerprint
    assert ModuleTeacher(_net(0), "t", config={"T": 2}).fingerprint != a.fingerprint
    assert ModuleTeacher(_net(0), "other").fingerprint != a.fingerprint
    assert fingerprint_module(_net(0), code_version="x") != fingerprint_module(_net(0), code_version="y")
    before = a.fingerprint
    with torch.no_grad():
        a.module[0].weight[0, 0] += 1.0  # in-place edit: the cached fingerprint must notice
    assert a.fingerprint != before


def test_module_teacher_predicts_in_eval_and_inference_mode() -> None:
    net = _net().train()
    t = ModuleTeacher(net, "t")
    assert isinstance(t, Teacher)
    net.train()  # someone flips it back: predict still runs in eval mode
    x = torch.randn(5, 4)
    y1, y2 = t.predict(x), t(x)
    assert torch.equal(y1, y2) and y1.shape == (5, 3)  # no dropout
    assert not y1.requires_grad and y1.is_inference()
    assert not any(p.requires_grad for p in net.parameters())


def test_teacher_not_in_student_checkpoint() -> None:
    class Student(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 3)
            self.teacher = ModuleTeacher(_net(), "t")

    s = Student()
    assert set(s.state_dict()) == {"head.weight", "head.bias"}
    assert len(list(s.parameters())) == 2


def test_output_selection_and_features() -> None:
    net = _net()
    t = ModuleTeacher(net, "t", output=lambda y: y.softmax(-1))
    x = torch.randn(2, 4)
    assert torch.allclose(t.predict(x).sum(-1), torch.ones(2))
    feats = t.features(x, ["0", "1"])
    assert feats["0"].shape == (2, 8) and torch.equal(feats["1"], feats["0"].relu())
    assert not net[0]._forward_hooks  # hooks removed
    with pytest.raises(UserError, match="no submodule 'encoder'"):
        t.features(x, ["encoder"])


def test_precomputed_teacher(tmp_path: Path) -> None:
    out = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "t.npy", out)
    t = PrecomputedTeacher.from_file(tmp_path / "t.npy", ids=["a", "b", "c", "d"], name="llm")
    assert isinstance(t, Teacher) and t.name == "llm"
    assert torch.equal(t.predict(["c", "a"]), torch.from_numpy(out[[2, 0]]))
    assert torch.equal(t.predict({"ids": ["d"]}), torch.from_numpy(out[[3]]))
    with pytest.raises(DataError, match="'zz'"):
        t.predict(["zz"])
    torch.save({"outputs": torch.from_numpy(out)}, tmp_path / "t.pt")
    from safetensors.numpy import save_file

    save_file({"outputs": out}, str(tmp_path / "t.safetensors"))
    for name in ("t.pt", "t.safetensors"):
        u = PrecomputedTeacher.from_file(tmp_path / name)
        assert torch.equal(u.predict([1, 3]), torch.from_numpy(out[[1, 3]]))
    fp = t.fingerprint
    np.save(tmp_path / "t.npy", out + 1)
    assert PrecomputedTeacher.from_file(tmp_path / "t.npy", ids=["a", "b", "c", "d"], name="llm").fingerprint != fp
    assert PrecomputedTeacher("x", out).fingerprint != PrecomputedTeacher("x", out + 1).fingerprint
    with pytest.raises(DataError, match="4 output rows but 2 ids"):
        PrecomputedTeacher("x", out, ids=[0, 1])


def test_data_fingerprint(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("1")
    base = data_fingerprint(ids=[1, 2], files=[tmp_path / "a.txt"], config={"snr": 5})
    assert base == data_fingerprint(ids=[1, 2], files=[tmp_path / "a.txt"], config={"snr": 5})
    assert base != data_fingerprint(ids=[2, 1], files=[tmp_path / "a.txt"], config={"snr": 5})
    assert base != data_fingerprint(ids=[1, 2], files=[tmp_path / "a.txt"], config={"snr": 0})
    (tmp_path / "a.txt").write_text("2")
    assert base != data_fingerprint(ids=[1, 2], files=[tmp_path / "a.txt"], config={"snr": 5})


def test_pool_stacks_and_caches(tmp_path: Path) -> None:
    a, b = ModuleTeacher(_net(0), "a"), ModuleTeacher(_net(1), "b")
    pool = TeacherPool([a, b])
    x = torch.randn(6, 4)
    y = pool.predict(x)
    assert y.shape == (6, 2, 3)  # (B, K, C): batch first, teachers second
    assert torch.equal(y[:, 0], a.predict(x)) and torch.equal(y[:, 1], b.predict(x))
    assert pool["b"] is b and pool.names == ["a", "b"]
    assert pool.fingerprint != TeacherPool([b, a]).fingerprint
    cached = pool.cached_outputs(x, [f"q{i}" for i in range(6)], "data", root=tmp_path, shard_size=4, progress=False)
    assert cached[np.arange(6)].shape == (6, 2, 3)
    np.testing.assert_allclose(cached[np.arange(6)], y.numpy(), rtol=1e-6)
    np.testing.assert_allclose(cached.by_id(["q5", "q0"]), y[[5, 0]].numpy(), rtol=1e-6)
    assert cached.torch([1, 2]).dtype == torch.float32
    np.testing.assert_allclose(cached.torch([1, 2]).numpy(), y[[1, 2]].numpy(), rtol=1e-6)
    with pytest.raises(UserError, match="unique"):
        TeacherPool([a, ModuleTeacher(_net(2), "a")])
    odd = ModuleTeacher(nn.Linear(4, 5), "odd")
    with pytest.raises(UserError, match="different shapes"):
        TeacherPool([a, odd]).predict(x)


def test_consensus_of_pool_reduces_over_teachers_not_batch() -> None:
    """`mt.median(pool.predict(x))` is the per-sample median of the K teachers (hand-computed)."""
    import multiteacher as mt

    # 3 teachers, 2 samples, 2 outputs; sample i of teacher k is row i of its table.
    t1 = [[1.0, 10.0], [4.0, 40.0]]
    t2 = [[2.0, 30.0], [9.0, 50.0]]
    t3 = [[7.0, 20.0], [5.0, 60.0]]
    pool = mt.TeacherPool([mt.PrecomputedTeacher(n, torch.tensor(t)) for n, t in (("t1", t1), ("t2", t2), ("t3", t3))])
    y = pool.predict([0, 1])
    assert y.shape == (2, 3, 2)
    # median over teachers, per sample and output: sample 0 -> (2, 20), sample 1 -> (5, 50)
    assert torch.equal(mt.median(y), torch.tensor([[2.0, 20.0], [5.0, 50.0]]))
    # mean over teachers: sample 0 -> (10/3, 20), sample 1 -> (6, 50); the batch mean would be (B-free) wrong
    torch.testing.assert_close(mt.mean(y), torch.tensor([[10.0 / 3, 20.0], [6.0, 50.0]]))
    # and the router / KD layout: multi_teacher_kd takes the same stack without a transpose
    s = torch.zeros(2, 2)
    assert torch.isfinite(mt.multi_teacher_kd(s, y, temperature=1.0))
