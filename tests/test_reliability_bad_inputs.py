"""A corpus of malformed inputs: each must raise a one-line `UserError` naming what is wrong and where.

Configs (unknown key, wrong type, negative sizes, missing data directory, ...), data (wav, IDX,
npz frames, TREC runs / qrels / queries / corpus, the rerank validation list) and teachers (NaN /
inf outputs, truncated cache shards, missing model paths, bad precomputed outputs). Every input is
generated in `tmp_path`. The CLI turns these errors into exit code 2 with no traceback
(tests/test_reliability_cli.py checks that in real processes).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import struct
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from multiteacher.cli import main
from multiteacher.config import load_config
from multiteacher.errors import UserError

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"


# ----------------------------------------------------------------------------- builders


def write_wav(path: Path, n: int = 400, rate: int = 8000, channels: int = 1, keep_bytes: int | None = None) -> Path:
    """A 16-bit PCM wav of `n` frames; `keep_bytes` truncates the file afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.arange(n * channels) % 200 - 100).astype("<i2").tobytes())
    if keep_bytes is not None:
        path.write_bytes(path.read_bytes()[:keep_bytes])
    return path


def idx_bytes(arr: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes (magic 0x0000080N, then big-endian dims, then the data)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_mnist(root: Path, n: int = 30, images: bytes | None = None, labels: bytes | None = None,
                gz: bool = False) -> Path:
    """`<root>/mnist/train-{images,labels}` with `n` 28x28 images of digits 0..9 (overridable bytes)."""
    d = root / "mnist"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    img = idx_bytes(rng.integers(0, 255, (n, 28, 28))) if images is None else images
    lab = idx_bytes(np.arange(n) % 10) if labels is None else labels
    suffix = ".gz" if gz else ""
    opener: Any = gzip.open if gz else open
    for name, data in (("train-images-idx3-ubyte", img), ("train-labels-idx1-ubyte", lab)):
        if data is not None:
            with opener(d / (name + suffix), "wb") as f:
                f.write(data)
    return d


def write_ir(root: Path, queries: str = "q1\tfirst query\nq2\tsecond query\n", corpus: str | None = None,
             run: str | None = "q1 Q0 d1 1 2.0 bm25\nq1 Q0 d2 2 1.0 bm25\nq2 Q0 d1 1 3.0 bm25\n",
             qrels: str | None = "q1 0 d1 1\nq2 0 d1 0\n") -> Path:
    """A small trec-dl style directory: queries.tsv, corpus.jsonl, bm25.run, qrels.txt."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "queries.tsv").write_text(queries)
    if corpus is None:
        corpus = "".join(json.dumps({"_id": d, "title": "", "text": f"passage {d}"}) + "\n" for d in ("d1", "d2"))
    (root / "corpus.jsonl").write_text(corpus)
    if run is not None:
        (root / "bm25.run").write_text(run)
    if qrels is not None:
        (root / "qrels.txt").write_text(qrels)
    return root


def write_yaml(tmp: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


# ----------------------------------------------------------------------------- cases
# Each case: fn(tmp_path) must raise UserError whose one-line message matches the regex (what + where).

CASES: list[tuple[str, Callable[[Path], Any], str]] = []


def case(name: str, pattern: str) -> Callable[[Callable[[Path], Any]], Callable[[Path], Any]]:
    def deco(fn: Callable[[Path], Any]) -> Callable[[Path], Any]:
        CASES.append((name, fn, pattern))
        return fn
    return deco


# --- configs
def _cfg(recipe: str, *overrides: str) -> Callable[[Path], Any]:
    return lambda tmp: load_config(RECIPES / recipe, list(overrides))


for _name, _recipe, _sets, _pat in [
    ("config-unknown-top-key", "example-tiny.yaml", ["colour=red"], r"example-tiny\.yaml: unknown key 'colour'"),
    ("config-unknown-nested-key", "ngc-scenes-tiny.yaml", ["edge.widht=4"],
     r"ngc-scenes-tiny\.yaml: unknown key 'edge\.widht'.*did you mean 'width'"),
    ("config-wrong-type-number", "rerank-trecdl-tiny.yaml", ["fit.lr=fast"], r"field 'fit\.lr' = 'fast'.*number"),
    ("config-wrong-type-mapping", "example-tiny.yaml", ["data=5"], r"field 'data' = 5"),
    ("config-wrong-literal", "mst-avdigits-tiny.yaml", ["directions=[smell]"],
     r"field 'directions\.0' = 'smell'.*'image' or 'audio'"),
    ("config-negative-n-train", "example-tiny.yaml", ["data.n_train=-1"], r"field 'data\.n_train' = -1"),
    ("config-negative-resolution", "ngc-scenes-tiny.yaml", ["data.resolution=8"],
     r"field 'data\.resolution' = 8.*greater than or equal to 16"),
    ("config-negative-epochs", "mst-avdigits-tiny.yaml", ["mst.epochs_s1=-2"], r"field 'mst\.epochs_s1' = -2"),
    ("config-negative-pairs", "rerank-trecdl-tiny.yaml", ["sampling.pairs_per_batch=-16"],
     r"field 'sampling\.pairs_per_batch' = -16"),
    ("config-zero-batch", "mst-avdigits-tiny.yaml", ["fit.batch_size=0"], r"field 'fit\.batch_size' = 0"),
    ("config-negative-seed", "example-tiny.yaml", ["seed=-1"], r"field 'seed' = -1"),
    ("config-bad-name", "example-tiny.yaml", ["name=a b"], r"field 'name' = 'a b'"),
    ("config-unknown-recipe", "example-tiny.yaml", ["recipe=nope"], r"'nope'; valid recipes: example"),
    ("config-teacher-without-file", "rerank-trecdl-tiny.yaml", ["teachers.members=[{name: x, kind: run}]"],
     r"field 'teachers\.members\.0'.*teacher 'x' of kind 'run' needs 'file'"),
    ("config-monitor-not-a-measure", "rerank-trecdl-tiny.yaml", ["fit.monitor=val/bogus"],
     r"rerank-trecdl-tiny\.yaml: fit\.monitor 'val/bogus' must be"),
    ("config-set-without-equals", "example-tiny.yaml", ["seed"], r"--set 'seed': expected KEY=VALUE"),
]:
    CASES.append((_name, _cfg(_recipe, *_sets), _pat))


@case("config-missing-recipe-field", r"c\.yaml: missing field 'recipe'")
def _(tmp: Path) -> Any:
    return load_config(write_yaml(tmp, "name: x\n"))


@case("config-invalid-yaml", r"c\.yaml: line 2 is not valid YAML")
def _(tmp: Path) -> Any:
    return load_config(write_yaml(tmp, "recipe: example\nname: x: y\nseed: 1\n"))


@case("config-top-level-list", r"c\.yaml: top level must be a mapping")
def _(tmp: Path) -> Any:
    return load_config(write_yaml(tmp, "- recipe: example\n"))


@case("config-defaults-loop", r"a\.yaml: 'defaults' chain loops back")
def _(tmp: Path) -> Any:
    write_yaml(tmp, "defaults: b.yaml\n", "a.yaml")
    write_yaml(tmp, "defaults: a.yaml\n", "b.yaml")
    return load_config(tmp / "a.yaml")


@case("config-defaults-missing", r"config file not found: .*base\.yaml")
def _(tmp: Path) -> Any:
    return load_config(write_yaml(tmp, "defaults: base.yaml\nname: x\n"))


def _run_cli(tmp: Path, *args: str) -> None:
    """`multiteacher ARGS` in-process; re-raise its one-line stderr as a UserError (exit code 2)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(args))
    if code == 2:
        line = err.getvalue()
        assert line.startswith("error: ") and line.count("\n") == 1, line
        assert "Traceback" not in line, line
        raise UserError(line[len("error: "):])
    raise AssertionError(f"exit code {code}, stderr {err.getvalue()!r}")


