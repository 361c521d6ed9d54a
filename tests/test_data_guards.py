"""Data guards of issue 15: overlong passages, npz shapes and class ids, empty query texts, non-UTF-8 lines."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from multiteacher.data.ir import read_queries_tsv, read_trec_run
from multiteacher.data.npzdir import NpzDir, check_class_ids
from multiteacher.errors import DataError
from multiteacher.models import pair_scoring
from multiteacher.models.pair_scoring import CHARS_PER_TOKEN, clip_texts, tokenize_pairs


def test_clip_texts_golden_and_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pair_scoring, "_warned", set())
    texts = ["short", "p" * 1000, "q" * 40]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = clip_texts(texts, max_length=2)  # limit 2 * 16 = 32 characters
        again = clip_texts(texts, max_length=2)
    assert [len(t) for t in out] == [5, 32, 32] and out == again
    assert out[1] == "p" * 32 and out[0] is texts[0]
    assert len(w) == 1 and "2 passage(s) longer than 32 characters" in str(w[0].message)


class RecordingTokenizer:
    """Stands in for a fast tokenizer: records the characters it was given; one token per word."""

    model_input_names = ("input_ids",)

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, queries: list[str], passages: list[str], truncation: str, max_length: int,
                 padding: bool) -> dict[str, list[list[int]]]:
        self.seen += [len(p) for p in passages]
        ids = [([1] + [len(w) for w in q.split()] + [2] + [len(w) for w in p.split()])[:max_length]
               for q, p in zip(queries, passages)]
        return {"input_ids": ids}


def test_tokenize_pairs_cuts_overlong_passages_before_the_tokenizer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pair_scoring, "_warned", set())
    tok = RecordingTokenizer()
    huge = "word " * 200_000  # 1 MB
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        enc = tokenize_pairs(tok, ["what", "who"], ["a normal passage", huge], max_length=64)
    assert tok.seen == [16, 64 * CHARS_PER_TOKEN]
    # the tokens the model sees are those of the full text (independent reference: the uncut call)
    ref = RecordingTokenizer()(["what", "who"], ["a normal passage", huge], "longest_first", 64, False)
    assert enc["input_ids"] == ref["input_ids"]


def test_real_tokenizer_sees_the_same_tokens() -> None:
    from multiteacher.recipes.rerank.model import build_wordpiece

    tok = build_wordpiece(["the cat sat on the mat with a hat"] * 3, vocab_size=100)
    long = "the cat sat on the mat " * 5000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = tokenize_pairs(tok, ["cat"], [long], max_length=48)["input_ids"]
    ref = tok(["cat"], [long], truncation="longest_first", max_length=48)["input_ids"]
    assert ours == ref and len(ours[0]) == 48


def _npz(root: Path, rep: str, i: int, arr: np.ndarray) -> None:
    (root / rep).mkdir(parents=True, exist_ok=True)
    np.savez(root / rep / f"{i:05d}.npz", arr)


def test_export_refuses_class_ids_beyond_channels_and_allows_ignore(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for i in range(3):
        _npz(root, "rgb", i, np.zeros((4, 4, 3), np.uint8))
        _npz(root, "semantic", i, np.array([[0, 1, 255, 2]] * 4, np.uint8))
    arrs = NpzDir(root).export(tmp_path / "c", classes={"semantic": 3}, progress=False)
    assert arrs["semantic"].shape == (3, 4, 4)
    with pytest.raises(DataError, match=r"semantic/00000\.npz: class id 2 is not below the node's 2 channels"):
        NpzDir(root).export(tmp_path / "c", classes={"semantic": 2}, progress=False)


def test_export_refuses_representations_of_different_sizes(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _npz(root, "rgb", 0, np.zeros((8, 8, 3), np.uint8))
    _npz(root, "depth", 0, np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match=r"'rgb' maps are \(8, 8\) but 'depth' maps are \(4, 4\)"):
        NpzDir(root).export(tmp_path / "c", progress=False)
    assert not list((tmp_path / "c").rglob("*.npy"))  # nothing half-made


def test_check_reads_every_file(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for i in range(5):
        _npz(root, "semantic", i, np.full((4, 4), 7 if i == 4 else 1, np.uint8))
    assert NpzDir(root).check() == "1 representations (semantic), 5 files read"
    with pytest.raises(DataError, match=r"semantic/00004\.npz: class id 7"):
        NpzDir(root).check({"semantic": 5})
    (root / "semantic" / "00003.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"00003\.npz is not a readable \.npz"):
        NpzDir(root).check()


def test_check_class_ids_golden() -> None:
    check_class_ids(np.array([0, 4, 255], np.int64), 5, "m")
    for arr, msg in ((np.array([5]), "class id 5"), (np.array([-3]), "class id -3"),
                     (np.array([0.0]), "integer class ids")):
        with pytest.raises(DataError, match=msg):
            check_class_ids(arr, 5, "m")


def test_empty_query_text_and_non_utf8_lines(tmp_path: Path) -> None:
    p = tmp_path / "queries.tsv"
    p.write_text("q1\tfine\nq2\t\t \n")
    with pytest.raises(DataError, match=r"queries\.tsv:2: query 'q2' has empty text"):
        read_queries_tsv(p)
    r = tmp_path / "x.run"
    r.write_bytes(b"q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 1.0 t\xe9\n")
    with pytest.raises(DataError, match=r"x\.run:2: not UTF-8 text \(byte 0xe9 at column 17\)"):
        read_trec_run(r)
