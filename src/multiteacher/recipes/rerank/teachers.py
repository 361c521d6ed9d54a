"""Ranking teachers: score files, TREC runs, BM25, live bi-encoders; scored once into the cache.

Every teacher gives a run `{qid: {docid: score}}` over a set's candidates:
  - `run`: a TREC run file of the set (BM25's own `bm25.run`, or the dl19 LLM orderings), by score
    or by rank (score = minus rank, for listwise orderings);
  - `scores`: a score file in Hofstätter's format (`pos_score neg_score qid pos_pid neg_pid`, TSV);
  - `biencoder`: a sentence-transformers style encoder folder (mean-pooled, L2-normalised cosine),
    scored live in batches through the teacher cache, so every later run reuses the scores;
  - `crossencoder`: any `AutoModelForSequenceClassification` folder (one logit), likewise cached.
Teachers are fused per query (`fusion.fuse`); LLM orderings serve as listwise teachers where present.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from multiteacher.config import StrictModel
from multiteacher.data.ir import IRData, read_trec_run, read_trec_run_ranks
from multiteacher.errors import ConfigError, DataError
from multiteacher.recipes.rerank import fusion

Run = dict[str, dict[str, float]]


class TeacherSpec(StrictModel):
    """One teacher: where its scores come from."""

    name: str
    kind: Literal["run", "scores", "biencoder", "crossencoder"]
    file: str | None = None  # run / scores: file name inside the set's folder, or a path
    by: Literal["score", "rank"] = "score"  # run: use the score column or minus the rank
    path: str | None = None  # biencoder / crossencoder: model folder or hub name
    max_length: int = Field(256, ge=8)
    batch_size: int = Field(64, ge=1)
    weight: float = Field(1.0, ge=0)

    @model_validator(mode="after")
    def _needs(self) -> TeacherSpec:
        if self.kind in ("run", "scores") and not self.file:
            raise ValueError(f"teacher {self.name!r} of kind {self.kind!r} needs 'file'")
        if self.kind in ("biencoder", "crossencoder") and not self.path:
            raise ValueError(f"teacher {self.name!r} of kind {self.kind!r} needs 'path'")
        return self


class TeachersConfig(StrictModel):
    """The teacher ensemble and how it is fused per query."""

    members: list[TeacherSpec] = Field(default_factory=list)
    fusion: Literal["zscore", "minmax", "rrf"] = "zscore"
    # choose the members' weights on the validation queries (grid over `weight_grid`, by val nDCG@10)
    tune_weights: bool = False
    weight_grid: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0, 2.0])
    rrf_k: float = Field(60.0, gt=0)
    # listwise teachers used instead of the fused ensemble on the sets that have these run files
    # (fold B: the dl19 LLM orderings, fused by RRF when there are several)
    listwise_runs: list[str] = Field(default_factory=list)
    device: str = "cpu"


# ----------------------------------------------------------------------------- score files


def read_hofstaetter(path: str | Path) -> list[tuple[float, float, str, str, str]]:
    """Hofstätter's teacher file: `pos_score<TAB>neg_score<TAB>qid<TAB>pos_pid<TAB>neg_pid` per line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 5:
                raise DataError(
                    f"{path}:{i}: expected 'pos_score neg_score qid pos_pid neg_pid', got {len(parts)} fields"
                )
            try:
                out.append((float(parts[0]), float(parts[1]), parts[2], parts[3], parts[4]))
            except ValueError:
                raise DataError(f"{path}:{i}: scores {parts[0]!r} / {parts[1]!r} are not numbers") from None
            if not (math.isfinite(out[-1][0]) and math.isfinite(out[-1][1])):
                raise DataError(f"{path}:{i}: scores {parts[0]!r} / {parts[1]!r} are not finite — fix that line")
    return out


def hofstaetter_run(path: str | Path) -> Run:
    """Per-(qid, pid) scores from a Hofstätter file (a pid scored twice must agree within 1e-4)."""
    run: Run = {}
    for pos_s, neg_s, q, p, n in read_hofstaetter(path):
        for d, s in ((p, pos_s), (n, neg_s)):
            old = run.setdefault(q, {}).setdefault(d, s)
            if abs(old - s) > 1e-4:
                raise DataError(f"{path}: passage {d!r} of query {q!r} has two scores ({old} and {s})")
    return run


