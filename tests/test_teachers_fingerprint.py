"""Issue 15, defect 2: a teacher's fingerprint covers everything that changes its outputs.

Weights by full content (a tensor rewritten at the same file size is noticed), hub names through
their local snapshot, `ModuleTeacher(forward=..., output=...)` by the callables' code; a callable
that cannot be fingerprinted is refused unless an explicit `version=` is given. Fingerprints of
teachers where nothing changed stay what they were (existing caches stay valid).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from multiteacher.errors import UserError
from multiteacher.teachers.base import (
    ModuleTeacher,
    file_digest,
    fingerprint_callable,
    fingerprint_module,
)
from multiteacher.teachers.cache import teacher_outputs
from multiteacher.teachers.text import BiEncoderTeacher, RunTeacher, hub_snapshot, model_fingerprint

MIB = 1 << 20


# ----------------------------------------------------------------------------- weights at the same size


def _tiny_bert(folder: Path) -> None:
    """A small BERT folder (safetensors > 1 MiB, tokenizer from a tiny vocab)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "is", "a", "flea", "fleas", "are", "insects",
             "dogs", "bark", "."]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=4096, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(folder, safe_serialization=True)


def _tensor_span(path: Path, suffix: str) -> tuple[str, int, int]:
    """(name, start, end) file offsets of the last tensor in the file whose name ends with `suffix`."""
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    spans = [(k, 8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1])
             for k, v in header.items() if k != "__metadata__" and k.endswith(suffix)]
    return max(spans, key=lambda s: s[1])


PAIRS = [("what is a flea", "fleas are insects ."), ("what is a flea", "dogs bark ."), ("dogs", "a flea")]


def test_weights_rewritten_at_the_same_size_are_recomputed(tmp_path: Path) -> None:
    folder = tmp_path / "bert"
    _tiny_bert(folder)
    weights = folder / "model.safetensors"
    ids = [f"p{i}" for i in range(len(PAIRS))]
    first = BiEncoderTeacher("bert", str(folder))
    cached1 = np.asarray(teacher_outputs(first, PAIRS, ids, "pairs", root=tmp_path / "cache", progress=False,
                                         batch_size=8, collate=list))

    # rewrite the last layer's output LayerNorm bias in place: same file size, same first MiB
    _, start, end = _tensor_span(weights, "output.LayerNorm.bias")
    assert start > MIB, "the tensor must lie beyond the first MiB for this test to catch the old fingerprint"
    before, size = weights.read_bytes(), weights.stat().st_size
    bias = np.frombuffer(before[start:end], dtype=np.float32) + 0.5
    with open(weights, "r+b") as f:
        f.seek(start)
        f.write(bias.astype(np.float32).tobytes())
    after = weights.read_bytes()
    assert weights.stat().st_size == size and after[:MIB] == before[:MIB] and after != before

    second = BiEncoderTeacher("bert", str(folder))
    assert second.fingerprint != first.fingerprint
    cached2 = np.asarray(teacher_outputs(second, PAIRS, ids, "pairs", root=tmp_path / "cache", progress=False,
                                         batch_size=8, collate=list))
    fresh = second.predict(PAIRS).numpy()  # independent reference: the model scored live, no cache
    np.testing.assert_allclose(cached2, fresh, rtol=1e-6, atol=1e-6)
    assert np.abs(cached2 - cached1).max() > 1e-4  # the stale outputs were not served


def test_file_digest_is_memoised_but_never_stale(tmp_path: Path) -> None:
    p = tmp_path / "w.bin"
    p.write_bytes(b"a" * 100)
    old = time.time_ns() - 10_000_000_000
    os.utime(p, ns=(old, old))
    assert file_digest(p) == hashlib.sha256(b"a" * 100).hexdigest()
    with open(p, "r+b") as f:  # same size, same inode; a new mtime
        f.write(b"b")
    assert file_digest(p) == hashlib.sha256(b"b" + b"a" * 99).hexdigest()
    # a recent file is hashed every time (its mtime could repeat within the timestamp granularity)
    with open(p, "r+b") as f:
        f.write(b"c")
    st = p.stat()
    assert file_digest(p) == hashlib.sha256(b"c" + b"a" * 99).hexdigest()
    with open(p, "r+b") as f:
        f.write(b"d")
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored: only a re-hash notices
    assert file_digest(p) == hashlib.sha256(b"d" + b"a" * 99).hexdigest()