MAX_LINE = 300  # an error line that quotes its input stays readable


def _run_recipe(tmp: Path, config: str | Path, *sets: str, data_dir: Path | None = None) -> None:
    """`multiteacher run CONFIG --run-dir tmp/run [--data-dir D] [--set ...]`: exit 2, and no run dir left."""
    config = config if Path(config).is_absolute() else RECIPES / config
    argv = ["run", str(config), "--run-dir", str(tmp / "run")]
    if data_dir is not None:
        argv += ["--data-dir", str(data_dir)]
    if sets:
        argv += ["--set", *sets]
    try:
        _run_cli(tmp, *argv)
    finally:
        assert not (tmp / "run").exists(), "a failed run left its run directory behind"


@case("config-missing-data-dir-mst", r"missing (MNIST|FSDD): .*no-such-dir/(mnist|fsdd/recordings) does not exist")
def _(tmp: Path) -> Any:
    try:
        _run_cli(tmp, "run", str(RECIPES / "mst-avdigits-tiny.yaml"), "--run-dir", str(tmp / "run"),
                 "--data-dir", str(tmp / "no-such-dir"))
    finally:
        assert not (tmp / "run").exists()  # nothing half-made


@case("config-missing-data-dir-rerank", r"missing TREC-DL set 'trec-dl/dl21': .*no-such-dir/trec-dl/dl21")
def _(tmp: Path) -> Any:
    try:
        _run_cli(tmp, "run", str(RECIPES / "rerank-trecdl-tiny.yaml"), "--run-dir", str(tmp / "run"),
                 "--data-dir", str(tmp / "no-such-dir"))
    finally:
        assert not (tmp / "run").exists()


@case("config-val-list-missing", r"data\.val_queries = '.*nope\.txt': file not found")
def _(tmp: Path) -> Any:
    from multiteacher.recipes.rerank import read_val_list

    return read_val_list(str(tmp / "nope.txt"))


# --- audio (FSDD wav)
def _wav(**kw: Any) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        from multiteacher.data.avdigits import read_wav

        return read_wav(write_wav(tmp / "3_george_7.wav", **kw))
    return fn


CASES += [
    ("wav-empty", _wav(n=0), r"3_george_7\.wav: empty wav \(0 samples\)"),
    ("wav-truncated-data", _wav(n=400, keep_bytes=44 + 300), r"3_george_7\.wav: truncated wav \(header says 400"),
    ("wav-truncated-header", _wav(n=400, keep_bytes=20), r"3_george_7\.wav: not a readable wav file"),
    ("wav-wrong-sample-rate", _wav(rate=16000), r"3_george_7\.wav: sample rate 16000 Hz, expected 8000 Hz"),
    ("wav-stereo", _wav(channels=2), r"3_george_7\.wav: 2 channel\(s\).*expected mono"),
]


