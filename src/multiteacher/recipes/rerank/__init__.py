"""Cross-encoder distillation ("Reproducing and Comparing Distillation Techniques for Cross-Encoders").

A re-ranking cross-encoder student is trained with one of the paper's objectives — BCE, hinge,
InfoNCE (qrels); MarginMSE (teacher margins); DistillRankNet, ADR-MSE (teacher rankings); ListNet
as an extra — from a per-query fused teacher ensemble (bi-encoders, BM25) or LLM orderings, then
re-ranks the top-100 of a named first stage (`data.first_stage`: BM25 by default, SPLADE++, or a union
of runs; `data.test_first_stage` for several on the test sets). A committed validation query list
from the training fold drives early stopping; test sets are only scored with the frozen config.

Modules, one job each: `config` (the pydantic config), `objectives` (one spec per objective),
`splits` (train / validation / test sets), `teachers` (which engine teachers the config names, and
their fusion through the engine's consensus op), `sampling` (training groups), `training` (batches,
loss, step for the engine's fit loop), `evaluation` (measures, the student's runs,
`multiteacher eval`), `pipeline` (`run`: the stages), `model` (the student), `sweep` (objectives ×
seeds, tables and paired tests).
"""

from __future__ import annotations

from multiteacher.recipes.rerank.config import Config, DataConfig, EvalConfig, LossConfig
from multiteacher.recipes.rerank.evaluation import evaluate, measure, student_run
from multiteacher.recipes.rerank.objectives import OBJECTIVES, ObjectiveSpec
from multiteacher.recipes.rerank.pipeline import run
from multiteacher.recipes.rerank.splits import load_sets, read_val_list
from multiteacher.recipes.rerank.training import group_lengths, make_collate, make_loss

__all__ = [
    "OBJECTIVES",
    "Config",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ObjectiveSpec",
    "evaluate",
    "group_lengths",
    "load_sets",
    "make_collate",
    "make_loss",
    "measure",
    "read_val_list",
    "run",
    "student_run",
]