def test_hub_name_resolves_to_the_local_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hfc

    hub = tmp_path / "hub"
    snap = hub / "models--org--enc" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (hub / "models--org--enc" / "refs").mkdir()
    (hub / "models--org--enc" / "refs" / "main").write_text("a" * 40)
    (snap / "config.json").write_text("{}")
    (snap / "model.safetensors").write_bytes(b"\0" * 2048)
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(hub))
    assert hub_snapshot("org/enc") == snap
    fp1 = model_fingerprint("org/enc", {"k": 1})
    assert fp1 == model_fingerprint(str(snap), {"k": 1})  # a hub name is its snapshot's files
    (snap / "model.safetensors").write_bytes(b"\0" * 2047 + b"\1")
    assert model_fingerprint("org/enc", {"k": 1}) != fp1
    # no snapshot: hashed by name, and said so
    assert hub_snapshot("org/absent") is None
    expected = hashlib.sha256(b"model-files-v2|{'k': 1}" + b"hub-name-only:org/absent").hexdigest()
    assert model_fingerprint("org/absent", {"k": 1}) == expected


# ----------------------------------------------------------------------------- callables


def _double(m: nn.Module, b: torch.Tensor) -> torch.Tensor:
    return m(b) * 2


def _negate(m: nn.Module, b: torch.Tensor) -> torch.Tensor:
    return -m(b)


