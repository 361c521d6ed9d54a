"""Example recipe: train a teacher, then distil a small student with KD-KL (vs the same student
trained on labels alone) on a synthetic, seeded classification task.

After its own training the teacher is used through the engine's Teacher API: a `ModuleTeacher`
(eval mode, frozen, `predict` under `torch.inference_mode()`, out of the student's checkpoint).

It exercises the whole engine path — config, Fabric fit loop with checkpoints and resume, stages,
metrics, results and report — in seconds, with no data files. Data: `classes` classes, each a
mixture of `clusters_per_class` Gaussian blobs in `dim` dimensions, so a linear model is clearly
imperfect and a wide MLP teacher is much better; label noise makes soft targets informative.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.utils.data import TensorDataset

from multiteacher.config import RecipeConfig, StrictModel
from multiteacher.engine.loop import FitConfig, fit
from multiteacher.losses.kd import kd_kl
from multiteacher.metrics.classify import accuracy, weighted_f1
from multiteacher.runs import RunContext
from multiteacher.teachers.base import ModuleTeacher


class ExampleData(StrictModel):
    """Synthetic blobs; `data_seed` is fixed so runs with different seeds share the data."""

    data_seed: int = Field(1234, description="Seed of the data generator (independent of the run's `seed`).")
    n_train: int = Field(3000, gt=0, description="Training samples.")
    n_val: int = Field(500, gt=0, description="Validation samples (model selection).")
    n_test: int = Field(2000, gt=0, description="Test samples.")
    dim: int = Field(10, gt=1, description="Input dimensions.")
    classes: int = Field(6, gt=1, description="Number of classes.")
    clusters_per_class: int = Field(4, gt=0, description="Gaussian blobs per class.")
    spread: float = Field(1.0, gt=0, description="Standard deviation of each blob.")
    label_noise: float = Field(0.1, ge=0, lt=1,
                               description="Share of training labels replaced by a random class.")


class MLPSpec(StrictModel):
    """A ReLU MLP: `depth` hidden layers of width `hidden`, then a linear head."""

    hidden: int = Field(64, gt=0, description="Width of each hidden layer.")
    depth: int = Field(2, ge=0, description="Hidden layers (0: a linear model).")


class KDSpec(StrictModel):
    """Student loss ``(1 - alpha)·CE + alpha·KD``."""

    temperature: float = Field(4.0, gt=0, description="KD temperature T (the KD term is scaled by T²).")
    alpha: float = Field(0.9, ge=0, le=1, description="Weight of the KD term; 1 - alpha weighs the label CE.")


class Config(RecipeConfig):
    """The example recipe: a teacher MLP, and two student MLPs (labels only; KD from the teacher)."""

    recipe: Literal["example"] = Field("example", description="Recipe name.")
    data: ExampleData = Field(ExampleData(), description="The synthetic data.")
    teacher: MLPSpec = Field(MLPSpec(hidden=256, depth=3), description="Teacher network.")
    student: MLPSpec = Field(MLPSpec(hidden=16, depth=1), description="Student network (both students).")
    teacher_fit: FitConfig = Field(
        FitConfig(max_steps=600, batch_size=64, lr=3e-3, val_every=100, monitor="val/acc", mode="max"),
        description="Training of the teacher.")
    student_fit: FitConfig = Field(
        FitConfig(max_steps=600, batch_size=64, lr=3e-3, val_every=100, monitor="val/acc", mode="max"),
        description="Training of each student.")
    kd: KDSpec = Field(KDSpec(), description="Distillation loss of the KD student.")


def make_blobs(spec: ExampleData) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Train/val/test splits of the seeded blob mixture.

    Args:
        spec: sizes, geometry and label noise (training labels only).

    Returns:
        ``{"train" | "val" | "test": (x (n, dim) float32, y (n,) long)}``.

    Example:
        >>> make_blobs(ExampleData(n_train=10, n_val=5, n_test=5))["val"][0].shape
        torch.Size([5, 10])
    """
    rng = np.random.default_rng(spec.data_seed)
    centers = rng.normal(0.0, 2.0, size=(spec.classes, spec.clusters_per_class, spec.dim))
    out = {}
    for split, n in (("train", spec.n_train), ("val", spec.n_val), ("test", spec.n_test)):
        y = rng.integers(0, spec.classes, size=n)
        k = rng.integers(0, spec.clusters_per_class, size=n)
        x = centers[y, k] + rng.normal(0.0, spec.spread, size=(n, spec.dim))
        if split == "train" and spec.label_noise:
            flip = rng.random(n) < spec.label_noise
            y = np.where(flip, rng.integers(0, spec.classes, size=n), y)
        out[split] = (torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long))
    return out