@case("wav-zero-bytes", r"0_jackson_1\.wav: not a readable wav file")
def _(tmp: Path) -> Any:
    from multiteacher.data.avdigits import read_wav

    (tmp / "0_jackson_1.wav").write_bytes(b"")
    return read_wav(tmp / "0_jackson_1.wav")


@case("fsdd-no-recordings", r"missing FSDD: no files named .*fsdd/recordings")
def _(tmp: Path) -> Any:
    from multiteacher.data.avdigits import list_fsdd

    (tmp / "fsdd" / "recordings").mkdir(parents=True)
    (tmp / "fsdd" / "recordings" / "notes.txt").write_text("x")
    return list_fsdd(tmp)


@case("fold-unknown-speaker", r"fold speaker 'nobody' has no recordings in .*recordings; speakers found: a, b, c")
def _(tmp: Path) -> Any:
    from multiteacher.data import avdigits

    write_mnist(tmp)
    for sp in ("a", "b", "c"):
        write_wav(tmp / "fsdd" / "recordings" / f"1_{sp}_0.wav")
    return avdigits.make_fold(tmp, "nobody")


# --- images (MNIST IDX)
def _mnist(**kw: Any) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        from multiteacher.data.avdigits import load_mnist

        write_mnist(tmp / str(len(kw)), **kw)  # a fresh dir per case: load_mnist caches by path
        return load_mnist(tmp / str(len(kw)))
    return fn


_GOOD_IMAGES = idx_bytes(np.zeros((30, 28, 28)))
CASES += [
    ("idx-corrupt-magic", _mnist(images=b"\x12\x34\x08\x03" + _GOOD_IMAGES[4:]),
     r"train-images-idx3-ubyte: corrupt IDX header \(magic"),
    ("idx-header-too-short", _mnist(labels=b"\x00\x00"), r"train-labels-idx1-ubyte: corrupt IDX header \(file has 2"),
    ("idx-truncated-payload", _mnist(images=_GOOD_IMAGES[:-100]),
     r"train-images-idx3-ubyte: IDX payload has .* bytes but the header \(30, 28, 28\) needs 23520"),
    ("idx-count-mismatch", _mnist(labels=idx_bytes(np.arange(29) % 10)), r"30 images but .*labels.* has 29 labels"),
    ("idx-label-not-digit", _mnist(labels=idx_bytes(np.full(30, 12))),
     r"train-labels-idx1-ubyte: label 12 is not a digit"),
    ("idx-swapped-files", _mnist(images=idx_bytes(np.arange(30) % 10), labels=idx_bytes(np.zeros((30, 28, 28)))),
     r"expected images \(3-d\).*swapped or corrupt"),
]


@case("idx-missing-partner", r"train-images-idx3-ubyte: its partner train labels file is missing")
def _(tmp: Path) -> Any:
    from multiteacher.data.avdigits import load_mnist

    d = write_mnist(tmp)
    (d / "train-labels-idx1-ubyte").unlink()
    return load_mnist(tmp)


# --- image frames (npz directory)
@case("npz-image-shape-mismatch", r"rgb/00001\.npz has shape \(16, 16, 3\), but 00000 has \(8, 8, 3\)")
def _(tmp: Path) -> Any:
    from multiteacher.data.npzdir import NpzDir

    (tmp / "d" / "rgb").mkdir(parents=True)
    np.savez(tmp / "d" / "rgb" / "00000.npz", np.zeros((8, 8, 3), np.uint8))
    np.savez(tmp / "d" / "rgb" / "00001.npz", np.zeros((16, 16, 3), np.uint8))
    return NpzDir(tmp / "d").export(tmp / "cache", progress=False)


@case("npz-two-arrays", r"depth/00000\.npz holds 2 arrays")
def _(tmp: Path) -> Any:
    from multiteacher.data.npzdir import NpzDir

    (tmp / "d" / "depth").mkdir(parents=True)
    np.savez(tmp / "d" / "depth" / "00000.npz", a=np.zeros((4, 4)), b=np.zeros((4, 4)))
    return NpzDir(tmp / "d").read("depth", "00000")


# --- IR: runs, qrels, queries, corpus
def _ir(**kw: Any) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        from multiteacher.data.ir import load_dir

        return load_dir(write_ir(tmp / "dl", **kw))
    return fn


