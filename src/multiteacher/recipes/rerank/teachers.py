"""Which teachers the rerank recipe uses (from its config), as engine teachers, and how they are combined.

Recipe glue only: each `teachers.members` entry becomes an engine `Teacher`
(`multiteacher.teachers.text`): `run` (a TREC run of the set, by score or by rank) and `scores`
(a Hofstätter score file) are `RunTeacher`s; `biencoder` / `crossencoder` are live encoders. Every
teacher scores each set's candidate pairs once into the teacher cache (`cached_run`); a teacher that
did not retrieve a candidate has no score for it. Members are fused per query by the engine's
consensus op (`consensus.fuse_scores` via `data.ir.fuse_runs`); LLM orderings named in
`listwise_runs` serve as listwise teachers where the set has them (fused by RRF when several).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from multiteacher.config import StrictModel
from multiteacher.consensus import FUSION_METHODS, MISSING_POLICIES
from multiteacher.data.ir import IRData, fuse_runs, hofstaetter_run
from multiteacher.errors import ConfigError, DataError
from multiteacher.io import sha256_file
from multiteacher.teachers.base import fingerprint_obj
from multiteacher.teachers.text import BiEncoderTeacher, CrossEncoderTeacher, RunTeacher, cached_run

Run = dict[str, dict[str, float]]
Fusion = Literal[FUSION_METHODS]  # type: ignore[valid-type]  # generated from the engine's combiners
Missing = Literal[MISSING_POLICIES]  # type: ignore[valid-type]


class TeacherSpec(StrictModel):
    """One teacher: where its scores come from.

    Example:
        >>> TeacherSpec(name="minilm", kind="biencoder", path="models/all-MiniLM-L6-v2").max_length
        256
    """

    name: str = Field(..., description="Teacher name (unique; rows and logs say `teacher:<name>`).")
    kind: Literal["run", "scores", "biencoder", "crossencoder"] = Field(
        ...,
        description="`run`: a TREC run of the set; `scores`: a Hofstätter score file; `biencoder` / `crossencoder`: "
        "a model folder or hub name, scored live once into the teacher cache.",
    )
    file: str | None = Field(None, description="run / scores: file name inside the set's folder, or a path.")
    by: Literal["score", "rank"] = Field("score", description="run: use the score column, or minus the rank.")
    path: str | None = Field(None, description="biencoder / crossencoder: model folder or hub name.")
    max_length: int = Field(256, ge=8, le=8192, description="biencoder / crossencoder: tokens per text (pair).")
    batch_size: int = Field(
        64, ge=1, le=65536, description="biencoder / crossencoder: pairs per `predict` call while filling the "
        "teacher cache (the encoder's own forward batches are token-sorted: 16 texts / 8 pairs).",
    )
    weight: float = Field(1.0, ge=0, description="Weight in the fused teacher (unless tune_weights).")
    optional: bool = Field(
        False,
        description="run / scores: on a set that lacks the file (e.g. dl21 has no `tasb.run`, extra queries have "
        "no run but BM25's), the teacher is absent — it scores nothing there and the combiner fuses the others — "
        "instead of an error.",
    )

    @model_validator(mode="after")
    def _needs(self) -> TeacherSpec:
        if self.kind in ("run", "scores") and not self.file:
            raise ValueError(f"teacher {self.name!r} of kind {self.kind!r} needs 'file'")
        if self.kind in ("biencoder", "crossencoder") and not self.path:
            raise ValueError(f"teacher {self.name!r} of kind {self.kind!r} needs 'path'")
        return self


class TeachersConfig(StrictModel):
    """The teacher ensemble and how it is fused per query.

    Example:
        >>> TeachersConfig(members=[TeacherSpec(name="bm25", kind="run", file="bm25.run")]).fusion
        'zscore'
    """

    members: list[TeacherSpec] = Field(default_factory=list, description="The teachers fused into one.")
    fusion: Fusion = Field(  # type: ignore[valid-type]
        "zscore", description="Per-query combiner (`consensus.fuse_scores`, choices from `FUSION_METHODS`).",
    )
    missing: Missing = Field(  # type: ignore[valid-type]
        "drop", description="How a member that did not score a passage counts (`consensus.MISSING_POLICIES`): "
        "drop = it abstains there; floor = at its lowest score of the query.",
    )
    tune_weights: bool = Field(
        False, description="Choose the members' weights on the validation queries (grid search by val nDCG@10)."
    )
    weight_grid: list[float] = Field(
        default_factory=lambda: [0.0, 0.5, 1.0, 2.0], description="Weights tried per member when tune_weights."
    )
    rrf_k: float = Field(60.0, gt=0, description="Reciprocal-rank fusion's rank offset k.")
    listwise_runs: list[str] = Field(
        default_factory=list,
        description="LLM orderings (run names of the set) used by listwise objectives instead of the fused "
        "ensemble on the sets that have them (fused by RRF when several).",
    )
    device: str = Field("cpu", description="Device of the live encoder teachers.")

    @model_validator(mode="after")
    def _unique(self) -> TeachersConfig:
        names = [m.name for m in self.members]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"teachers.members: the name {dup[0]!r} is used twice — give each teacher its own name")
        return self


def _set_file(set_dir: Path | None, file: str) -> Path:
    p = Path(file).expanduser()
    if p.is_absolute() or p.exists() or set_dir is None:
        return p
    return set_dir / file


def make_teacher(spec: TeacherSpec, data: IRData | None, set_dir: Path | None, device: str = "cpu") -> Any:
    """The engine `Teacher` for one config entry on one set.

    Args:
        spec: the config entry.
        data: the set (its loaded runs serve `run` teachers without re-reading the file); live
            encoders do not need it.
        set_dir: the set's folder, where `file` is looked up.
        device: device of live encoders.

    Returns:
        A `RunTeacher`, `BiEncoderTeacher` or `CrossEncoderTeacher`.

    Example:
        >>> make_teacher(TeacherSpec(name="bm25", kind="run", file="bm25.run"), data, None)  # doctest: +SKIP
        PrecomputedTeacher(name='bm25', source='...', rows=4300)
    """
    if spec.kind in ("biencoder", "crossencoder"):
        cls = BiEncoderTeacher if spec.kind == "biencoder" else CrossEncoderTeacher
        try:
            return cls(spec.name, spec.path or "", max_length=spec.max_length, device=device)
        except ConfigError:
            raise ConfigError(
                f"teachers.members[{spec.name}].path = {spec.path!r}: cannot load the model — "
                "run `make models` (local copies under ./models/) or give a hub name"
            ) from None
    if data is None:
        raise ConfigError(f"teacher {spec.name!r} of kind {spec.kind!r} needs the set it scores")
    path = _set_file(set_dir, spec.file or "")
    if spec.kind == "scores":
        if not path.is_file():
            raise DataError(f"teacher {spec.name!r}: score file {path} does not exist for set {data.name!r}")
        fp = fingerprint_obj({"kind": "scores", "name": spec.name, "file": sha256_file(path)})
        return RunTeacher(spec.name, hofstaetter_run(path), fingerprint=fp, source=str(path))
    stem = Path(spec.file or "").stem
    if stem in data.runs and spec.by == "score":
        return RunTeacher(spec.name, data.runs[stem], source=f"{data.name}/{stem}")
    if stem == "bm25" and spec.by == "score" and (set_dir is None or not path.exists()):
        return RunTeacher(spec.name, data.candidates, source=f"{data.name}/candidates")
    if not path.is_file():
        raise DataError(f"teacher {spec.name!r}: run file {path} does not exist for set {data.name!r} "
                        "(set `optional: true` on the teacher if it should be absent there)")
    return RunTeacher.from_file(path, name=spec.name, by=spec.by)


def has_teacher(spec: TeacherSpec, data: IRData, set_dir: Path | None) -> bool:
    """Whether a teacher can score `data`: live encoders score any set; a run / scores teacher needs its file.

    Args:
        spec: the config entry.
        data: the set.
        set_dir: the set's folder (None for sets without one, e.g. extra queries).

    Returns:
        True if `make_teacher` would find the teacher's scores for this set.

    Example:
        >>> has_teacher(TeacherSpec(name="tasb", kind="run", file="tasb.run"), dl21, dl21_dir)  # doctest: +SKIP
        False
    """
    if spec.kind in ("biencoder", "crossencoder"):
        return True
    stem = Path(spec.file or "").stem
    if spec.kind == "run" and spec.by == "score" and (stem in data.runs or (stem == "bm25" and set_dir is None)):
        return True
    if set_dir is None and not Path(spec.file or "").is_absolute():
        return False  # a set without a folder (extra queries) has no run files
    return _set_file(set_dir, spec.file or "").is_file()


def teacher_run(
    spec: TeacherSpec,
    data: IRData,
    set_dir: Path | None,
    cache_dir: Path | None,
    device: str = "cpu",
    encoders: dict[str, Any] | None = None,
) -> Run:
    """One teacher's scores over `data`'s candidates, through the teacher cache (no score where it has none).

    Args:
        spec: the config entry.
        data: the set.
        set_dir: the set's folder.
        cache_dir: teacher-cache root.
        device: device of live encoders.
        encoders: live encoders by name, reused across sets (filled on first use).

    Returns:
        `{qid: {docid: score}}` over the candidates the teacher scored.

    Example:
        >>> teacher_run(TeacherSpec(name="bm25", kind="run", file="bm25.run"), data, None, cache)  # doctest: +SKIP
    """
    if spec.kind in ("biencoder", "crossencoder"):
        encoders = encoders if encoders is not None else {}
        if spec.name not in encoders:
            encoders[spec.name] = make_teacher(spec, data, set_dir, device)
        return cached_run(encoders[spec.name], data, cache_dir, batch_size=spec.batch_size)
    return cached_run(make_teacher(spec, data, set_dir), data, cache_dir, batch_size=512, progress=False)


def listwise_run(cfg: TeachersConfig, data: IRData, cache_dir: Path | None = None) -> Run | None:
    """The LLM orderings named in `listwise_runs` that this set has, fused by RRF; None if it has none.

    Args:
        cfg: the teachers config.
        data: the set.
        cache_dir: teacher-cache root.

    Returns:
        The (fused) ordering as scores (minus the rank for one run, RRF scores for several), or None.

    Example:
        >>> listwise_run(TeachersConfig(listwise_runs=["rankgpt-3.5"]), dl19, cache)  # doctest: +SKIP
    """
    have = [r for r in cfg.listwise_runs if r in data.runs]
    if not have:
        return None
    runs = {
        r: cached_run(RunTeacher(r, data.runs[r], source=f"{data.name}/{r}"), data, cache_dir, batch_size=512,
                      progress=False)
        for r in have
    }
    return runs[have[0]] if len(have) == 1 else fuse_runs(runs, "rrf", rrf_k=cfg.rrf_k)


def fused_run(cfg: TeachersConfig, member_runs: dict[str, Run], weights: dict[str, float] | None = None) -> Run:
    """The members fused per query by the engine combiner, with their weights (`weights` overrides the config's).

    Args:
        cfg: the teachers config.
        member_runs: each member's run, by name.
        weights: per-member weights (e.g. tuned on validation); default: each member's `weight`.

    Members absent from `member_runs` (optional teachers the set lacks) are left out; where every present
    member has weight 0, they are fused with equal weights.

    Returns:
        The fused run.

    Example:
        >>> fused_run(cfg.teachers, {"bm25": bm25_run, "minilm": minilm_run})  # doctest: +SKIP
    """
    if not cfg.members:
        raise ConfigError("teachers.members is empty — name at least one teacher for distillation objectives")
    present = [m for m in cfg.members if m.name in member_runs]  # optional teachers may be absent on a set
    if not present:
        raise ConfigError(f"no teacher of {[m.name for m in cfg.members]} scores this set — mark fewer `optional`")
    w = [weights[m.name] if weights else m.weight for m in present]
    if sum(w) <= 0:  # every teacher present here got weight 0 (e.g. tuned on sets with more teachers)
        w = [1.0] * len(present)
    return fuse_runs({m.name: member_runs[m.name] for m in present}, cfg.fusion, w, cfg.rrf_k, missing=cfg.missing)


def tune_weights(
    cfg: TeachersConfig,
    val: list[tuple[dict[str, Run], dict[str, dict[str, int]]]],
    measure: str = "nDCG@10",
) -> tuple[dict[str, float], float]:
    """Grid-search the members' fusion weights on validation (member runs, qrels) pairs.

    Only validation queries are ever scored here; ties go to the first combination in grid order.

    Args:
        cfg: the teachers config (members and `weight_grid`).
        val: per validation set, the members' runs and the qrels.
        measure: the ir-measures measure to maximise (mean over the sets).

    Returns:
        The best weights by member name and their mean `measure`.

    Example:
        >>> tune_weights(cfg.teachers, [({"bm25": r1, "minilm": r2}, qrels)])  # doctest: +SKIP
        ({'bm25': 0.5, 'minilm': 1.0}, 0.61)
    """
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


def teacher_runs(cfg: Any, ctx: Any, sets: dict[str, dict[str, IRData]]) -> dict[str, dict[str, Any]]:
    """Per `<split>/<set>`: each member's run, the fused run and the listwise run (if the set has one).

    Teachers score each set once over all the queries the run uses (so the teacher cache key is the
    same for every objective and seed), then the runs are cut to each split's queries. With
    `tune_weights`, the fusion weights are chosen on the validation queries (a resumable stage).

    Args:
        cfg: the recipe config.
        ctx: the run context (data and cache directories, stages, logging).
        sets: the splits from `splits.load_sets`.

    Returns:
        `{"<split>/<set>": {"members": {name: run}, "fused": run | None, "listwise": run | None}}`.

    Example:
        >>> teacher_runs(cfg, ctx, load_sets(cfg, ctx.data_dir))["train/trec-dl/dl21"]["fused"]  # doctest: +SKIP
    """
    from multiteacher.recipes.rerank.splits import base_spec, norm_set, set_dir

    encoders: dict[str, Any] = {}
    per_set: dict[str, dict[str, Any]] = {}
    for spec, d in sets["all"].items():
        folder = set_dir(norm_set(base_spec(spec)), ctx.data_dir)
        members = {}
        for m in cfg.teachers.members:
            if m.optional and not has_teacher(m, d, folder):
                continue
            members[m.name] = teacher_run(m, d, folder, ctx.cache_dir, cfg.teachers.device, encoders)
        ctx.log({f"teachers/{spec}/present": float(len(members))}, step=0)
        per_set[spec] = {"members": members, "listwise": listwise_run(cfg.teachers, d, ctx.cache_dir)}
    weights = None
    if cfg.teachers.tune_weights and cfg.teachers.members:
        val = [
            ({n: {q: r[q] for q in d.qids if q in r} for n, r in per_set[spec]["members"].items()}, d.qrels)
            for spec, d in sets["val"].items()
        ]

        def tune() -> dict[str, Any]:
            w, value = tune_weights(cfg.teachers, val)
            return {"weights": w, "val_nDCG@10": value}

        weights = ctx.stage("fusion_weights", tune)["weights"]
        ctx.log({f"teachers/weight/{n}": v for n, v in weights.items()}, step=0)
    for e in per_set.values():
        e["fused"] = fused_run(cfg.teachers, e["members"], weights) if cfg.teachers.members else None

    def cut(r: Run | None, qids: list[str]) -> Run | None:
        return None if r is None else {q: r[q] for q in qids if q in r}

    out: dict[str, dict[str, Any]] = {}
    for split in ("train", "val", "test"):
        for spec, d in sets[split].items():
            e, qids = per_set[spec], d.qids
            out[f"{split}/{spec}"] = {
                "members": {n: cut(r, qids) for n, r in e["members"].items()},
                "fused": cut(e["fused"], qids),
                "listwise": cut(e["listwise"], qids),
            }
    return out


def training_teacher(cfg: Any, entry: dict[str, Any]) -> Run | None:
    """The teacher run a distillation objective learns from.

    Objectives whose label source is `teacher_ranking` take the LLM orderings where the set has
    them; otherwise the fused ensemble (or the orderings when there is no ensemble).

    Args:
        cfg: the recipe config.
        entry: one `teacher_runs` entry.

    Returns:
        The run, or None when the set has no teacher.

    Example:
        >>> training_teacher(cfg, teachers["train/trec-dl/dl21"])  # doctest: +SKIP
    """
    from multiteacher.recipes.rerank.objectives import get_objective

    if entry["listwise"] is not None and get_objective(cfg.objective).label_source == "teacher_ranking":
        return entry["listwise"]
    if entry["fused"] is not None:
        return entry["fused"]
    return entry["listwise"]