def mlp(in_dim: int, out_dim: int, spec: MLPSpec) -> nn.Sequential:
    """The MLP of `spec` from `in_dim` inputs to `out_dim` logits.

    Args:
        in_dim: input width.
        out_dim: number of logits.
        spec: hidden width and depth.

    Returns:
        An ``nn.Sequential``.

    Example:
        >>> mlp(10, 6, MLPSpec(hidden=16, depth=1))
        Sequential(
          (0): Linear(in_features=10, out_features=16, bias=True)
          (1): ReLU()
          (2): Linear(in_features=16, out_features=6, bias=True)
        )
    """
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(spec.depth):
        layers += [nn.Linear(width, spec.hidden), nn.ReLU()]
        width = spec.hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


@torch.no_grad()
def _scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    logits = model(x)
    return {"acc": accuracy(logits, y), "f1": weighted_f1(logits, y),
            "loss": float(nn.functional.cross_entropy(logits, y))}


def _models(cfg: Config) -> tuple[nn.Module, nn.Module, nn.Module]:
    d = cfg.data
    torch.manual_seed(cfg.seed)
    teacher = mlp(d.dim, d.classes, cfg.teacher)
    torch.manual_seed(cfg.seed + 1)
    student_ce = mlp(d.dim, d.classes, cfg.student)
    torch.manual_seed(cfg.seed + 1)  # same init for both students: the only difference is KD
    student_kd = mlp(d.dim, d.classes, cfg.student)
    return teacher, student_ce, student_kd


def run(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Run the recipe: teacher, student on labels only, student with KD from the teacher.

    Args:
        cfg: the validated config.
        ctx: the run.

    Returns:
        ``{"metrics": {"<model>/test_acc", "<model>/test_f1", "chance_acc"}, "rows": one per model}``.

    Example:
        >>> res = run(load_config("recipes/example-tiny.yaml"), ctx)  # doctest: +SKIP
    """
    splits = make_blobs(cfg.data)
    train = TensorDataset(*splits["train"])
    xv, yv = splits["val"]
    teacher, student_ce, student_kd = _models(cfg)

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {f"val/{k}": v for k, v in _scores(model, xv, yv).items()}

    def ce_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)

    fit(ctx, "teacher", teacher, train, ce_step, cfg.teacher_fit, evaluate)
    kd_teacher = ModuleTeacher(teacher, "teacher", config=cfg.teacher.model_dump())
    fit(ctx, "student_ce", student_ce, train, ce_step, cfg.student_fit, evaluate)

    def kd_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, y = batch
        t_logits = kd_teacher.predict(x)
        s_logits = model(x)
        ce = nn.functional.cross_entropy(s_logits, y)
        kd = kd_kl(s_logits, t_logits, temperature=cfg.kd.temperature)
        return {"loss": (1 - cfg.kd.alpha) * ce + cfg.kd.alpha * kd, "ce": ce, "kd": kd}

    fit(ctx, "student_kd", student_kd, train, kd_step, cfg.student_fit, evaluate)
    return _test_results(cfg, splits, {"teacher": teacher, "student_ce": student_ce, "student_kd": student_kd})


def _test_results(cfg: Config, splits: dict[str, Any], models: dict[str, nn.Module]) -> dict[str, Any]:
    xt, yt = splits["test"]
    rows, metrics = [], {}
    for name, model in models.items():
        model.eval()
        s = _scores(model, xt, yt)
        rows.append({"model": name, "test_acc": s["acc"], "test_f1": s["f1"]})
        metrics[f"{name}/test_acc"] = s["acc"]
        metrics[f"{name}/test_f1"] = s["f1"]
    metrics["chance_acc"] = 1.0 / cfg.data.classes
    return {"metrics": metrics, "rows": rows}


def evaluate(cfg: Config, ctx: RunContext) -> dict[str, Any]:
    """Re-score the saved best checkpoints of a finished run on freshly generated test data.

    Args:
        cfg: the run's config.
        ctx: the run (its checkpoints).

    Returns:
        The same metrics as `run`'s.

    Example:
        >>> evaluate(cfg, ctx)["student_kd/test_acc"]  # doctest: +SKIP
    """
    models = dict(zip(("teacher", "student_ce", "student_kd"), _models(cfg)))
    for name, model in models.items():
        ckpt = ctx.run_dir / "checkpoints" / name / "best.pt"
        model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=False)["model"])
    return _test_results(cfg, make_blobs(cfg.data), models)["metrics"]