CASES += [
    ("run-five-columns", _ir(run="q1 Q0 d1 1 2.0 bm25\nq1 Q0 d2 2 1.0\n"),
     r"dl/bm25\.run:2: expected 6 fields 'qid Q0 docid rank score tag', got 5"),
    ("run-score-not-a-number", _ir(run="q1 Q0 d1 1 high bm25\n"),
     r"dl/bm25\.run:1: rank '1' / score 'high' is not a number"),
    ("run-duplicate-doc", _ir(run="q1 Q0 d1 1 2.0 x\nq1 Q0 d2 2 1.5 x\nq1 Q0 d1 3 1.0 x\n"),
     r"dl/bm25\.run:3: document 'd1' listed twice for query 'q1'"),
    ("run-unknown-query", _ir(run="q1 Q0 d1 1 2.0 x\nq9 Q0 d1 1 2.0 x\n"),
     r"dl: candidate run names query 'q9' that is not in the queries file"),
    ("run-unknown-doc", _ir(run="q1 Q0 d7 1 2.0 x\n"),
     r"dl: candidate 'd7' of query 'q1' has no passage in the corpus"),
    ("qrels-unknown-doc", _ir(run=None, qrels="q1 0 d1 1\nq1 0 d404 2\n"),
     r"dl: candidate 'd404' of query 'q1' has no passage in the corpus"),
    ("qrels-bad-columns", _ir(qrels="q1 0 d1 1\nq1 d1\n"), r"dl/qrels\.txt:2: expected 'qid 0 docid rel'"),
    ("qrels-grade-not-a-number", _ir(qrels="q1 0 d1 yes\n"), r"dl/qrels\.txt:1: relevance 'yes' is not a number"),
    ("queries-no-tab", _ir(queries="q1 first query\n"), r"dl/queries\.tsv:1: expected 'qid<TAB>text'"),
    ("empty-query-set", _ir(queries=""), r"dl: the queries file holds no queries"),
    ("run-nan-score", _ir(run="q1 Q0 d1 1 nan bm25\n"), r"dl/bm25\.run:1: score 'nan' is not finite"),
    ("run-inf-score", _ir(run="q1 Q0 d1 1 inf bm25\n"), r"dl/bm25\.run:1: score 'inf' is not finite"),
    ("queries-duplicate-id", _ir(queries="q1\tfirst\nq1\tagain\n"), r"dl/queries\.tsv:2: query id 'q1' appears twice"),
    ("corpus-duplicate-id", _ir(corpus='{"_id": "d1", "text": "a"}\n{"_id": "d1", "text": "b"}\n'),
     r"dl/corpus\.jsonl:2: passage id 'd1' appears twice"),
    ("qrels-conflicting-grades", _ir(qrels="q1 0 d1 1\nq1 0 d1 3\n"), r"dl/qrels\.txt:2: \(q1, d1\) judged twice"),
    ("qrels-of-another-set", _ir(qrels="x7 0 d1 1\n"), r"dl: the qrels name none of the 2 queries"),
    ("corpus-bad-json", _ir(corpus='{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": \n'),
     r"dl/corpus\.jsonl:2: invalid JSON"),
    ("corpus-no-text", _ir(corpus='{"_id": "d1", "text": "a"}\n{"_id": "d2", "body": "b"}\n'),
     r"dl/corpus\.jsonl:2: passage 'd2' has no string 'text' field"),
    ("corpus-no-id", _ir(corpus='{"text": "a"}\n'), r"dl/corpus\.jsonl:1: expected a JSON object with an '_id' field"),
]


@case("ir-missing-dir", r"missing IR directory: .*nowhere does not exist")
def _(tmp: Path) -> Any:
    from multiteacher.data.ir import load_dir

    return load_dir(tmp / "nowhere")


@case("val-list-bad-line", r"val\.txt:2: expected 'set qid'")
def _(tmp: Path) -> Any:
    from multiteacher.recipes.rerank import read_val_list

    (tmp / "val.txt").write_text("trec-dl/dl21 q1\ntrec-dl/dl21\n")
    return read_val_list(str(tmp / "val.txt"))


@case("val-list-unknown-query", r"val\.txt: query 'q404' is not in trec-dl/dl21")
def _(tmp: Path) -> Any:
    from multiteacher.recipes.rerank import load_sets

    write_ir(tmp / "data" / "trec-dl" / "dl21")
    write_ir(tmp / "data" / "trec-dl" / "dl19")
    (tmp / "val.txt").write_text("trec-dl/dl21 q1\ntrec-dl/dl21 q404\n")
    cfg = load_config(RECIPES / "rerank-trecdl-tiny.yaml", [f"data.val_queries={tmp / 'val.txt'}"])
    return load_sets(cfg, tmp / "data")


@case("scores-file-bad-columns", r"teacher\.tsv:1: expected 'pos_score neg_score qid pos_pid neg_pid', got 4")
def _(tmp: Path) -> Any:
    from multiteacher.data.ir import read_hofstaetter

    (tmp / "teacher.tsv").write_text("1.0\t0.5\tq1\td1\n")
    return read_hofstaetter(tmp / "teacher.tsv")


# --- teachers: outputs, cache, model paths
def _fill(outputs: np.ndarray, tmp: Path, ids: list[Any] | None = None) -> Any:
    from multiteacher.teachers.cache import cached_outputs

    ids = ids if ids is not None else [f"s{i}" for i in range(len(outputs))]
    return cached_outputs(lambda idx: outputs[idx], np.arange(len(outputs)), ids, teacher_fp="t-bad",
                          data_fp="d", root=tmp / "cache", shard_size=4, progress=False)


@case("teacher-nan-output", r"teacher t-bad output for sample id 's6' is nan \(not finite\)")
def _(tmp: Path) -> Any:
    out = np.ones((10, 3), np.float32)
    out[6, 1] = np.nan
    return _fill(out, tmp)


@case("teacher-inf-output", r"sample id 's2' is -inf \(not finite\)")
def _(tmp: Path) -> Any:
    out = np.ones(10, np.float64)
    out[2] = -np.inf
    return _fill(out, tmp)


