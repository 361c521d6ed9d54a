"""Cross-encoder distillation ("Reproducing and Comparing Distillation Techniques for Cross-Encoders").

A re-ranking cross-encoder student is trained with one of the paper's objectives — BCE, hinge,
InfoNCE (qrels); MarginMSE (teacher margins); DistillRankNet, ADR-MSE (teacher rankings); ListNet
as an extra — from a per-query fused teacher ensemble (bi-encoders, BM25) or LLM orderings, then
re-ranks BM25 top-100 of the test sets. A committed validation query list from the training fold
drives early stopping; test sets are only scored with the frozen config.

`run(cfg, ctx)` stages: teachers (scored once into the teacher cache) -> baselines (BM25, each
teacher, the fused teacher, the untrained student; per-query metrics) -> fit (engine loop, best
checkpoint by validation nDCG@10) -> test (re-ranked runs + per-query metrics) -> export
(`save_pretrained`, loadable by `sentence_transformers.CrossEncoder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from multiteacher.config import RecipeConfig, StrictModel
from multiteacher.data.ir import IRData, load_ir, trec_dl_dir, write_trec_run
from multiteacher.engine.loop import FitConfig
from multiteacher.errors import ConfigError, DataError
from multiteacher.recipes.rerank.model import ModelConfig, encode, export, forward_scores, load_student, score_pairs
from multiteacher.recipes.rerank.sampling import (
    LABEL_SOURCE,
    Group,
    Objective,
    SamplingConfig,
    build_groups,
    group_size,
)
from multiteacher.recipes.rerank.teachers import TeachersConfig, fused_run, listwise_run, teacher_run, tune_weights

REPO = Path(__file__).resolve().parents[4]
DEFAULT_MEASURES = ["nDCG@10", "RR(rel=2)@10", "AP(rel=2)"]


class DataConfig(StrictModel):
    """Which sets train and test, and the committed validation queries."""

    train: list[str] = Field(default_factory=lambda: ["trec-dl/dl21", "trec-dl/dl22"])
    test: list[str] = Field(default_factory=lambda: ["trec-dl/dl19"])
    val_queries: str = "recipes/rerank-val-queries.txt"  # lines `set qid`; those in train sets validate
    train_queries: Literal["all", "labelled"] = "all"  # labelled: only queries with qrels (fair comparison)
    top_k: int = Field(100, ge=2)  # candidates per query (BM25 order)
    max_train_queries: int | None = Field(None, ge=1)  # per set, after removing validation (tiny runs)
    max_val_queries: int | None = Field(None, ge=1)
    max_test_queries: int | None = Field(None, ge=1)


class LossConfig(StrictModel):
    """Loss options (sentence-transformers' defaults)."""

    hinge_margin: float = Field(1.0, gt=0)
    infonce_temperature: float = Field(1.0, gt=0)
    ranknet_sigma: float = Field(1.0, gt=0)
    adrmse_alpha: float = Field(1.0, gt=0)
    listnet_temperature: float = Field(1.0, gt=0)


class EvalConfig(StrictModel):
    """Measures and what to score besides the student."""

    measures: list[str] = Field(default_factory=lambda: list(DEFAULT_MEASURES))
    baselines: bool = True  # BM25, each teacher, fused teacher, untrained student
    test: bool = True  # score the test sets (frozen config only)


class Config(RecipeConfig):
    """The rerank recipe."""

    recipe: Literal["rerank"] = "rerank"
    objective: Objective = "marginmse"
    model: ModelConfig = ModelConfig()
    teachers: TeachersConfig = TeachersConfig()
    sampling: SamplingConfig = SamplingConfig()
    loss: LossConfig = LossConfig()
    fit: FitConfig = FitConfig(
        max_steps=300,
        batch_size=8,
        lr=3e-5,
        weight_decay=0.01,
        warmup_steps=30,
        scheduler="linear",
        val_every=50,
        monitor="val/nDCG@10",
        mode="max",
        grad_clip=1.0,
        log_every=10,
    )
    data: DataConfig = DataConfig()
    eval: EvalConfig = EvalConfig()
    export: bool = True

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.fit.monitor.startswith("val/") and self.fit.monitor[4:] not in self.eval.measures:
            raise ValueError(f"fit.monitor {self.fit.monitor!r} must be 'val/<one of eval.measures>'")
        return self


# ----------------------------------------------------------------------------- data


def read_val_list(path: str) -> list[tuple[str, str]]:
    """The committed validation list: `set qid` per line (`#` comments)."""
    p = Path(path).expanduser()
    if not p.is_absolute() and not p.exists():
        p = REPO / path
    if not p.is_file():
        raise ConfigError(f"data.val_queries = {path!r}: file not found (lines 'trec-dl/dl21 <qid>')")
    out = []
    for i, line in enumerate(p.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DataError(f"{p}:{i}: expected 'set qid', got {line!r}")
        out.append((_norm_set(parts[0]), parts[1]))
    return out


def _norm_set(name: str) -> str:
    return name if "/" in name or Path(name).is_absolute() else f"trec-dl/{name}"


def _top_k(d: IRData, k: int) -> IRData:
    cands = {q: dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:k]) for q, c in d.candidates.items()}
    if all(len(cands[q]) == len(d.candidates[q]) for q in cands):
        return d
    keep = {x for c in cands.values() for x in c}
    return IRData(d.name, d.queries, {x: t for x, t in d.passages.items() if x in keep}, cands, d.qrels, d.runs)


