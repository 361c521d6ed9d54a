"""Text teachers: score (query, passage) pairs — live encoders and rankers known by their run files.

Three engine `Teacher`s for ranking (see `teachers.base.Teacher`):

- `BiEncoderTeacher`: a sentence-transformers style encoder folder (mean pooling, L2-normalised,
  cosine similarity of query and passage), scored live;
- `CrossEncoderTeacher`: any `AutoModelForSequenceClassification` folder with one logit per pair;
- `RunTeacher`: a first-stage ranker or an LLM ordering known only by its TREC run. It is a
  `PrecomputedTeacher` over pair ids; a pair the ranker did not retrieve has **no** score (NaN in
  `predict`, absent from the run that `cached_run` returns): missingness is explicit, never a
  made-up floor.

A batch of pairs is a mapping `{"ids": [pair ids], "pairs": [(query text, passage text)]}` (pair id
`"qid<TAB>docid"`, see `pair_id`), so one batch serves a mixed `TeacherPool`; live teachers also take
a plain list of `(query, passage)` tuples. `cached_run` scores every candidate pair of an `IRData`
set once into the teacher cache (`teachers.cache.cached_outputs`), keyed by the teacher's fingerprint
and the set's fingerprint, and returns the run `{qid: {docid: score}}`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from multiteacher.errors import ConfigError, UserError
from multiteacher.teachers.base import PrecomputedTeacher, file_digest, fingerprint_obj

if TYPE_CHECKING:
    from multiteacher.data.ir import IRData

Run = dict[str, dict[str, float]]

__all__ = [
    "BiEncoderTeacher",
    "CrossEncoderTeacher",
    "RunTeacher",
    "cached_run",
    "hub_snapshot",
    "model_fingerprint",
    "pair_id",
    "ranks_to_scores",
]


def pair_id(qid: str, docid: str) -> str:
    """The sample id of a (query, passage) pair in the teacher cache: `"qid<TAB>docid"`.

    Args:
        qid: query id.
        docid: passage id.

    Returns:
        The pair id string.

    Example:
        >>> pair_id("q1", "d7")
        'q1\\td7'
    """
    return f"{qid}\t{docid}"


def _resolve_model(ref: str) -> str:
    p = Path(ref).expanduser()
    return str(p) if p.exists() else ref


def hub_snapshot(ref: str) -> Path | None:
    """The local snapshot folder of a hub model name, if the Hugging Face cache holds one.

    Args:
        ref: a hub name (``org/model``).

    Returns:
        The snapshot folder (the files `from_pretrained` loads), or None when it is not cached or
        `huggingface_hub` is missing.

    Example:
        >>> hub_snapshot("no-such-org/no-such-model") is None
        True
    """
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, local_files_only=True))
    except Exception:  # not cached, not a valid repo id, offline, no huggingface_hub
        return None


def model_fingerprint(ref: str, extra: Any = None) -> str:
    """Fingerprint of a model folder (or hub name) plus settings, for the teacher cache key.

    Hashes every file of the folder (config, tokenizer and weights) in full, by relative path and
    content (`teachers.base.file_digest`: each file is read once per process and memoised by path,
    inode, size and modification time; the 92 MB all-MiniLM-L6-v2 folder takes 0.07 s here), so a
    tensor rewritten at the same file size gives a new fingerprint. Hidden files and folders
    (``.git``, ``.cache``) are skipped. A hub name is resolved to its snapshot in the local Hugging
    Face cache and hashed the same way; only when no snapshot is cached (the model could not have
    been loaded offline either) is it hashed by its name, marked ``hub-name-only`` — then a new
    upload under the same name is not noticed. `extra` (e.g. kind and max length) joins the hash.

    Args:
        ref: local model folder or hub name.
        extra: settings that change the outputs (anything with a stable `repr`).

    Returns:
        A SHA-256 hex digest.

    Example:
        >>> len(model_fingerprint("sentence-transformers/all-MiniLM-L6-v2", {"max_length": 256}))
        64
    """
    h = hashlib.sha256(f"model-files-v2|{extra!r}".encode())
    p = Path(ref).expanduser()
    folder = p if p.is_dir() else (None if p.exists() else hub_snapshot(ref))
    if folder is None and p.is_file():
        h.update(f"file:{p.name}\0{file_digest(p)}\n".encode())
    elif folder is None:
        h.update(f"hub-name-only:{ref}".encode())
    else:
        for f in sorted(folder.rglob("*")):
            rel = f.relative_to(folder)
            if any(part.startswith(".") for part in rel.parts) or not f.is_file():
                continue
            h.update(f"{rel.as_posix()}\0{file_digest(f)}\n".encode())
    return h.hexdigest()


def _pairs_of(batch: Any) -> list[tuple[str, str]]:
    if isinstance(batch, Mapping):
        if "pairs" not in batch:
            raise UserError("a text teacher needs the batch's (query, passage) texts under 'pairs'")
        batch = batch["pairs"]
    return [(str(q), str(p)) for q, p in batch]


class _PairEncoderTeacher:
    """Shared loading, fingerprint, device and scoring path of the live pair teachers.

    Scoring goes through `models.pair_scoring.PairRunner`: inputs tokenised once, token-sorted
    batches of `batch_size`, ONNX Runtime or PyTorch (`backend`; `auto` measures both once per machine
    and architecture). The model is exported (and the backend chosen) at the first `predict`, once per
    teacher object. The fingerprint does not depend on `backend` or `batch_size`: both change outputs
    only by float rounding (ONNX Runtime and PyTorch agree within 1e-5 in fp32, `tests/test_pair_scoring_backend.py`),
    so cached scores stay valid across machines and settings.
    """

    kind: Literal["biencoder", "crossencoder"]
    default_batch_size = 16

    def __init__(self, name: str, path: str, *, max_length: int = 256, device: str | torch.device = "cpu",
                 batch_size: int | None = None, backend: Literal["auto", "torch", "onnx"] = "auto") -> None:
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        from multiteacher.models.pair_scoring import PairRunner

        self.name, self.path, self.max_length, self.device = name, path, int(max_length), torch.device(device)
        ref = _resolve_model(path)
        try:
            self.tok = AutoTokenizer.from_pretrained(ref)
            cls = AutoModel if self.kind == "biencoder" else AutoModelForSequenceClassification
            self.model = cls.from_pretrained(ref)
        except (OSError, ValueError):
            raise ConfigError(
                f"teacher {name!r}: cannot load the model {path!r} — give a local folder "
                "(`make models` puts copies under ./models/) or a hub name"
            ) from None
        self.model.float().eval().requires_grad_(False).to(self.device)  # fp32 even from a half checkpoint
        # the scoring code's version `v` and the dtype it computes in join the model's files
        dtype = str(next(self.model.parameters()).dtype)
        self._fp = model_fingerprint(ref, {"kind": self.kind, "max_length": self.max_length, "v": 1, "dtype": dtype})
        self.batch_size = int(batch_size or self.default_batch_size)
        self.runner = PairRunner(self.model, self.tok, self.max_length, self.batch_size, backend,
                                 "embedding" if self.kind == "biencoder" else "logit", self.device)

    @property
    def fingerprint(self) -> str:
        """Hex digest of the model files and settings (see `model_fingerprint`)."""
        return self._fp

    def predict(self, batch: Any) -> torch.Tensor:
        """Scores (P,) for a batch of P (query, passage) pairs (or a mapping with `"pairs"`).

        Args:
            batch: `[(query, passage), ...]` or `{"pairs": [...], ...}`.

        Returns:
            A float32 CPU tensor of one score per pair.
        """
        pairs = _pairs_of(batch)
        if not pairs:
            return torch.zeros(0)
        return self._score([q for q, _ in pairs], [p for _, p in pairs])

    __call__ = predict

    def _score(self, qs: list[str], ps: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, path={self.path!r}, max_length={self.max_length})"


class BiEncoderTeacher(_PairEncoderTeacher):
    """A live bi-encoder: cosine of mean-pooled, L2-normalised query and passage embeddings.

    Matches `sentence_transformers.SentenceTransformer` with a mean `Pooling` module and
    `normalize_embeddings=True`. Each distinct text is embedded once and kept across batches (up to
    `QUERY_MEMO` texts, queries and passages alike), so scoring a set's candidates embeds every query
    and every passage once, as encoding queries and corpus separately would. Not an `nn.Module` (never lands in
    a student checkpoint); eval mode, no gradients.

    Args:
        name: teacher name (unique in a pool).
        path: model folder or hub name.
        max_length: tokens per text (query and passage are encoded separately).
        device: where the encoder runs.
        batch_size: texts per forward pass (default 16, the fastest on CPU in B7).
        backend: `auto` (ONNX Runtime or PyTorch, measured), `torch` or `onnx`.

    Example:
        >>> t = BiEncoderTeacher("minilm", "models/all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> t.predict([("what is a flea", "Fleas are insects.")]).shape  # doctest: +SKIP
        torch.Size([1])
    """

    kind = "biencoder"
    QUERY_MEMO = 200_000  # texts (queries and passages) whose embeddings are kept: ~300 MB at 384 dims

    def __init__(self, name: str, path: str, *, max_length: int = 256, device: str | torch.device = "cpu",
                 batch_size: int | None = None, backend: Literal["auto", "torch", "onnx"] = "auto") -> None:
        super().__init__(name, path, max_length=max_length, device=device, batch_size=batch_size, backend=backend)
        self._queries: dict[str, np.ndarray] = {}  # text -> embedding (queries and passages)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """L2-normalised mean-pooled embeddings `(N, H)` of `texts` (float32), in input order.

        Args:
            texts: the texts.

        Returns:
            One row per text.
        """
        return self.runner(list(texts))

    def _score(self, qs: list[str], ps: list[str]) -> torch.Tensor:
        # every distinct text (query or passage) is embedded once per teacher object: a passage that is a
        # candidate of many queries (extra queries over pooled passages) costs one forward, not one per pair
        memo = self._queries
        new = sorted({t for t in (*qs, *ps) if t not in memo})
        if new:
            memo.update(zip(new, self.embed(new)))
        q = np.stack([memo[x] for x in qs])
        p = np.stack([memo[x] for x in ps])
        if len(memo) > self.QUERY_MEMO:  # bounded: forget the oldest half
            for k in list(memo)[: len(memo) // 2]:
                del memo[k]
        return torch.from_numpy((q * p).sum(-1, dtype=np.float32))


class CrossEncoderTeacher(_PairEncoderTeacher):
    """A live cross-encoder: the first logit of a sequence-classification model on (query, passage).

    Any `AutoModelForSequenceClassification` folder (e.g. an exported student of the rerank recipe,
    or a `sentence_transformers.CrossEncoder` folder).

    Args:
        name: teacher name (unique in a pool).
        path: model folder or hub name.
        max_length: tokens per pair (truncation `longest_first`).
        device: where the model runs.
        batch_size: pairs per forward pass (default 8, the fastest on CPU in B3/B7).
        backend: `auto` (ONNX Runtime or PyTorch, measured), `torch` or `onnx`.

    Example:
        >>> t = CrossEncoderTeacher("ce", "runs/rerank/model")  # doctest: +SKIP
        >>> t.predict({"pairs": [("q", "p")]})  # doctest: +SKIP
        tensor([0.1234])
    """

    kind = "crossencoder"
    default_batch_size = 8

    def _score(self, qs: list[str], ps: list[str]) -> torch.Tensor:
        return torch.from_numpy(self.runner(qs, ps))


class RunTeacher(PrecomputedTeacher):
    """A ranker known by its run: per-pair scores, NaN (no score) where it did not retrieve the pair.

    Built on `PrecomputedTeacher` with pair ids (`pair_id`). `predict` takes pair ids (or a mapping
    with `"ids"`) and returns float64 scores, NaN for pairs absent from the run — a missing teacher
    is explicit, and each combiner (`consensus.fuse_scores`) says how it treats it.

    Args:
        name: teacher name.
        run: `{qid: {docid: score}}`, higher is better (use `by="rank"` in `from_file` for orderings).
        fingerprint: cache-key digest; default: hash of name, scores and ids.
        source: where the run came from (for messages).

    Example:
        >>> t = RunTeacher("bm25", {"q1": {"d1": 12.5, "d2": 9.0}})
        >>> t.predict(["q1\\td2", "q1\\td9"]).tolist()
        [9.0, nan]
    """

    def __init__(self, name: str, run: Mapping[str, Mapping[str, float]], *, fingerprint: str | None = None,
                 source: str | None = None) -> None:
        ids = [pair_id(q, d) for q in sorted(run) for d in sorted(run[q])]
        scores = np.asarray([float(run[q][d]) for q in sorted(run) for d in sorted(run[q])], dtype=np.float64)
        super().__init__(name, scores, ids, fingerprint=fingerprint, source=source or "run")

    @classmethod
    def from_file(  # type: ignore[override]
        cls, path: str | os.PathLike[str], name: str | None = None, by: Literal["score", "rank"] = "score"
    ) -> RunTeacher:
        """Read a TREC run file; `by="rank"` scores each passage by minus its rank (for LLM orderings).

        Args:
            path: TREC run `qid Q0 docid rank score tag`.
            name: teacher name (default: the file stem).
            by: use the score column, or minus the rank column.

        Returns:
            The teacher; its fingerprint covers the file's bytes, `name` and `by`.

        Example:
            >>> RunTeacher.from_file("trec-dl/dl19/rankgpt-3.5.run", by="rank")  # doctest: +SKIP
        """
        from multiteacher.data.ir import read_trec_run, read_trec_run_ranks
        from multiteacher.io import sha256_file

        path = Path(path)
        run = read_trec_run(path) if by == "score" else ranks_to_scores(read_trec_run_ranks(path))
        fp = fingerprint_obj({"kind": "run", "name": name or path.stem, "file": sha256_file(path), "by": by})
        return cls(name or path.stem, run, fingerprint=fp, source=str(path))

    def predict(self, batch: Any) -> torch.Tensor:
        """Scores (P,) float64 for P pair ids (or a mapping with `"ids"`); NaN where the run has no score.

        Args:
            batch: pair ids (`pair_id`) or `{"ids": [...], ...}`.

        Returns:
            A float64 tensor, NaN for pairs the ranker did not retrieve.
        """
        if isinstance(batch, Mapping):
            if "ids" not in batch:
                raise UserError(f"RunTeacher {self.name!r} needs the batch's pair ids under 'ids'")
            batch = batch["ids"]
        rows = np.asarray([self._index.get(str(i), -1) for i in batch], dtype=np.int64)
        out = np.full(len(rows), np.nan, dtype=np.float64)
        ok = rows >= 0
        out[ok] = np.asarray(self.outputs)[rows[ok]]
        return torch.from_numpy(out)

    __call__ = predict


def ranks_to_scores(rank_run: Mapping[str, Mapping[str, int]]) -> Run:
    """Orderings (rank 1 = best) as scores: minus the rank, so higher is better.

    Args:
        rank_run: `{qid: {docid: rank}}`.

    Returns:
        `{qid: {docid: -rank}}`.

    Example:
        >>> ranks_to_scores({"q": {"a": 1, "b": 2}})
        {'q': {'a': -1.0, 'b': -2.0}}
    """
    return {q: {d: -float(r) for d, r in docs.items()} for q, docs in rank_run.items()}


def cached_run(
    teacher: Any,
    data: IRData,
    cache_dir: str | os.PathLike[str] | None,
    *,
    batch_size: int = 64,
    shard_size: int = 512,
    progress: bool = True,
) -> Run:
    """Score every candidate pair of `data` with `teacher` once, through the teacher cache.

    Pairs are ordered longest passage first (less padding for live encoders); the cache key is
    (teacher fingerprint, `data.fingerprint`, those pair ids), so later runs, objectives and seeds
    reuse the scores and a changed teacher or set recomputes them. A pair scored NaN (a `RunTeacher`
    that did not retrieve it) is left out of the returned run: no score, not a made-up one.

    Args:
        teacher: an engine `Teacher` taking `{"ids": pair ids, "pairs": (query, passage) texts}`.
        data: the set whose candidates are scored.
        cache_dir: teacher-cache root (`None`: the default cache directory).
        batch_size: pairs per `predict` call.
        shard_size: pairs per cache shard.
        progress: show a progress bar while filling.

    Returns:
        `{qid: {docid: score}}` over the candidates the teacher scored.

    Example:
        >>> run = cached_run(RunTeacher("bm25", data.candidates), data, "/tmp/cache")  # doctest: +SKIP
    """
    from multiteacher.teachers.cache import cached_outputs

    pairs = sorted(data.pairs(), key=lambda qd: (-len(data.passages[qd[1]]), qd))
    ids = [pair_id(q, d) for q, d in pairs]

    def batch(idx: np.ndarray) -> dict[str, list[Any]]:
        return {
            "ids": [ids[i] for i in idx],
            "pairs": [(data.queries[pairs[i][0]], data.passages[pairs[i][1]]) for i in idx],
        }

    scores = cached_outputs(
        teacher.predict,
        batch,
        ids,
        teacher_fp=teacher.fingerprint,
        data_fp=data.fingerprint,
        root=cache_dir,
        shard_size=shard_size,
        batch_size=batch_size,
        progress=progress,
        allow_nonfinite=isinstance(teacher, RunTeacher),
    )
    run: Run = {}
    for (q, d), s in zip(pairs, np.asarray(scores).reshape(-1).tolist()):
        if s == s:  # not NaN
            run.setdefault(q, {})[d] = float(s)
    return run