@case("teacher-wrong-row-count", r"teacher returned 2 rows for a batch of 4 samples \(ids 's0'")
def _(tmp: Path) -> Any:
    from multiteacher.teachers.cache import cached_outputs

    return cached_outputs(lambda idx: np.zeros((2, 3)), np.arange(10), [f"s{i}" for i in range(10)],
                          teacher_fp="t", data_fp="d", root=tmp / "cache", shard_size=4, progress=False)


@case("teacher-duplicate-ids", r"duplicate sample id 's1' in the ids given to TeacherCache")
def _(tmp: Path) -> Any:
    return _fill(np.zeros((3, 2)), tmp, ids=["s0", "s1", "s1"])


@case("cache-truncated-shard", r"teacher cache .* is incomplete or damaged \(1 of 3 shards missing, e\.g\. 1\)")
def _(tmp: Path) -> Any:
    from multiteacher.teachers.cache import TeacherCache

    cache = TeacherCache(tmp / "cache", "t", "d", [f"s{i}" for i in range(10)], shard_size=4)
    cache.fill(lambda idx: np.ones((len(idx), 5), np.float32), np.arange(10), progress=False)
    shard = cache.shard_path(1)
    shard.write_bytes(shard.read_bytes()[:-7])
    return cache.open()


@case("teacher-model-path-missing", r"teachers\.members\[ce\]\.path = '.*no-model': cannot load the model")
def _(tmp: Path) -> Any:
    from multiteacher.recipes.rerank.teachers import TeacherSpec, make_teacher

    return make_teacher(TeacherSpec(name="ce", kind="crossencoder", path=str(tmp / "no-model")), None, None)


@case("teacher-precomputed-file-missing", r"precomputed teacher outputs not found: .*logits\.npy")
def _(tmp: Path) -> Any:
    from multiteacher.teachers.base import PrecomputedTeacher

    return PrecomputedTeacher.from_file(tmp / "logits.npy")


@case("teacher-precomputed-duplicate-ids", r"teacher 'p' \(array\): duplicate sample ids")
def _(tmp: Path) -> Any:
    from multiteacher.teachers.base import PrecomputedTeacher

    return PrecomputedTeacher("p", np.zeros((3, 2)), ids=["a", "b", "a"])


@case("teacher-precomputed-unknown-id", r"teacher 'p' \(.*logits\.npy\) has no output for sample id 'zz'")
def _(tmp: Path) -> Any:
    from multiteacher.teachers.base import PrecomputedTeacher

    np.save(tmp / "logits.npy", np.zeros((2, 3), np.float32))
    return PrecomputedTeacher.from_file(tmp / "logits.npy", ids=["a", "b"], name="p").predict(["a", "zz"])


@case("teacher-missing-submodule", r"teacher 'net' has no submodule 'encoder\.layer\.9'")
def _(tmp: Path) -> Any:
    from multiteacher.teachers.base import ModuleTeacher

    return ModuleTeacher(torch.nn.Sequential(torch.nn.Linear(2, 2)), "net").features(torch.zeros(1, 2),
                                                                                  ["encoder.layer.9"])


# ----------------------------------------------------------------------------- issue 15: more classes
FIRST_BOUNDED = len(CASES)  # from here on every message is also at most MAX_LINE characters
# Every case below goes through the real `multiteacher run` / `report` / `data` command where it can
# (exit 2, one line on stderr of at most MAX_LINE characters, no run directory left behind).

# --- non-finite or absurd numbers that used to pass validation (one mechanism on StrictModel)
for _name, _recipe, _sets, _pat in [
    ("num-lr-inf", "example-tiny.yaml", ["teacher_fit.lr=.inf"], r"field 'teacher_fit\.lr' = inf: .*finite number"),
    ("num-lr-nan", "rerank-trecdl-tiny.yaml", ["fit.lr=.nan"], r"field 'fit\.lr' = nan: .*finite number"),
    ("num-temperature-inf", "example-tiny.yaml", ["kd.temperature=.inf"],
     r"field 'kd\.temperature' = inf: .*finite number"),
    ("num-temperature-nan-mst", "mst-avdigits-tiny.yaml", ["mst.temperature=.nan"],
     r"field 'mst\.temperature' = nan: .*finite number"),
    ("num-mask-quantile-nan", "ngc-scenes-tiny.yaml", ["consensus.mask_quantile=.nan"],
     r"field 'consensus\.mask_quantile' = nan"),
    ("num-seed-beyond-64-bits", "example-tiny.yaml", ["seed=18446744073709551616"],
     r"field 'seed' = 18446744073709551616: .*less than or equal to 4294967295"),
    ("num-seed-beyond-32-bits", "ngc-scenes-tiny.yaml", ["seed=4294967296"], r"field 'seed' = 4294967296"),
    ("num-batch-size-1e12", "mst-avdigits-tiny.yaml", ["fit.batch_size=1000000000000"],
     r"field 'fit\.batch_size' = 1000000000000: integer 1000000000000 is out of range"),
    ("num-resolution-1e6", "ngc-scenes-tiny.yaml", ["data.resolution=1000000"],
     r"field 'data\.resolution' = 1000000: .*less than or equal to 512"),
    ("num-max-length-1e12", "rerank-trecdl-tiny.yaml", ["model.max_length=1000000000000"],
     r"field 'model\.max_length' = 1000000000000: .*less than or equal to 8192"),
    ("num-pairs-per-batch-1e8", "rerank-trecdl-tiny.yaml", ["sampling.pairs_per_batch=100000000"],
     r"field 'sampling\.pairs_per_batch' = 100000000: .*less than or equal to 65536"),
    ("num-objects-per-scene-1e6", "ngc-scenes-tiny.yaml", ["data.objects_max=1000000"],
     r"field 'data\.objects_max' = 1000000: .*less than or equal to 64"),
    ("num-max-steps-1e15", "ngc-scenes-tiny.yaml", ["edge.max_steps=1000000000000000"],
     r"field 'edge\.max_steps' = 1000000000000000: integer .* out of range"),
    ("num-node-scale-inf", "ngc-scenes-tiny.yaml", ["nodes.depth.scale=.inf"],
     r"field 'nodes\.depth\.scale' = inf: .*finite number"),
    # an override into a section the file omits merges into the default: the error names the bad value,
    # not a "missing required field" of a section wiped by the override
    ("override-merges-into-default-section", "ngc-scenes-tiny.yaml", ["nodes.depth.scale=-2.0"],
     r"field 'nodes\.depth\.scale' = -2\.0: Input should be greater than 0"),
]:
    CASES.append((_name, (lambda r, s: lambda tmp: _run_recipe(tmp, r, *s))(_recipe, _sets), _pat))


