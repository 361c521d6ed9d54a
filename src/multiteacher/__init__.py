"""multiteacher: train students from many teachers at once.

`import multiteacher as mt` is the public face of the engine: teachers, the teacher-output cache,
consensus and routing over a teacher axis, distillation and ranking losses, metrics, the fit loop,
runs and reports. Every name below is imported lazily on first use (PEP 562 ``__getattr__``), so
``import multiteacher`` stays light (no torch import) and cannot form import cycles.

One convention everywhere: teacher outputs are stacked as ``(B, K, ...)`` — batch first, teachers
second. `TeacherPool.predict`, the consensus ops, `Router` and `multi_teacher_kd` all use it.

Example:
    >>> import multiteacher as mt
    >>> import torch
    >>> pool = mt.TeacherPool([mt.PrecomputedTeacher("a", torch.ones(4, 3)),
    ...                        mt.PrecomputedTeacher("b", torch.zeros(4, 3))])
    >>> pool.predict([0, 1]).shape          # (B, K, C)
    torch.Size([2, 2, 3])
    >>> mt.mean(pool.predict([0, 1]))[0]    # averaged over the two teachers
    tensor([0.5000, 0.5000, 0.5000])
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> its home, "module:attribute".
_EXPORTS: dict[str, str] = {
    # teachers and the teacher-output cache
    "Teacher": "multiteacher.teachers.base:Teacher",
    "ModuleTeacher": "multiteacher.teachers.base:ModuleTeacher",
    "PrecomputedTeacher": "multiteacher.teachers.base:PrecomputedTeacher",
    "TeacherPool": "multiteacher.teachers.pool:TeacherPool",
    "StackedCache": "multiteacher.teachers.pool:StackedCache",
    "TeacherCache": "multiteacher.teachers.cache:TeacherCache",
    "cached_outputs": "multiteacher.teachers.cache:cached_outputs",
    "data_fingerprint": "multiteacher.teachers.base:data_fingerprint",
    "RunTeacher": "multiteacher.teachers.text:RunTeacher",
    "BiEncoderTeacher": "multiteacher.teachers.text:BiEncoderTeacher",
    "CrossEncoderTeacher": "multiteacher.teachers.text:CrossEncoderTeacher",
    "MaskedTeacher": "multiteacher.teachers.masked:MaskedTeacher",
    "freeze_teacher": "multiteacher.teachers.base:freeze_teacher",
    "cached_run": "multiteacher.teachers.text:cached_run",
    # consensus over the teacher axis (B, K, ...)
    "mean": "multiteacher.consensus:mean",
    "median": "multiteacher.consensus:median",
    "trimmed_mean": "multiteacher.consensus:trimmed_mean",
    "weighted": "multiteacher.consensus:weighted",
    "agreement_mask": "multiteacher.consensus:agreement_mask",
    "vote": "multiteacher.consensus:vote",
    "combine": "multiteacher.consensus:combine",
    "dispersion": "multiteacher.consensus:dispersion",
    # ranking consensus: candidate scores (B, K, N) -> (B, N)
    "normalize_scores": "multiteacher.consensus:normalize_scores",
    "fuse_scores": "multiteacher.consensus:fuse_scores",
    "median_rank_scores": "multiteacher.consensus:median_rank_scores",
    "agreement_weights": "multiteacher.consensus:agreement_weights",
    "kendall_tau": "multiteacher.consensus:kendall_tau",
    "runs_to_tensor": "multiteacher.data.ir:runs_to_tensor",
    "tensor_to_run": "multiteacher.data.ir:tensor_to_run",
    "fuse_runs": "multiteacher.data.ir:fuse_runs",
    "read_trec_run": "multiteacher.data.ir:read_trec_run",
    "write_trec_run": "multiteacher.data.ir:write_trec_run",
    # more training queries: BM25 over pooled passages, unjudged and passage-made queries
    "BM25Index": "multiteacher.data.pool:BM25Index",
    "read_query_files": "multiteacher.data.pool:read_query_files",
    "passage_queries": "multiteacher.data.pool:passage_queries",
    "pooled_set": "multiteacher.data.pool:pooled_set",
    "load_cross_encoder": "multiteacher.models.cross_encoder:load_cross_encoder",
    "rerank_files": "multiteacher.models.cross_encoder:rerank_files",
    # routing: per-instance gates over teachers
    "Router": "multiteacher.routing:Router",
    "softmax_weights": "multiteacher.routing:softmax_weights",
    "topk_weights": "multiteacher.routing:topk_weights",
    "load_balance_kl": "multiteacher.routing:load_balance_kl",
    "load_balance_kl_uniform": "multiteacher.routing:load_balance_kl_uniform",
    "load_balance_cv": "multiteacher.routing:load_balance_cv",
    "routing_stats": "multiteacher.routing:routing_stats",
    "fit_router": "multiteacher.routing:fit_router",
    # distillation losses
    "kd_kl": "multiteacher.losses.kd:kd_kl",
    "multi_teacher_kd": "multiteacher.losses.kd:multi_teacher_kd",
    "fitnet": "multiteacher.losses.kd:fitnet",
    "dkd": "multiteacher.losses.kd:dkd",
    "mutual_kd": "multiteacher.losses.kd:mutual_kd",
    # one loss registry (KD and ranking): names, specs, build by name
    "make_loss": "multiteacher.losses.registry:make_loss",
    "loss_names": "multiteacher.losses.registry:loss_names",
    "register_loss": "multiteacher.losses.registry:register_loss",
    "LossSpec": "multiteacher.losses.registry:LossSpec",
    # ranking losses (scores (B, N), first column the positive where a loss needs one)
    "pointwise_bce": "multiteacher.losses.ranking:pointwise_bce",
    "pointwise_mse": "multiteacher.losses.ranking:pointwise_mse",
    "hinge": "multiteacher.losses.ranking:hinge",
    "margin_mse": "multiteacher.losses.ranking:margin_mse",
    "info_nce": "multiteacher.losses.ranking:info_nce",
    "distill_ranknet": "multiteacher.losses.ranking:distill_ranknet",
    "adr_mse": "multiteacher.losses.ranking:adr_mse",
    "listnet": "multiteacher.losses.ranking:listnet",
    # metrics
    "accuracy": "multiteacher.metrics.classify:accuracy",
    "classification_metrics": "multiteacher.metrics.classify:classification_metrics",
    "depth_metrics": "multiteacher.metrics.dense:depth_metrics",
    "normal_metrics": "multiteacher.metrics.dense:normal_metrics",
    "semantic_metrics": "multiteacher.metrics.dense:semantic_metrics",
    "DepthMetrics": "multiteacher.metrics.dense:DepthMetrics",
    "NormalMetrics": "multiteacher.metrics.dense:NormalMetrics",
    "SemanticMetrics": "multiteacher.metrics.dense:SemanticMetrics",
    "DenseMetric": "multiteacher.metrics.dense:DenseMetric",
    "ir_evaluate": "multiteacher.metrics.ir:evaluate",
    "ir_per_query": "multiteacher.metrics.ir:per_query",
    # statistics for reports
    "paired_randomization_test": "multiteacher.stats:paired_randomization_test",
    "holm": "multiteacher.stats:holm",
    # training
    "fit": "multiteacher.engine.loop:fit",
    "FitConfig": "multiteacher.engine.loop:FitConfig",
    "FitState": "multiteacher.engine.loop:FitState",
    "FitResult": "multiteacher.engine.loop:FitResult",
    "LocalContext": "multiteacher.engine.context:LocalContext",
    # runs and reports
    "RunContext": "multiteacher.runs:RunContext",
    "load_config": "multiteacher.config:load_config",
    "RecipeConfig": "multiteacher.config:RecipeConfig",
    "registered_recipes": "multiteacher.recipe_registry:registered_recipes",
    "load_recipe": "multiteacher.recipe_registry:load_recipe",
    "RunResults": "multiteacher.schema:RunResults",
    "RunInfo": "multiteacher.schema:RunInfo",
    "read_results": "multiteacher.schema:read_results",
    "run": "multiteacher.runs:run",
    "write_run_report": "multiteacher.report:write_run_report",
    "report_markdown": "multiteacher.report:report_markdown",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name].split(":")
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # cache: later lookups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
