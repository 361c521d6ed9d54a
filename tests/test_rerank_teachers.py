"""Rerank teachers: score files, runs by rank/score, fusion through the engine (golden values), sampling, cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from multiteacher.data.ir import IRData, fuse_runs, hofstaetter_run, read_hofstaetter
from multiteacher.errors import DataError
from multiteacher.recipes.rerank import teachers
from multiteacher.recipes.rerank.sampling import SamplingConfig, build_groups, group_size
from multiteacher.recipes.rerank.teachers import TeachersConfig, TeacherSpec
from multiteacher.teachers.text import BiEncoderTeacher, CrossEncoderTeacher, cached_run


def _z(scores: dict[str, float]) -> dict[str, float]:
    """Per-query z-score by hand (population std)."""
    mu = sum(scores.values()) / len(scores)
    sd = math.sqrt(sum((v - mu) ** 2 for v in scores.values()) / len(scores))
    return {d: (v - mu) / sd for d, v in scores.items()}


def _ranks(scores: dict[str, float]) -> dict[str, int]:
    return {d: r for r, d in enumerate(sorted(scores, key=lambda d: (-scores[d], d)), 1)}


def test_fuse_runs_golden() -> None:
    a = {"q": {"x": 1.0, "y": 2.0, "z": 3.0}}
    b = {"q": {"x": 10.0, "y": 30.0, "z": 20.0}}
    mm = fuse_runs({"a": a, "b": b}, "minmax", weights=[1, 3])
    assert mm["q"] == pytest.approx({"x": 0.0, "y": (0.5 + 3) / 4, "z": (1 + 1.5) / 4})
    za, zb = _z(a["q"]), _z(b["q"])
    assert fuse_runs({"a": a, "b": b}, "zscore")["q"] == pytest.approx({d: (za[d] + zb[d]) / 2 for d in "xyz"})
    rrf = fuse_runs({"a": a, "b": b}, "rrf", rrf_k=60)
    assert rrf["q"] == pytest.approx({"x": 2 / 63, "y": 1 / 62 + 1 / 61, "z": 1 / 61 + 1 / 62})


def test_fuse_runs_missing_teacher_has_no_score() -> None:
    # teacher a did not retrieve c, and has no list for query r: it drops out there (no floor score)
    a = {"q": {"a": 1.0, "b": 2.0}}
    b = {"q": {"a": 3.0, "b": 1.0, "c": 0.0}, "r": {"a": 1.0}}
    out = fuse_runs({"a": a, "b": b}, "rrf", rrf_k=60)
    assert out["q"] == pytest.approx({"a": 1 / 62 + 1 / 61, "b": 1 / 61 + 1 / 62, "c": 1 / 63})
    assert out["r"] == pytest.approx({"a": 1 / 61})
    zs = fuse_runs({"a": a, "b": b}, "zscore")
    zb = _z(b["q"])
    assert zs["q"] == pytest.approx({"a": (-1 + zb["a"]) / 2, "b": (1 + zb["b"]) / 2, "c": zb["c"]})
    assert zs["r"] == {"a": 0.0}  # a one-passage list z-scores to 0


def test_run_scores_by_rank_and_ties() -> None:
    from multiteacher.teachers.text import ranks_to_scores

    assert _ranks({"a": 1.0, "b": 3.0, "c": 3.0}) == {"b": 1, "c": 2, "a": 3}
    assert ranks_to_scores({"q": {"b": 1, "a": 2}}) == {"q": {"b": -1.0, "a": -2.0}}


def _data() -> IRData:
    cands = {"q1": {f"d{i}": 10.0 - i for i in range(10)}, "q2": {f"e{i}": 5.0 - i for i in range(6)}}
    passages = {d: f"passage {d}" for c in cands.values() for d in c}
    qrels = {"q1": {"d0": 3, "d3": 2, "d1": 1, "d5": 0}}
    return IRData("toy", {"q1": "first", "q2": "second"}, passages, cands, qrels)


def test_hofstaetter_file(tmp_path: Path) -> None:
    p = tmp_path / "t.tsv"
    p.write_text("9.5\t1.0\tq1\td0\td5\n8.0\t2.5\tq1\td3\td6\n")
    assert read_hofstaetter(p)[0] == (9.5, 1.0, "q1", "d0", "d5")
    d = _data()
    run = teachers.teacher_run(TeacherSpec(name="h", kind="scores", file=str(p)), d, None, tmp_path)
    assert run["q1"]["d0"] == 9.5 and run["q1"]["d6"] == 2.5
    assert set(run["q1"]) == {"d0", "d5", "d3", "d6"} and "q2" not in run  # unscored: no score, not a floor
    p.write_text("9.5\t1.0\tq1\td0\n")
    with pytest.raises(DataError, match="t.tsv:1"):
        read_hofstaetter(p)
    p.write_text("9.5\t1.0\tq1\td0\td5\n3.0\t1.0\tq1\td0\td6\n")
    with pytest.raises(DataError, match="two scores"):
        hofstaetter_run(p)


def test_run_teacher_by_rank_and_score(tmp_path: Path) -> None:
    (tmp_path / "llm.run").write_text("q1 Q0 d9 1 -1 llm\nq1 Q0 d0 2 -2 llm\n")
    d = _data()
    by_rank = teachers.teacher_run(TeacherSpec(name="l", kind="run", file="llm.run", by="rank"), d, tmp_path, tmp_path)
    assert by_rank == {"q1": {"d9": -1.0, "d0": -2.0}}  # the other candidates have no score
    bm25 = teachers.teacher_run(TeacherSpec(name="b", kind="run", file="bm25.run"), d, tmp_path, tmp_path)
    assert bm25 == d.candidates
    d.runs["llm"] = {"q1": {"d9": -1.0, "d0": -2.0}}
    lw = teachers.listwise_run(TeachersConfig(listwise_runs=["llm", "other"]), d, tmp_path)
    assert lw == {"q1": {"d9": -1.0, "d0": -2.0}}
    d.runs["llm2"] = {"q1": {"d0": -1.0, "d9": -2.0, "d4": -3.0}}
    lw2 = teachers.listwise_run(TeachersConfig(listwise_runs=["llm", "llm2"], rrf_k=60), d, tmp_path)
    assert lw2["q1"] == pytest.approx({"d9": 1 / 61 + 1 / 62, "d0": 1 / 62 + 1 / 61, "d4": 1 / 63})


class _Counting:
    name = "count"
    fingerprint = "fp-1"

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, batch):
        self.calls += 1
        return torch.tensor([float(len(p)) for _, p in batch["pairs"]])


def test_live_teacher_scored_once_through_cache(tmp_path: Path) -> None:
    d, t = _data(), _Counting()
    r1 = cached_run(t, d, tmp_path / "c", batch_size=4)
    calls = t.calls
    r2 = cached_run(t, d, tmp_path / "c", batch_size=4)
    assert calls > 0 and t.calls == calls and r1 == r2
    assert r1["q1"]["d3"] == len("passage d3")
    t.fingerprint = "fp-2"  # a changed teacher is recomputed
    cached_run(t, d, tmp_path / "c", batch_size=4)
    assert t.calls > calls


def test_biencoder_matches_sentence_transformers(tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from multiteacher.recipes.rerank.model import build_wordpiece

    tok = build_wordpiece(["alpha beta gamma delta", "flea cycle concrete floor"] * 5, vocab_size=200)
    assert isinstance(tok, BertTokenizerFast)
    torch.manual_seed(0)
    enc = BertModel(
        BertConfig(
            vocab_size=len(tok),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        )
    )
    path = tmp_path / "bi"
    enc.save_pretrained(path)
    tok.save_pretrained(path)
    t = BiEncoderTeacher("bi", str(path), max_length=32)
    pairs = [("alpha beta", "gamma delta alpha"), ("flea", "concrete floor cycle flea")]
    ours = t.predict(pairs)
    word = models.Transformer(str(path), max_seq_length=32)
    dim = (
        word.get_embedding_dimension()
        if hasattr(word, "get_embedding_dimension")
        else word.get_word_embedding_dimension()
    )
    st = SentenceTransformer(modules=[word, models.Pooling(dim, "mean")], device="cpu")
    e = st.encode([p for x in pairs for p in x], convert_to_tensor=True, normalize_embeddings=True)
    assert ours.tolist() == pytest.approx((e[0::2] * e[1::2]).sum(-1).tolist(), abs=1e-5)
    assert t.fingerprint == BiEncoderTeacher("bi", str(path), max_length=32).fingerprint
    assert t.fingerprint != BiEncoderTeacher("bi", str(path), max_length=16).fingerprint
    made = teachers.make_teacher(TeacherSpec(name="bi", kind="biencoder", path=str(path), max_length=32), None, None)
    assert isinstance(made, BiEncoderTeacher) and made.fingerprint == t.fingerprint


def test_sampling_label_sources() -> None:
    d = _data()
    cfg = SamplingConfig(groups_per_query=5, infonce_negatives=7, list_size=4, list_from_top=6, pos_top=2)
    bce = build_groups("bce", d.qids, d.candidates, cfg, 0, qrels=d.qrels)
    assert len(bce) == 5 and all(g.qid == "q1" and g.docs[0] in ("d0", "d3") for g in bce)  # q2 has no qrels
    assert all(x not in ("d0", "d3", "d1") for g in bce for x in g.docs[1:])  # negatives: rel <= 0 / unjudged
    nce = build_groups("infonce", d.qids, d.candidates, cfg, 0, qrels=d.qrels)
    assert all(len(g.docs) == 8 and g.targets == (1.0,) + (0.0,) * 7 for g in nce)
    teacher = {q: {x: -float(i) for i, x in enumerate(c)} for q, c in d.candidates.items()}
    mm = build_groups("marginmse", d.qids, d.candidates, cfg, 0, teacher=teacher)
    assert len(mm) == 10 and all(g.targets[0] > g.targets[1] for g in mm)
    lists = build_groups("adrmse", d.qids, d.candidates, cfg, 0, teacher=teacher)
    assert all(len(g.docs) == 4 and list(g.targets) == sorted(g.targets, reverse=True) for g in lists)
    assert all(int(x[1:]) < 6 for g in lists for x in g.docs)  # from the teacher's top 6
    again = build_groups("adrmse", d.qids, d.candidates, cfg, 0, teacher=teacher)
    assert again == lists and build_groups("adrmse", d.qids, d.candidates, cfg, 1, teacher=teacher) != lists
    assert [group_size(o, cfg) for o in ("bce", "hinge", "infonce", "marginmse", "ranknet")] == [2, 2, 8, 2, 4]
    assert np.isfinite([t for g in mm for t in g.targets]).all()


def test_crossencoder_teacher_scores_like_the_exported_student(tmp_path: Path) -> None:
    from multiteacher.recipes.rerank.model import ModelConfig, RandomModelConfig, export, load_student, score_pairs

    texts = ["alpha beta gamma", "flea cycle concrete floor", "declaratory judgment law"] * 3
    model, tok = load_student(ModelConfig(random=RandomModelConfig(vocab_size=200), max_length=32), texts)
    export(model, tok, tmp_path / "ce")
    t = CrossEncoderTeacher("ce", str(tmp_path / "ce"), max_length=32)
    pairs = [("alpha", "beta gamma"), ("flea floor", "concrete cycle flea")]
    expected = score_pairs(model, tok, [q for q, _ in pairs], [p for _, p in pairs], 32)
    assert t.predict(pairs).tolist() == pytest.approx(expected, abs=1e-5)


def test_tune_weights_on_validation_prefers_the_better_teacher() -> None:
    qrels = {"q": {"a": 3, "b": 0, "c": 0}, "r": {"x": 2, "y": 0}}
    good = {"q": {"a": 3.0, "b": 2.0, "c": 1.0}, "r": {"x": 5.0, "y": 1.0}}
    bad = {"q": {"a": 1.0, "b": 2.0, "c": 3.0}, "r": {"x": 1.0, "y": 5.0}}
    cfg = TeachersConfig(
        members=[TeacherSpec(name="bad", kind="run", file="x"), TeacherSpec(name="good", kind="run", file="y")],
        tune_weights=True,
    )
    w, value = teachers.tune_weights(cfg, [({"bad": bad, "good": good}, qrels)])
    assert w == {"bad": 0.0, "good": 0.5} and value == pytest.approx(1.0)
    fused = teachers.fused_run(cfg, {"bad": bad, "good": good}, w)
    assert _ranks(fused["q"])["a"] == 1