@case("num-inf-in-the-yaml-file", r"c\.yaml: field 'student_fit\.lr' = inf: .*finite number")
def _(tmp: Path) -> Any:
    _run_recipe(tmp, write_yaml(tmp, f"defaults: {RECIPES / 'example-tiny.yaml'}\nstudent_fit: {{lr: .inf}}\n"))


# --- YAML: duplicate keys, defaults that is not one path, bounded quotes, non-UTF-8
@case("yaml-duplicate-top-key", r"c\.yaml: line 4: key 'seed' appears twice in one mapping \(first at line 3\)")
def _(tmp: Path) -> Any:
    _run_recipe(tmp, write_yaml(tmp, "recipe: example\nname: x\nseed: 1\nseed: 2\n"))


@case("yaml-duplicate-nested-key", r"c\.yaml: line 3: key 'lr' appears twice .*first at line 3")
def _(tmp: Path) -> Any:
    _run_recipe(tmp, write_yaml(tmp, "recipe: example\nname: x\nteacher_fit: {lr: 0.1, lr: 0.2}\n"))


@case("yaml-defaults-list", r"c\.yaml: 'defaults' = \['a\.yaml', 'b\.yaml'\]: must be one file path")
def _(tmp: Path) -> Any:
    _run_recipe(tmp, write_yaml(tmp, "defaults: [a.yaml, b.yaml]\nname: x\n"))


@case("yaml-defaults-empty", r"c\.yaml: 'defaults' = None: must be one file path")
def _(tmp: Path) -> Any:
    _run_recipe(tmp, write_yaml(tmp, "defaults:\nrecipe: example\nname: x\n"))


@case("yaml-defaults-mapping-in-parent", r"mid\.yaml: 'defaults' = \{'file': 'x\.yaml'\}: must be one file path")
def _(tmp: Path) -> Any:
    write_yaml(tmp, "defaults: {file: x.yaml}\n", "mid.yaml")
    _run_recipe(tmp, write_yaml(tmp, "defaults: mid.yaml\nname: x\n"))


@case("yaml-non-utf8", r"c\.yaml: line 2: not UTF-8 text \(byte 0xff at offset \d+\)")
def _(tmp: Path) -> Any:
    (tmp / "c.yaml").write_bytes(b"recipe: example\nname: caf\xff\n")
    _run_recipe(tmp, tmp / "c.yaml")


@case("yaml-non-utf8-in-parent", r"base\.yaml: line 1: not UTF-8 text \(byte 0xe9")
def _(tmp: Path) -> Any:
    (tmp / "base.yaml").write_bytes(b"name: caf\xe9\n")
    _run_recipe(tmp, write_yaml(tmp, "defaults: base.yaml\nrecipe: example\n"))


@case("long-value-is-quoted-short", r"field 'name' = 'a a a.*\.\.\. \(\d+ chars\): String should match pattern")
def _(tmp: Path) -> Any:
    _run_recipe(tmp, "example-tiny.yaml", "name=" + "a " * 2500)


@case("long-unknown-key-is-quoted-short", r"unknown key 'kkkk.*\.\.\.' — valid keys at top level")
def _(tmp: Path) -> Any:
    _run_recipe(tmp, "example-tiny.yaml", "k" * 5000 + "=1")


@case("long-set-without-equals-is-quoted-short", r"--set 'zzzz.*\.\.\. \(5002 chars\): expected KEY=VALUE")
def _(tmp: Path) -> Any:
    _run_recipe(tmp, "example-tiny.yaml", "z" * 5000)


@case("long-literal-is-quoted-short", r"field 'directions\.0' = 'sss.*\.\.\. \(\d+ chars\): Input should be")
def _(tmp: Path) -> Any:
    _run_recipe(tmp, "mst-avdigits-tiny.yaml", "directions=[" + "s" * 3000 + "]")