def _set_dir(spec: str, data_dir: Path) -> Path | None:
    if spec.startswith("trec-dl/"):
        return trec_dl_dir(data_dir, spec)
    p = Path(spec)
    return p if p.is_dir() else (data_dir / spec if (data_dir / spec).is_dir() else None)


def load_sets(cfg: Config, data_dir: Path) -> dict[str, Any]:
    """Train / validation / test splits as {set name: IRData} (validation from the committed list)."""
    val_list = read_val_list(cfg.data.val_queries)
    train, val, test, loaded = {}, {}, {}, {}
    for spec in cfg.data.train:
        d = loaded[spec] = _top_k(load_ir(_norm_set(spec), data_dir), cfg.data.top_k)
        vq = [q for s, q in val_list if s == _norm_set(spec) and q in d.candidates]
        missing = [q for s, q in val_list if s == _norm_set(spec) and q not in d.candidates]
        if missing:
            raise DataError(f"{cfg.data.val_queries}: query {missing[0]!r} is not in {spec}")
        if cfg.data.max_val_queries:
            vq = vq[: cfg.data.max_val_queries]
        tq = [q for q in d.qids if q not in set(vq)]
        if cfg.data.train_queries == "labelled":
            tq = [q for q in tq if d.qrels and q in d.qrels]
        if cfg.data.max_train_queries:
            tq = tq[: cfg.data.max_train_queries]
        if tq or cfg.data.train_queries == "all":
            train[spec] = d.subset(tq)  # under `labelled`, a set without qrels (dl22) adds no query
        if vq:
            if not d.qrels or any(q not in d.qrels for q in vq):
                raise DataError(f"{cfg.data.val_queries}: validation queries of {spec} must have qrels")
            val[spec] = d.subset(vq)
    if not train:
        raise ConfigError(
            f"data.train: no training query has qrels under data.train_queries=labelled ({cfg.data.train})"
        )
    if not val:
        raise ConfigError(f"{cfg.data.val_queries} names no query of the training sets {cfg.data.train}")
    for spec in cfg.data.test:
        d = loaded[spec] = loaded.get(spec) or _top_k(load_ir(_norm_set(spec), data_dir), cfg.data.top_k)
        if cfg.data.max_test_queries:
            d = d.subset(d.qids[: cfg.data.max_test_queries])
        test[spec] = d
    full: dict[str, IRData] = {}
    for split in (train, val, test):
        for spec, d in split.items():
            qids = set(d.qids) | (set(full[spec].qids) if spec in full else set())
            src = loaded[spec]
            full[spec] = src if qids == set(src.qids) else src.subset(sorted(qids))
    overlap = {(s, q) for s in test for q in test[s].qids} & {(s, q) for s in train for q in train[s].qids}
    if overlap:
        raise ConfigError(f"data: test queries are also training queries ({sorted(overlap)[0]}) — fix data.train/test")
    return {"train": train, "val": val, "test": test, "all": full}


# ----------------------------------------------------------------------------- evaluation


