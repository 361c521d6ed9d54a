"""Evaluation of the rerank recipe: measures of a run, the student's run, `multiteacher eval` on new sets."""

from __future__ import annotations

from typing import Any

from multiteacher.data.ir import IRData, fuse_runs, write_trec_run
from multiteacher.errors import DataError
from multiteacher.recipes.rerank.model import score_pairs
from multiteacher.recipes.rerank.splits import first_stage_label, first_stage_names, load_test_set, test_first_stages

Run = dict[str, dict[str, float]]


def measure(run: Run, qrels: dict[str, dict[str, int]], measures: list[str]) -> dict[str, Any]:
    """Mean and per-query values of ir-measures measures over the judged queries of `run`.

    Args:
        run: `{qid: {docid: score}}`.
        qrels: judgments; only queries both in `run` and here count.
        measures: ir-measures names, e.g. `nDCG@10`.

    Returns:
        `{"mean": {measure: value}, "per_query": {measure: {qid: value}}}`.

    Example:
        >>> measure({"q": {"a": 2.0, "b": 1.0}}, {"q": {"a": 1}}, ["nDCG@10"])["mean"]
        {'nDCG@10': 1.0}
    """
    from multiteacher.metrics.ir import per_query

    judged = {q: r for q, r in qrels.items() if q in run}
    pq = per_query(run, judged, measures)
    return {"mean": {m: sum(v.values()) / max(1, len(v)) for m, v in pq.items()}, "per_query": pq}


def student_run(model: Any, tok: Any, d: IRData, cfg: Any) -> Run:
    """The student's scores over all candidates of `d` (the engine's fast pair-scoring path).

    Args:
        model: the cross-encoder.
        tok: its tokenizer.
        d: the set.
        cfg: the recipe config (`model.max_length`, `model.eval_batch_size`, `model.eval_backend`).

    Returns:
        `{qid: {docid: score}}`.

    Example:
        >>> run = student_run(model, tok, dl19, cfg)  # doctest: +SKIP
    """
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
    run: Run = {}
    for (q, p), s in zip(pairs, scores):
        run.setdefault(q, {})[p] = s
    return run


def interpolate(student: Run, first_stage: Run, alpha: float) -> Run:
    """`alpha * z(student) + (1 - alpha) * z(first stage)` per query (z-scores over each query's candidates).

    Args:
        student: the student's run.
        first_stage: the first stage's scores of the same candidates.
        alpha: the student's weight in [0, 1].

    Returns:
        The interpolated run over the student's candidates.

    Example:
        >>> r = interpolate({"q": {"a": 1.0, "b": 0.0}}, {"q": {"a": 0.0, "b": 3.0}}, 0.75)
        >>> r["q"]["a"] > r["q"]["b"]
        True
    """
    fs = {q: {d: first_stage[q][d] for d in docs if d in first_stage.get(q, {})} for q, docs in student.items()}
    return fuse_runs({"student": student, "first_stage": fs}, "zscore", [alpha, 1.0 - alpha], missing="floor")


def pick_interpolation(
    val: list[tuple[Run, Run, dict[str, dict[str, int]]]], alphas: list[float], measure: str = "nDCG@10"
) -> tuple[float, float]:
    """The interpolation weight with the best mean `measure` over validation sets (ties: the larger weight).

    Args:
        val: per validation set, (student run, first-stage run, qrels).
        alphas: weights to try.
        measure: the ir-measures measure to maximise.

    Returns:
        `(alpha, its mean validation value)`.

    Example:
        >>> pick_interpolation([({"q": {"a": 1.0, "b": 0.0}}, {"q": {"a": 0.0, "b": 1.0}}, {"q": {"a": 1}})],
        ...                    [0.0, 1.0])
        (1.0, 1.0)
    """
    best: tuple[float, float] | None = None
    for a in sorted(alphas, reverse=True):
        vals = [measure_run(interpolate(s, f, a), qrels, measure) for s, f, qrels in val]
        value = sum(vals) / len(vals)
        if best is None or value > best[1] + 1e-12:
            best = (a, value)
    if best is None:
        raise DataError("eval.interpolate: no weight to try")
    return best


def measure_run(run: Run, qrels: dict[str, dict[str, int]], name: str) -> float:
    """Mean of one measure over the judged queries of `run` (see `measure`).

    Args:
        run: the run.
        qrels: judgments.
        name: an ir-measures measure.

    Returns:
        The mean.

    Example:
        >>> measure_run({"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 1}}, "RR@10")
        0.5
    """
    return measure(run, qrels, [name])["mean"][name]


def evaluate(cfg: Any, ctx: Any) -> dict[str, float]:
    """`multiteacher eval RUN_DIR --data-dir DIR`: re-rank `data.test` sets with the exported student.

    Args:
        cfg: the run's config (with any `--set` overrides, e.g. other test sets).
        ctx: the run context (run directory, data directory).

    Returns:
        `{"<set>/<measure>": value}` for the sets that have qrels (`<set>@<first stage>` for test first
        stages other than `data.first_stage`); runs are written under `eval/`.

    Example:
        >>> evaluate(cfg, ctx)  # doctest: +SKIP
        {'trec-dl/dl19/nDCG@10': 0.62, ...}
    """
    from multiteacher.models.cross_encoder import load_cross_encoder

    path = ctx.run_dir / "model"
    if not (path / "config.json").exists():
        raise DataError(f"{ctx.run_dir}: no exported model under model/ — finish the run first")
    model, tok = load_cross_encoder(path)  # a damaged export is one line
    out: dict[str, float] = {}
    main_fs = first_stage_names(cfg.data.first_stage)
    for spec in cfg.data.test:
        for fs in test_first_stages(cfg):
            key = spec if fs == main_fs else f"{spec}@{first_stage_label(fs)}"
            d = load_test_set(spec, ctx.data_dir, cfg.data.top_k, cfg.data.max_test_queries, list(fs))
            r = student_run(model, tok, d, cfg)
            write_trec_run(ctx.path("eval", f"{key.replace('/', '_')}.run"), r, tag=cfg.name)
            if d.qrels:
                for k, v in measure(r, d.qrels, cfg.eval.measures)["mean"].items():
                    out[f"{key}/{k}"] = v
    return out