# --- IR data files: non-UTF-8 bytes and empty query texts, through a real rerank run
def _trec(tmp: Path, **bad: Any) -> Path:
    """data/trec-dl/{dl21,dl19} small sets and a validation list; `bad` replaces files of dl19 (bytes or str)."""
    root = tmp / "data" / "trec-dl"
    write_ir(root / "dl21")
    write_ir(root / "dl19")
    for name, content in bad.items():
        path = root / "dl19" / name.replace("_", ".")
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (tmp / "val.txt").write_text("trec-dl/dl21 q1\n")
    return tmp / "data"


def _rerank_data(**bad: Any) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        _run_recipe(tmp, "rerank-trecdl-tiny.yaml", f"data.val_queries={tmp / 'val.txt'}",
                    data_dir=_trec(tmp, **bad))
    return fn


CASES += [
    ("ir-queries-non-utf8", _rerank_data(queries_tsv=b"q1\tfirst \xff query\nq2\tsecond\n"),
     r"dl19/queries\.tsv:1: not UTF-8 text \(byte 0xff at column 10\)"),
    ("ir-corpus-non-utf8", _rerank_data(corpus_jsonl=b'{"_id": "d1", "text": "a"}\n{"_id": "d2", "text": "\xc3("}\n'),
     r"dl19/corpus\.jsonl:2: not UTF-8 text \(byte 0xc3"),
    ("ir-run-non-utf8", _rerank_data(bm25_run=b"q1 Q0 d1 1 2.0 bm25\nq2 Q0 d1 1 3.0 bm\xfe25\n"),
     r"dl19/bm25\.run:2: not UTF-8 text \(byte 0xfe"),
    ("ir-qrels-non-utf8", _rerank_data(qrels_txt=b"q1 0 d1 1\n\x80q2 0 d1 0\n"),
     r"dl19/qrels\.txt:2: not UTF-8 text \(byte 0x80 at column 1\)"),
    ("ir-empty-query-text", _rerank_data(queries_tsv="q1\tfirst query\nq2\t   \n"),
     r"dl19/queries\.tsv:2: query 'q2' has empty text"),
    ("ir-long-query-id-is-quoted-short", _rerank_data(queries_tsv="Q" * 4000 + "\ta\n" + "Q" * 4000 + "\tb\n"),
     r"dl19/queries\.tsv:2: query id 'QQQ+' appears twice"),
]


@case("ir-empty-query-text-jsonl", r"queries\.jsonl:2: query 'q2' has empty text")
def _(tmp: Path) -> Any:
    from multiteacher.data.ir import read_queries_jsonl

    (tmp / "queries.jsonl").write_text('{"_id": "q1", "text": "a"}\n{"_id": "q2", "text": ""}\n')
    return read_queries_jsonl(tmp / "queries.jsonl")


@case("val-list-non-utf8", r"val\.txt: line 2: not UTF-8 text")
def _(tmp: Path) -> Any:
    data = _trec(tmp)
    (tmp / "val.txt").write_bytes(b"trec-dl/dl21 q1\ntrec-dl/dl21 q\xff\n")
    _run_recipe(tmp, "rerank-trecdl-tiny.yaml", f"data.val_queries={tmp / 'val.txt'}", data_dir=data)


