"""The rerank recipe's `run`: teachers -> baselines -> fit -> test -> export, each stage resumable.

Stages: teachers (scored once into the teacher cache, fused by the engine's consensus op) ->
baselines (the first stage re-ranked — `data.first_stage` —, each teacher, the fused teacher, the untrained
student; per-query metrics) -> fit
(the engine loop, best checkpoint by validation nDCG@10) -> test (re-ranked runs + per-query metrics)
-> export (`save_pretrained`, loadable by `sentence_transformers.CrossEncoder`).
"""

from __future__ import annotations

from typing import Any

from multiteacher.data.ir import read_trec_run, write_trec_run
from multiteacher.recipes.rerank.config import Config
from multiteacher.recipes.rerank.evaluation import interpolate, measure, pick_interpolation, student_run
from multiteacher.recipes.rerank.model import export, load_student
from multiteacher.recipes.rerank.objectives import get_objective
from multiteacher.recipes.rerank.splits import base_spec, first_stage_label, load_sets
from multiteacher.recipes.rerank.teachers import teacher_runs, training_teacher
from multiteacher.recipes.rerank.training import (
    GroupDataset,
    group_lengths,
    make_collate,
    make_loss,
    probe_loss_fn,
    step_fn,
    training_groups,
)


def _first_stage(cfg: Config, key: str) -> str:
    """The first stage a split key's set was re-ranked from (`<spec>@<label>`, else `data.first_stage`)."""
    return key.split("@", 1)[1] if "@" in key else first_stage_label(cfg.data.first_stage)


def _row(
    cfg: Config, split: str, key: str, system: str, kind: str, metrics: dict[str, float], **extra: Any
) -> dict[str, Any]:
    return {
        "split": split, "set": base_spec(key), "first_stage": _first_stage(cfg, key), "system": system,
        "kind": kind, **extra, **metrics,
    }


def _baselines(cfg: Config, sets: dict[str, Any], teachers: dict[str, Any], splits: list[str]) -> dict[str, Any]:
    """Measures of the first stage (the run re-ranked, or the RRF of a union) and every teacher run on the
    judged sets of `splits`."""
    res: dict[str, Any] = {}
    for split in splits:
        for spec, d in sets[split].items():
            if not d.qrels:
                continue
            systems = {_first_stage(cfg, spec): d.candidates}
            entry = teachers.get(f"{split}/{spec}")
            if entry:
                systems.update({f"teacher:{n}": r for n, r in entry["members"].items()})
                if entry["fused"] is not None:
                    systems["teacher:fused"] = entry["fused"]
                if entry["listwise"] is not None:
                    systems["teacher:listwise"] = entry["listwise"]
            for name, r in systems.items():
                res[f"{split}|{spec}|{name}"] = measure(r, d.qrels, cfg.eval.measures)
    return res