def measure(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]], measures: list[str]) -> dict[str, Any]:
    """Mean and per-query values of ir-measures measures over the judged queries of `run`."""
    from multiteacher.metrics.ir import per_query

    judged = {q: r for q, r in qrels.items() if q in run}
    pq = per_query(run, judged, measures)
    return {"mean": {m: sum(v.values()) / max(1, len(v)) for m, v in pq.items()}, "per_query": pq}


def student_run(model: Any, tok: Any, d: IRData, cfg: Config) -> dict[str, dict[str, float]]:
    """The student's scores over all candidates of `d`."""
    pairs = d.pairs()
    scores = score_pairs(
        model,
        tok,
        [d.queries[q] for q, _ in pairs],
        [d.passages[p] for _, p in pairs],
        cfg.model.max_length,
        cfg.model.eval_batch_size,
        backend=cfg.model.eval_backend,
    )
    run: dict[str, dict[str, float]] = {}
    for (q, p), s in zip(pairs, scores):
        run.setdefault(q, {})[p] = s
    return run


# ----------------------------------------------------------------------------- teachers


def teacher_runs(cfg: Config, ctx: Any, sets: dict[str, dict[str, IRData]]) -> dict[str, dict[str, Any]]:
    """Per (split/set): each member's run, the fused run and the listwise run (if the set has one).

    Teachers score each set once over all the queries the run uses (so the teacher cache key is the
    same for every objective and seed), then the runs are cut to each split's queries.
    """
    encoders: dict[str, Any] = {}
    per_set: dict[str, dict[str, Any]] = {}
    for spec, d in sets["all"].items():
        set_dir = _set_dir(_norm_set(spec), ctx.data_dir)
        members = {
            m.name: teacher_run(m, d, set_dir, ctx.cache_dir, cfg.teachers.device, encoders)
            for m in cfg.teachers.members
        }
        per_set[spec] = {"members": members, "listwise": listwise_run(cfg.teachers, d)}
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

    def cut(r: dict[str, dict[str, float]] | None, qids: list[str]) -> dict[str, dict[str, float]] | None:
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


def training_teacher(cfg: Config, entry: dict[str, Any]) -> dict[str, dict[str, float]] | None:
    """Teacher scores a distillation objective learns from: LLM orderings where the set has them
    (listwise objectives), else the fused ensemble."""
    if entry["listwise"] is not None and cfg.objective in ("ranknet", "adrmse", "listnet"):
        return entry["listwise"]
    if entry["fused"] is not None:
        return entry["fused"]
    return entry["listwise"]


# ----------------------------------------------------------------------------- training


class GroupDataset(torch.utils.data.Dataset):
    """Training groups (a query and its passages with targets) as a map-style dataset."""

    def __init__(self, groups: list[Group], texts: dict[str, IRData]) -> None:
        self.groups = groups
        self.texts = texts  # qid-owning set by set name

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> Group:
        return self.groups[i]


def make_collate(tok: Any, max_length: int, lookup: dict[str, IRData]) -> Any:
    """Flatten B groups of G passages to B*G pairs, tokenise with dynamic padding, keep targets (B, G)."""

    def collate(groups: list[Group]) -> dict[str, torch.Tensor]:
        qs, ps = [], []
        for g in groups:
            d = lookup[g.qid]
            qs += [d.queries[g.qid]] * len(g.docs)
            ps += [d.passages[x] for x in g.docs]
        batch = dict(encode(tok, qs, ps, max_length))
        batch["targets"] = torch.tensor([g.targets for g in groups], dtype=torch.float32)
        return batch

    return collate