# ----------------------------------------------------------------------------- live encoders


def _resolve_model(ref: str) -> str:
    p = Path(ref).expanduser()
    return str(p) if p.exists() else ref


def model_fingerprint(ref: str, extra: Any = None) -> str:
    """Hash of a model folder's config/tokenizer files and weight files' names+sizes, plus settings."""
    h = hashlib.sha256(repr(extra).encode())
    p = Path(ref)
    if p.is_dir():
        for f in sorted(p.rglob("*")):
            if not f.is_file():
                continue
            rel = f.relative_to(p).as_posix()
            if f.suffix in (".json", ".txt", ".model"):
                h.update(rel.encode() + f.read_bytes())
            else:  # weights: name + size + head bytes (a full hash of 440 MB would take seconds)
                with open(f, "rb") as fh:
                    h.update(f"{rel}:{f.stat().st_size}".encode() + fh.read(1 << 20))
    else:
        h.update(ref.encode())
    return h.hexdigest()


class EncoderTeacher:
    """A live bi-encoder (mean-pooled cosine) or cross-encoder (one logit) over (query, passage) pairs.

    Implements the `Teacher` protocol: `predict([(query, passage), ...]) -> tensor of scores`.
    Not an `nn.Module`, so it never lands in a student's checkpoint; eval mode, inference mode.
    """

    def __init__(self, spec: TeacherSpec, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

        self.name, self.spec, self.device = spec.name, spec, torch.device(device)
        ref = _resolve_model(spec.path or "")
        try:
            self.tok = AutoTokenizer.from_pretrained(ref)
            if spec.kind == "biencoder":
                self.model = AutoModel.from_pretrained(ref)
            else:
                self.model = AutoModelForSequenceClassification.from_pretrained(ref)
        except (OSError, ValueError):
            raise ConfigError(
                f"teachers.members[{spec.name}].path = {spec.path!r}: cannot load the model — "
                "run `make models` (local copies under ./models/) or give a hub name"
            ) from None
        self.model.float().eval().requires_grad_(False).to(self.device)  # fp32 even from a half checkpoint
        self._fp = model_fingerprint(ref, {"kind": spec.kind, "max_length": spec.max_length, "v": 1})

    @property
    def fingerprint(self) -> str:
        return self._fp

    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        b = self.tok(list(texts), padding=True, truncation=True, max_length=self.spec.max_length, return_tensors="pt")
        b = {k: v.to(self.device) for k, v in b.items()}
        hidden = self.model(**b).last_hidden_state
        mask = b["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled.float(), dim=-1)

    def predict(self, batch: Sequence[tuple[str, str]]) -> torch.Tensor:
        """Scores for a batch of (query, passage) pairs."""
        with torch.inference_mode():
            qs, ps = [q for q, _ in batch], [p for _, p in batch]
            if self.spec.kind == "biencoder":
                return (self._embed(qs) * self._embed(ps)).sum(-1).cpu()
            b = self.tok(
                qs, ps, padding=True, truncation="longest_first", max_length=self.spec.max_length, return_tensors="pt"
            )
            return self.model(**{k: v.to(self.device) for k, v in b.items()}).logits[:, 0].float().cpu()

    __call__ = predict


def score_with_teacher(teacher: Any, data: IRData, cache_dir: Path | None, batch_size: int = 64) -> Run:
    """Score every candidate pair of `data` once: cached by (teacher fingerprint, data fingerprint, pair id)."""
    import numpy as np

    from multiteacher.teachers.cache import cached_outputs

    pairs = sorted(data.pairs(), key=lambda qd: (-len(data.passages[qd[1]]), qd))  # length-sorted: less padding
    ids = [f"{q}\t{d}" for q, d in pairs]

    def batch(idx: np.ndarray) -> list[tuple[str, str]]:
        return [(data.queries[pairs[i][0]], data.passages[pairs[i][1]]) for i in idx]

    scores = cached_outputs(
        teacher.predict,
        batch,
        ids,
        teacher_fp=teacher.fingerprint,
        data_fp=data.fingerprint,
        root=cache_dir,
        shard_size=512,
        batch_size=batch_size,
        progress=True,
    )
    run: Run = {}
    for (q, d), s in zip(pairs, np.asarray(scores).reshape(-1).tolist()):
        run.setdefault(q, {})[d] = float(s)
    return run


# ----------------------------------------------------------------------------- per set


def _set_file(data_dir_of_set: Path | None, file: str) -> Path:
    p = Path(file).expanduser()
    if p.is_absolute() or p.exists() or data_dir_of_set is None:
        return p
    return data_dir_of_set / file


def teacher_run(
    spec: TeacherSpec,
    data: IRData,
    set_dir: Path | None,
    cache_dir: Path,
    device: str = "cpu",
    encoders: dict[str, Any] | None = None,
) -> Run:
    """One teacher's scores over `data`'s candidates (missing candidates get a floor score)."""
    if spec.kind == "run":
        stem = Path(spec.file or "").stem
        if stem in data.runs and spec.by == "score":
            run = data.runs[stem]
        elif stem == "bm25" and spec.by == "score" and (set_dir is None or not _set_file(set_dir, spec.file).exists()):
            run = data.candidates
        else:
            path = _set_file(set_dir, spec.file or "")
            if not path.is_file():
                raise DataError(f"teacher {spec.name!r}: run file {path} does not exist for set {data.name!r}")
            run = read_trec_run(path) if spec.by == "score" else fusion.ranks_to_scores(read_trec_run_ranks(path))
        return fusion.complete(run, data.candidates)
    if spec.kind == "scores":
        path = _set_file(set_dir, spec.file or "")
        if not path.is_file():
            raise DataError(f"teacher {spec.name!r}: score file {path} does not exist for set {data.name!r}")
        return fusion.complete(hofstaetter_run(path), data.candidates)
    encoders = encoders if encoders is not None else {}
    if spec.name not in encoders:
        encoders[spec.name] = EncoderTeacher(spec, device)
    return score_with_teacher(encoders[spec.name], data, cache_dir, spec.batch_size)


def listwise_run(cfg: TeachersConfig, data: IRData) -> Run | None:
    """The LLM orderings named in `listwise_runs` that this set has, fused by RRF; None if it has none."""
    have = [r for r in cfg.listwise_runs if r in data.runs]
    if not have:
        return None
    runs = [fusion.complete(data.runs[r], data.candidates) for r in have]
    return runs[0] if len(runs) == 1 else fusion.fuse(runs, "rrf", rrf_k=cfg.rrf_k)


def fused_run(cfg: TeachersConfig, member_runs: dict[str, Run], weights: dict[str, float] | None = None) -> Run:
    """The members fused per query with their weights (`weights` overrides the config's)."""
    names = [m.name for m in cfg.members]
    if not names:
        raise ConfigError("teachers.members is empty — name at least one teacher for distillation objectives")
    w = [weights[n] if weights else m.weight for n, m in zip(names, cfg.members)]
    return fusion.fuse([member_runs[n] for n in names], cfg.fusion, w, cfg.rrf_k)


def tune_weights(
    cfg: TeachersConfig,
    val: list[tuple[dict[str, Run], dict[str, dict[str, int]]]],
    measure: str = "nDCG@10",
) -> tuple[dict[str, float], float]:
    """Grid-search the members' fusion weights on validation (member runs, qrels) pairs.

    Returns the weights with the best mean `measure` over the validation sets (ties: first in grid
    order) and that value. Only validation queries are ever scored here.
    """
    import itertools

    from multiteacher.metrics.ir import evaluate

    names = [m.name for m in cfg.members]
    best: tuple[float, dict[str, float]] | None = None
    for combo in itertools.product(cfg.weight_grid, repeat=len(names)):
        if sum(combo) <= 0:
            continue
        w = dict(zip(names, combo))
        vals = [evaluate(fused_run(cfg, runs, w), qrels, [measure])[measure] for runs, qrels in val]
        value = sum(vals) / len(vals)
        if best is None or value > best[0] + 1e-12:
            best = (value, w)
    if best is None:
        raise ConfigError("teachers.weight_grid needs at least one positive weight")
    return best[1], best[0]