def run(cfg: Config, ctx: Any) -> dict[str, Any]:
    """Train and evaluate one student; see the module docstring.

    Args:
        cfg: the recipe config.
        ctx: the run context (`multiteacher.runs.RunContext`).

    Returns:
        `{"metrics": {...}, "rows": [...], "timings": {...}}` for `results.json`; per-query values go
        to `per_query.json`, re-ranked runs to `runs/`, the student to `model/`.

    Example:
        >>> from multiteacher.config import load_config
        >>> from multiteacher.runs import execute_run
        >>> execute_run(load_config("recipes/rerank-trecdl-tiny.yaml"), "runs/tiny")  # doctest: +SKIP
    """
    sets = load_sets(cfg, ctx.data_dir)
    measures = cfg.eval.measures
    objective = get_objective(cfg.objective)
    teachers = teacher_runs(cfg, ctx, sets) if (objective.needs_teacher or cfg.eval.baselines) else {}
    splits = ["val"] + (["test"] if cfg.eval.test else [])
    base = ctx.stage("baselines", lambda: _baselines(cfg, sets, teachers, splits)) if cfg.eval.baselines else {}

    # the student
    texts = [t for split in sets.values() for d in split.values() for t in (*d.queries.values(), *d.passages.values())]
    model, tok = load_student(cfg.model, texts if cfg.model.random else None, seed=cfg.seed)
    model.to(ctx.fabric.device)

    student_runs: dict[tuple[str, str], Any] = {}

    def evaluate_split(split: str, write: str = "") -> dict[str, Any]:
        res: dict[str, Any] = {}
        for spec, d in sets[split].items():
            r = student_run(model, tok, d, cfg)
            if write == "student-":
                student_runs[(split, spec)] = r
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

    groups, lookup = training_groups(cfg, sets["train"], teachers, training_teacher)
    ctx.log({"train/groups": len(groups), "train/queries": len(lookup)}, step=0)

    def val_eval(m: Any) -> dict[str, float]:
        per_set = evaluate_split("val")
        return {f"val/{k}": sum(r["mean"][k] for r in per_set.values()) / len(per_set) for k in measures}

    from multiteacher.engine.loop import fit

    loss_fn, collate = make_loss(cfg), make_collate(tok, cfg.model.max_length, lookup)
    probe = groups[:: max(1, len(groups) // 64)][:64]  # a fixed sample of training groups
    probe_loss = probe_loss_fn(model, probe, collate, loss_fn)

    loss_before = ctx.stage("loss_before", probe_loss)
    fit_cfg = cfg.fit
    if cfg.sampling.pairs_per_batch:
        bs = max(1, cfg.sampling.pairs_per_batch // objective.group_size(cfg.sampling))
        fit_cfg = cfg.fit.model_copy(update={"batch_size": bs})
    lengths = group_lengths(tok, groups, lookup, cfg.model.max_length) if fit_cfg.length_grouped else None
    result = fit(
        ctx,
        "student",
        model,
        GroupDataset(groups, lookup),
        step_fn(loss_fn),
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

    def final_run(split: str, spec: str) -> Any:  # in memory, or (a resumed run) from the file written
        if (split, spec) not in student_runs:
            path = ctx.path("runs", f"student-{split}-{spec.replace('/', '_')}.run")
            student_runs[(split, spec)] = read_trec_run(path)
        return student_runs[(split, spec)]

    def interpolated() -> dict[str, Any]:
        val = [(final_run("val", spec), d.candidates, d.qrels) for spec, d in sets["val"].items()]
        alpha, value = pick_interpolation(val, cfg.eval.interpolate, cfg.fit.monitor.removeprefix("val/"))
        res = {
            split: {spec: measure(interpolate(final_run(split, spec), d.candidates, alpha), d.qrels, measures)
                    for spec, d in sets[split].items() if d.qrels}
            for split in splits
        }
        return {"alpha": alpha, "val_value": value, "res": res}

    mixed = ctx.stage("interpolated", interpolated) if cfg.eval.interpolate else None

    rows: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    if mixed is not None:
        metrics["eval/interpolation_alpha"] = float(mixed["alpha"])
        for split, per_set in mixed["res"].items():
            for spec, res in per_set.items():
                rows.append(_row(cfg, split, spec, "student+first_stage", "student", res["mean"],
                                 objective=cfg.objective, alpha=mixed["alpha"]))
                for k, v in res["mean"].items():
                    metrics[f"{split}/{spec}/interpolated/{k}"] = v
    for split in splits:
        for spec, res in final[split].items():
            rows.append(
                _row(cfg, split, spec, f"student:{cfg.objective}", "student", res["mean"], objective=cfg.objective)
            )
            for k, v in res["mean"].items():
                metrics[f"{split}/{spec}/{k}"] = v
            if untrained:
                rows.append(_row(cfg, split, spec, "student:untrained", "baseline", untrained[split][spec]["mean"]))
    for key, res in base.items():
        split, spec, name = key.split("|")
        rows.append(_row(cfg, split, spec, name, "baseline", res["mean"]))
    metrics["train/steps"] = float(result.steps)
    metrics["train/best_step"] = float(result.best_step)
    metrics["train/probe_loss_before"] = float(loss_before)
    metrics["train/probe_loss_after"] = float(loss_after)
    per_query = {"student": final, "untrained": untrained, "baselines": base}
    if mixed is not None:
        per_query["interpolated"] = mixed["res"]
    if ctx.is_main:
        from multiteacher.io import atomic_write_json

        atomic_write_json(ctx.run_dir / "per_query.json", per_query)
    return {"metrics": metrics, "rows": rows, "timings": {"train_seconds": float(result.train_seconds)}}