def test_module_teachers_differing_only_in_forward(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    x = torch.randn(5, 3)
    t1 = ModuleTeacher(net, "t", forward=_double)
    t2 = ModuleTeacher(net, "t", forward=_negate)
    assert t1.fingerprint != t2.fingerprint
    ids = list(range(5))
    out1 = np.asarray(teacher_outputs(t1, x, ids, "x", root=tmp_path, progress=False))
    out2 = np.asarray(teacher_outputs(t2, x, ids, "x", root=tmp_path, progress=False))
    with torch.no_grad():
        ref = net(x).numpy()
    np.testing.assert_allclose(out1, 2 * ref, rtol=1e-6)
    np.testing.assert_allclose(out2, -ref, rtol=1e-6)  # not the first teacher's cached outputs


def test_output_selectors_join_the_fingerprint() -> None:
    net = nn.Linear(3, 2)
    plain = ModuleTeacher(net, "t")
    by_key = [ModuleTeacher(net, "t", output=k) for k in (0, 1)]
    by_fn = [ModuleTeacher(net, "t", output=fn) for fn in (lambda o: o.softmax(-1), lambda o: o.sigmoid())]
    fps = {plain.fingerprint, *(t.fingerprint for t in by_key + by_fn)}
    assert len(fps) == 5


def _scaled(c: float):
    return lambda m, b: m(b) * c


def test_lambda_over_a_different_constant_differs() -> None:
    assert fingerprint_callable(_scaled(2.0)) != fingerprint_callable(_scaled(3.0))
    assert fingerprint_callable(_scaled(2.0)) == fingerprint_callable(_scaled(2.0))
    net = nn.Linear(3, 2)
    assert ModuleTeacher(net, "t", forward=_scaled(2.0)).fingerprint != ModuleTeacher(
        net, "t", forward=_scaled(3.0)).fingerprint
    # defaults, closures over tensors and nested code count too
    assert fingerprint_callable(lambda x, k=1: x * k) != fingerprint_callable(lambda x, k=2: x * k)
    w1, w2 = torch.ones(2), torch.full((2,), 2.0)
    def times(w: torch.Tensor):
        return lambda x: x * w

    assert fingerprint_callable(times(w1)) != fingerprint_callable(times(w2))
    assert fingerprint_callable(lambda x: (lambda y: y + 1)(x)) != fingerprint_callable(lambda x: (lambda y: y + 2)(x))
    # closures over configs (pydantic models, dataclasses) by their values
    from pydantic import BaseModel

    class Temp(BaseModel):
        t: float

    def over(cfg: Temp):
        return lambda o: o / cfg.t

    assert fingerprint_callable(over(Temp(t=1.0))) != fingerprint_callable(over(Temp(t=2.0)))
    # common output selectors: Ellipsis, slices and ranges are constants like any other
    assert fingerprint_callable(lambda o: o[..., 0]) != fingerprint_callable(lambda o: o[..., 1])
    assert fingerprint_callable(lambda o, s=slice(0, 2): o[s]) != fingerprint_callable(lambda o, s=slice(1, 2): o[s])


def test_unfingerprintable_callables_are_refused_unless_versioned() -> None:
    import threading

    net = nn.Linear(3, 2)
    with pytest.raises(UserError) as e:
        ModuleTeacher(net, "t", output=torch.sigmoid)
    msg = str(e.value)
    assert "\n" not in msg and "ModuleTeacher 't': output" in msg and "version=" in msg
    lock = threading.Lock()
    with pytest.raises(UserError, match="refers to a lock"):
        ModuleTeacher(net, "t", forward=lambda m, b: (lock, m(b))[1])
    # version= is honoured: it names the callable; a different version is a different teacher
    a1 = ModuleTeacher(net, "t", output=torch.sigmoid, version="sigmoid-1")
    a2 = ModuleTeacher(net, "t", output=torch.sigmoid, version="sigmoid-1")
    b = ModuleTeacher(net, "t", output=torch.sigmoid, version="sigmoid-2")
    assert a1.fingerprint == a2.fingerprint != b.fingerprint
    assert a1.predict(torch.zeros(1, 3)).shape == (1, 2)
    # with a fingerprintable callable, the version joins the code's fingerprint
    assert ModuleTeacher(net, "t", forward=_double, version="1").fingerprint != ModuleTeacher(
        net, "t", forward=_double, version="2").fingerprint


# ----------------------------------------------------------------------------- stability


def test_fingerprints_where_nothing_changed_are_the_old_ones(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    # a ModuleTeacher without forward/output keeps the formula it always had (existing caches stay valid)
    assert ModuleTeacher(net, "t", config={"a": 1}).fingerprint == fingerprint_module(
        net, {"name": "t", "config": {"a": 1}})
    # run-file teachers: the file's SHA-256, name and `by` (unchanged by this fix)
    run = tmp_path / "bm25.run"
    run.write_text("q1 Q0 d1 1 12.5 bm25\nq1 Q0 d2 2 9.0 bm25\n")
    sha = hashlib.sha256(run.read_bytes()).hexdigest()
    text = json.dumps({"kind": "run", "name": "bm25", "file": sha, "by": "score"}, sort_keys=True,
                      separators=(",", ":"))
    assert RunTeacher.from_file(run).fingerprint == hashlib.sha256(text.encode()).hexdigest()


def test_masked_teacher_callable_masks_by_code() -> None:
    from multiteacher.teachers.masked import MaskedTeacher

    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    ones = MaskedTeacher(net, {"0": lambda o: torch.ones_like(o)}, "m")
    zeros = MaskedTeacher(net, {"0": lambda o: torch.zeros_like(o)}, "m")
    assert ones.fingerprint != zeros.fingerprint  # both were "<lambda>" by name
    with pytest.raises(UserError, match=r"MaskedTeacher 'm': the mask at '0'.*code_version="):
        _ = MaskedTeacher(net, {"0": torch.sigmoid}, "m").fingerprint
    v1 = MaskedTeacher(net, {"0": torch.sigmoid}, "m", code_version="v1").fingerprint
    assert v1 != MaskedTeacher(net, {"0": torch.sigmoid}, "m", code_version="v2").fingerprint


def test_pool_predict_fns_by_code(tmp_path: Path) -> None:
    from multiteacher.teachers.pool import TeacherPool

    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    pool = TeacherPool([ModuleTeacher(net, "t")])
    a = pool.cached_outputs(x, list(range(4)), "x", root=tmp_path, progress=False,
                            predict_fns={"t": lambda b: net(b) + 1})
    b = pool.cached_outputs(x, list(range(4)), "x", root=tmp_path, progress=False,
                            predict_fns={"t": lambda b: net(b) - 1})  # same qualified name, other code
    with torch.no_grad():
        ref = net(x).numpy()
    np.testing.assert_allclose(a[np.arange(4)][:, 0], ref + 1, rtol=1e-6)
    np.testing.assert_allclose(b[np.arange(4)][:, 0], ref - 1, rtol=1e-6)