def group_lengths(tok: Any, groups: list[Group], lookup: dict[str, IRData], max_length: int,
                  chunk: int = 4096) -> list[int]:
    """Per group: the token count of its longest (query, passage) pair after truncation, i.e. the
    length its pairs pad to in a batch (what `fit.length_grouped` groups batches by). Each distinct
    pair is tokenized once, without padding."""
    pairs = sorted({(g.qid, x) for g in groups for x in g.docs})
    n_tok: dict[tuple[str, str], int] = {}
    for i in range(0, len(pairs), chunk):
        part = pairs[i : i + chunk]
        enc = tok(
            [lookup[q].queries[q] for q, _ in part],
            [lookup[q].passages[x] for q, x in part],
            truncation="longest_first",
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        n_tok.update(zip(part, map(len, enc["input_ids"])))
    return [max(n_tok[(g.qid, x)] for x in g.docs) for g in groups]


def make_loss(cfg: Config) -> Any:
    """`loss(scores (B, G), targets (B, G))` for the objective, from `multiteacher.losses.ranking`."""
    from multiteacher.losses import ranking as R

    lc = cfg.loss
    table = {
        "bce": lambda s, t: R.pointwise_bce(s, t),
        "hinge": lambda s, t: R.hinge(s, margin=lc.hinge_margin),
        "infonce": lambda s, t: R.info_nce(s, temperature=lc.infonce_temperature),
        "marginmse": lambda s, t: R.margin_mse(s, t),
        "ranknet": lambda s, t: R.distill_ranknet(s, t, sigma=lc.ranknet_sigma),
        "adrmse": lambda s, t: R.adr_mse(s, t, alpha=lc.adrmse_alpha),
        "listnet": lambda s, t: R.listnet(s, t, temperature=lc.listnet_temperature),
    }
    return table[cfg.objective]


def _step_fn(loss_fn: Any) -> Any:
    def step(model: Any, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        targets = batch.pop("targets")
        scores = forward_scores(model, batch).view(targets.shape)
        return {"loss": loss_fn(scores, targets)}

    return step


# ----------------------------------------------------------------------------- run


def _row(split: str, spec: str, system: str, kind: str, metrics: dict[str, float], **extra: Any) -> dict[str, Any]:
    return {"split": split, "set": spec, "system": system, "kind": kind, **extra, **metrics}


def run(cfg: Config, ctx: Any) -> dict[str, Any]:
    """Train and evaluate one student; see the module docstring."""
    sets = load_sets(cfg, ctx.data_dir)
    measures = cfg.eval.measures
    need_teacher = LABEL_SOURCE[cfg.objective] == "teacher"
    teachers = teacher_runs(cfg, ctx, sets) if (need_teacher or cfg.eval.baselines) else {}
    splits = ["val"] + (["test"] if cfg.eval.test else [])

    def baselines() -> dict[str, Any]:
        res: dict[str, Any] = {}
        for split in splits:
            for spec, d in sets[split].items():
                if not d.qrels:
                    continue
                systems = {"bm25": d.candidates}
                entry = teachers.get(f"{split}/{spec}")
                if entry:
                    systems.update({f"teacher:{n}": r for n, r in entry["members"].items()})
                    if entry["fused"] is not None:
                        systems["teacher:fused"] = entry["fused"]
                    if entry["listwise"] is not None:
                        systems["teacher:listwise"] = entry["listwise"]
                for name, r in systems.items():
                    res[f"{split}|{spec}|{name}"] = measure(r, d.qrels, measures)
        return res

    base = ctx.stage("baselines", baselines) if cfg.eval.baselines else {}

    # the student
    texts = [t for split in sets.values() for d in split.values() for t in (*d.queries.values(), *d.passages.values())]
    model, tok = load_student(cfg.model, texts if cfg.model.random else None, seed=cfg.seed)
    model.to(ctx.fabric.device)

    def evaluate_split(split: str, write: str = "") -> dict[str, Any]:
        res: dict[str, Any] = {}
        for spec, d in sets[split].items():
            r = student_run(model, tok, d, cfg)
            if write and ctx.is_main:
                write_trec_run(ctx.path("runs", f"{write}{split}-{spec.replace('/', '_')}.run"), r, tag=cfg.name)
            if d.qrels:
                res[spec] = measure(r, d.qrels, measures)
        return res

    untrained = (
        ctx.stage("untrained", lambda: {s: evaluate_split(s, write="untrained-") for s in splits})
        if cfg.eval.baselines
        else {}
    )

    # training groups
    lookup: dict[str, IRData] = {}
    groups: list[Group] = []
    for i, (spec, d) in enumerate(sets["train"].items()):
        for q in d.qids:
            lookup[q] = d
        teacher = training_teacher(cfg, teachers[f"train/{spec}"]) if need_teacher else None
        if need_teacher and teacher is None:
            raise ConfigError(f"objective {cfg.objective!r} needs teachers: set teachers.members or listwise_runs")
        groups += build_groups(
            cfg.objective, d.qids, d.candidates, cfg.sampling, cfg.seed * 1000 + i, qrels=d.qrels, teacher=teacher
        )
    if not groups:
        raise DataError(
            f"objective {cfg.objective!r}: no training groups — the training queries have no "
            f"{LABEL_SOURCE[cfg.objective]} labels"
        )
    ctx.log({"train/groups": len(groups), "train/queries": len(lookup)}, step=0)

    def val_eval(m: Any) -> dict[str, float]:
        per_set = evaluate_split("val")
        return {f"val/{k}": sum(r["mean"][k] for r in per_set.values()) / len(per_set) for k in measures}

    from multiteacher.engine.loop import fit

    loss_fn, collate = make_loss(cfg), make_collate(tok, cfg.model.max_length, lookup)
    probe = groups[:: max(1, len(groups) // 64)][:64]  # a fixed sample of training groups

    def probe_loss() -> float:
        was = model.training
        model.eval()
        with torch.no_grad():
            dev = next(model.parameters()).device
            vals = []
            for i in range(0, len(probe), 16):
                b = {k: v.to(dev) for k, v in collate(probe[i : i + 16]).items()}
                t = b.pop("targets")
                vals.append(float(loss_fn(forward_scores(model, b).view(t.shape), t)) * len(t))
        model.train(was)
        return sum(vals) / len(probe)

    loss_before = ctx.stage("loss_before", probe_loss)
    fit_cfg = cfg.fit
    if cfg.sampling.pairs_per_batch:
        bs = max(1, cfg.sampling.pairs_per_batch // group_size(cfg.objective, cfg.sampling))
        fit_cfg = cfg.fit.model_copy(update={"batch_size": bs})
    lengths = group_lengths(tok, groups, lookup, cfg.model.max_length) if fit_cfg.length_grouped else None
    result = fit(
        ctx,
        "student",
        model,
        GroupDataset(groups, lookup),
        _step_fn(loss_fn),
        fit_cfg,
        evaluate=val_eval,
        collate_fn=collate,
        lengths=lengths,
    )
    model.eval()
    loss_after = ctx.stage("loss_after", probe_loss)

    final = ctx.stage("test", lambda: {s: evaluate_split(s, write="student-") for s in splits})
    if cfg.export and ctx.is_main:
        export(model, tok, ctx.run_dir / "model")

    rows: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    for split in splits:
        for spec, res in final[split].items():
            rows.append(_row(split, spec, f"student:{cfg.objective}", "student", res["mean"], objective=cfg.objective))
            for k, v in res["mean"].items():
                metrics[f"{split}/{spec}/{k}"] = v
            if untrained:
                rows.append(_row(split, spec, "student:untrained", "baseline", untrained[split][spec]["mean"]))
    for key, res in base.items():
        split, spec, name = key.split("|")
        rows.append(_row(split, spec, name, "baseline", res["mean"]))
    metrics["train/steps"] = float(result.steps)
    metrics["train/best_step"] = float(result.best_step)
    metrics["train/probe_loss_before"] = float(loss_before)
    metrics["train/probe_loss_after"] = float(loss_after)
    per_query = {"student": final, "untrained": untrained, "baselines": base}
    if ctx.is_main:
        from multiteacher.io import atomic_write_json

        atomic_write_json(ctx.run_dir / "per_query.json", per_query)
    return {"metrics": metrics, "rows": rows, "timings": {"train_seconds": float(result.train_seconds)}}


def evaluate(cfg: Config, ctx: Any) -> dict[str, float]:
    """`multiteacher eval RUN_DIR --data-dir DIR`: re-rank `data.test` sets with the exported student."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = ctx.run_dir / "model"
    if not (path / "config.json").exists():
        raise DataError(f"{ctx.run_dir}: no exported model under model/ — finish the run first")
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    out: dict[str, float] = {}
    for spec in cfg.data.test:
        d = _top_k(load_ir(_norm_set(spec), ctx.data_dir), cfg.data.top_k)
        if cfg.data.max_test_queries:
            d = d.subset(d.qids[: cfg.data.max_test_queries])
        r = student_run(model, tok, d, cfg)
        write_trec_run(ctx.path("eval", f"{spec.replace('/', '_')}.run"), r, tag=cfg.name)
        if d.qrels:
            for k, v in measure(r, d.qrels, cfg.eval.measures)["mean"].items():
                out[f"{spec}/{k}"] = v
    return out


__all__ = ["Config", "evaluate", "run"]
