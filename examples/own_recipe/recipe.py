"""A recipe of your own: three noisy teachers, their consensus, and a student distilled from it.

A recipe is any importable module with a `Config` (a `multiteacher.config.RecipeConfig` subclass)
and `run(cfg, ctx)` returning `{"metrics": {...}, "rows": [...]}`. `multiteacher run` finds it from
the config's `recipe:` field (this module's dotted path) and gives it everything the built-in
recipes get: a run directory, seeding, Fabric, the checkpointed fit loop (kill and `--resume` end
with identical results), `metrics.jsonl`, `results.json` and a report.

The task is synthetic and seeded: labels come from a random linear rule; each teacher is that rule
plus its own noise, so teachers disagree and their mean (`multiteacher.consensus.mean` over the
teacher axis of `(B, K, C)` logits) beats each of them. The student is a linear model trained with
KD-KL on the consensus.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn
from torch.utils.data import TensorDataset

from multiteacher import consensus
from multiteacher.config import RecipeConfig
from multiteacher.engine.loop import FitConfig, fit
from multiteacher.losses.kd import kd_kl
from multiteacher.metrics.classify import accuracy
from multiteacher.runs import RunContext


class Config(RecipeConfig):
    """Config of the own-recipe example (every field documented: the docs render these)."""

    recipe: str = Field("own_recipe.recipe", description="This module's dotted path.")
    data_seed: int = Field(7, ge=0, description="Seed of the synthetic data and teachers (fixed across seeds).")
    n_train: int = Field(1200, gt=0, description="Training samples.")
    n_test: int = Field(1000, gt=0, description="Test samples.")
    dim: int = Field(8, gt=1, description="Input features.")
    classes: int = Field(4, gt=1, description="Number of classes.")
    teachers: int = Field(3, gt=0, description="Number of teachers (K).")
    teacher_noise: float = Field(1.0, ge=0, description="Std of each teacher's weight noise, relative to the rule.")
    temperature: float = Field(2.0, gt=0, description="KD temperature.")
    fit: FitConfig = Field(FitConfig(max_steps=150, batch_size=64, lr=0.05, val_every=50, monitor="val/acc",
                                     mode="max"), description="The student's fit loop settings.")


def make_task(cfg: Config) -> dict[str, torch.Tensor]:
    """Inputs, labels and teacher logits `(N, K, C)` for train and test (seeded by `data_seed`)."""
    g = torch.Generator().manual_seed(cfg.data_seed)
    rule = torch.randn(cfg.dim, cfg.classes, generator=g)
    teachers = rule + cfg.teacher_noise * torch.randn(cfg.teachers, cfg.dim, cfg.classes, generator=g)
    out = {}
    for split, n in (("train", cfg.n_train), ("test", cfg.n_test)):
        x = torch.randn(n, cfg.dim, generator=g)
        out[f"x_{split}"], out[f"y_{split}"] = x, (x @ rule).argmax(1)
        out[f"t_{split}"] = torch.einsum("nd,kdc->nkc", x, teachers)  # (B, K, C): teacher axis second
    return out


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Distil the teachers' consensus into a linear student; accuracy of teachers, consensus, student."""
    task = make_task(cfg)
    train = TensorDataset(task["x_train"], task["t_train"])
    torch.manual_seed(cfg.seed)
    student = nn.Linear(cfg.dim, cfg.classes)

    def step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, t = batch
        return kd_kl(model(x), consensus.mean(t), temperature=cfg.temperature)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"val/acc": accuracy(model(task["x_test"][:300]), task["y_test"][:300])}

    fit(ctx, "student", student, train, step, cfg.fit, evaluate)
    y = task["y_test"]
    with torch.no_grad():
        scores = {f"teacher{k}": accuracy(task["t_test"][:, k], y) for k in range(cfg.teachers)}
        scores["consensus"] = accuracy(consensus.mean(task["t_test"]), y)
        scores["student"] = accuracy(student(task["x_test"]), y)
    rows = [{"model": name, "test_acc": acc} for name, acc in scores.items()]
    return {"metrics": {f"{name}/test_acc": acc for name, acc in scores.items()}, "rows": rows}