# --- shapes that do not fit the recipe, through a real NGC run on an npz folder
def _npz_folder(tmp: Path, shape: dict[str, tuple[int, ...]] | None = None, semantic: Any = None,
                n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    shapes = {"rgb": (16, 16, 3), "depth": (16, 16), "normals": (16, 16, 3), "semantic": (16, 16),
              "height": (16, 16), **(shape or {})}
    for i in range(n):
        for rep, shp in shapes.items():
            (tmp / "d" / rep).mkdir(parents=True, exist_ok=True)
            if rep == "rgb":
                arr = rng.integers(0, 256, shp, dtype=np.uint8)
            elif rep == "semantic":
                arr = np.full(shp, 1, np.uint8) if semantic is None or i != n - 1 else semantic(shp)
            else:
                arr = rng.random(shp, dtype=np.float32)
            np.savez(tmp / "d" / rep / f"{i:05d}.npz", arr)
    return tmp / "d"


def _ngc_npz(**kw: Any) -> Callable[[Path], Any]:
    def fn(tmp: Path) -> Any:
        _run_recipe(tmp, "ngc-scenes-tiny.yaml", f"npz.root={_npz_folder(tmp, **kw)}", "npz.group=1",
                    "npz.test_every=2")
    return fn


CASES += [
    ("npz-maps-of-different-resolutions", _ngc_npz(shape={"depth": (8, 8)}),
     r"maps are \(16, 16\) but 'depth' maps are \(8, 8\) \(frame 00000\); every representation must have the same"),
    ("npz-class-id-beyond-channels", _ngc_npz(semantic=lambda s: np.full(s, 40, np.uint8)),
     r"semantic/00005\.npz: class id 40 is not below the node's 9 channels"),
    ("npz-negative-class-id", _ngc_npz(semantic=lambda s: np.full(s, -1, np.int16)),
     r"semantic/00005\.npz: class id -1 is not below"),
    ("npz-float-class-map", _ngc_npz(semantic=lambda s: np.full(s, 0.5, np.float32)),
     r"semantic/00005\.npz: a categorical map must hold integer class ids, got dtype float32"),
    ("npz-image-of-another-size", _ngc_npz(shape={"rgb": (16, 20, 3)}),
     r"'rgb' maps are \(16, 20\)"),
]


@case("npz-check-reads-the-last-file", r"normals/00003\.npz has shape \(4, 4, 3\), but 00000 has \(8, 8, 3\)")
def _(tmp: Path) -> Any:
    from multiteacher.data.npzdir import NpzDir

    for i in range(4):
        (tmp / "d" / "normals").mkdir(parents=True, exist_ok=True)
        np.savez(tmp / "d" / "normals" / f"{i:05d}.npz", np.zeros((4, 4, 3) if i == 3 else (8, 8, 3), np.float32))
    return NpzDir(tmp / "d").check()


@case("scenes-cache-meta-non-utf8", r"rendered scenes in .*split are damaged \(UnicodeDecodeError.*delete that folder")
def _(tmp: Path) -> Any:
    from multiteacher.data.scenes import load_scenes

    (tmp / "split").mkdir()
    (tmp / "split" / "meta.json").write_bytes(b'{"classes": ["\xff"]}')
    return load_scenes(tmp / "split")


@case("data-check-reads-every-recording", r"1 dataset\(s\) failed the check in .*data")
def _(tmp: Path) -> Any:
    write_mnist(tmp / "data")
    for i, sp in enumerate(("a", "b", "c")):
        write_wav(tmp / "data" / "fsdd" / "recordings" / f"{i}_{sp}_0.wav")
    write_wav(tmp / "data" / "fsdd" / "recordings" / "9_c_9.wav", keep_bytes=30)  # sorted last: a damaged one
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            _run_cli(tmp, "data", "check", "avdigits", "--data-dir", str(tmp / "data"))
        finally:
            assert "9_c_9.wav: not a readable wav file" in out.getvalue(), out.getvalue()


# --- report: what should not be mixed, unknown fields, no run
def _results(tmp: Path, name: str, recipe: str = "ngc") -> Path:
    d = tmp / name
    d.mkdir()
    (d / "results.json").write_text(json.dumps({
        "recipe": recipe, "name": name, "seed": 0, "config_hash": "h", "commit": "c", "config": {},
        "metrics": {}, "rows": [{"kind": "direct", "rmse": 1.0}]}))
    return d


@case("report-mixed-recipes", r"report: these runs come from different recipes \(mst: 1 run\(s\), ngc: 1 run\(s\)\)")
def _(tmp: Path) -> Any:
    _run_cli(tmp, "report", str(_results(tmp, "a")), str(_results(tmp, "b", "mst")))


@case("report-unknown-where-field", r"--where 'knid': no row of these runs has that field — did you mean 'kind'")
def _(tmp: Path) -> Any:
    _run_cli(tmp, "report", str(_results(tmp, "a")), "--where", "knid=direct")


@case("report-unknown-column", r"--columns 'rmsd': no row .* did you mean 'rmse'")
def _(tmp: Path) -> Any:
    _run_cli(tmp, "report", str(_results(tmp, "a")), "--columns", "rmsd")


@case("report-unknown-by-field", r"no field 'config\.graph\.hyperedgs' \(did you mean 'hyperedges'\?\) — check --by")
def _(tmp: Path) -> Any:
    d = _results(tmp, "a")
    res = json.loads((d / "results.json").read_text())
    (d / "results.json").write_text(json.dumps({**res, "config": {"graph": {"hyperedges": True}}}))
    _run_cli(tmp, "report", str(d), "--by", "config.graph.hyperedgs")


@case("report-empty-dir", r"no run here: .*empty \(no results\.json, run\.json or config\.yaml in it\)")
def _(tmp: Path) -> Any:
    (tmp / "empty").mkdir()
    _run_cli(tmp, "report", str(tmp / "empty"))


@case("report-results-non-utf8", r"badres: results\.json is not UTF-8 text \(byte 0xff at offset 10\)")
def _(tmp: Path) -> Any:
    (tmp / "badres").mkdir()
    (tmp / "badres" / "results.json").write_bytes(b'{"name": "\xff"}')
    _run_cli(tmp, "report", str(tmp / "badres"))


@case("report-missing-path", r"no run here: .*nowhere \(no such file or directory\)")
def _(tmp: Path) -> Any:
    _run_cli(tmp, "report", str(tmp / "nowhere"))


# ----------------------------------------------------------------------------- the test
BOUNDED = {c[1] for c in CASES[FIRST_BOUNDED:]}



def test_corpus_is_large_enough() -> None:
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    assert len(CASES) >= 30
    assert len(CASES) - FIRST_BOUNDED >= 30  # issue 15: at least 30 new cases, each through the bounded checks


@pytest.mark.parametrize("fn,pattern", [pytest.param(fn, pat, id=name) for name, fn, pat in CASES])
def test_bad_input_is_one_clear_line(fn: Callable[[Path], Any], pattern: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a missing model must fail fast, not retry the network
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError) as info:
        fn(tmp_path)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    if fn in BOUNDED:
        assert len(msg) <= MAX_LINE, f"{len(msg)} characters: {msg[:400]}"
    assert re.search(pattern, msg), f"message does not match {pattern!r}:\n{msg}"
    assert "Traceback" not in msg
