"""Baselines of the MST-Distill comparison: independently trained teachers and KD students.

Every baseline student trains for `plan.student_epochs` (MST's stage 1 + stage 3), with
``CE + distillation term``. Methods: ``no_kd``; ``kd_mm`` / ``kd_cross`` (Hinton KD from the
multimodal / cross-modal teacher); ``aver`` (KD from the mean of the two teachers'
distributions, served together by a `TeacherPool`); ``fitnet`` (fc1 hint from the multimodal
teacher through a linear projector); ``dkd`` (decoupled KD from the multimodal teacher, with a
linear warm-up). The teachers are engine `ModuleTeacher`s.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from multiteacher.engine.loop import FitState, fit
from multiteacher.hooks import capture
from multiteacher.losses.kd import dkd, fitnet, kd_kl, multi_teacher_kd
from multiteacher.recipes.mst.evaluation import BatchT, SplitDataset, val_scores
from multiteacher.recipes.mst.models import Member
from multiteacher.recipes.mst.plan import Plan
from multiteacher.runs import RunContext
from multiteacher.teachers.base import ModuleTeacher
from multiteacher.teachers.pool import TeacherPool

BASELINES = ("no_kd", "kd_mm", "kd_cross", "aver", "fitnet", "dkd")
FEATURE = "net.fc1"  # the FitNet hint layer (student and multimodal teacher)

# distillation term of a baseline: (student logits, student hint features, batch, step state) -> loss
TermT = Callable[[torch.Tensor, torch.Tensor | None, BatchT, FitState], torch.Tensor]


def fit_teacher(ctx: RunContext, plan: Plan, role: str) -> ModuleTeacher:
    """The independently trained teacher of the baselines (CE, best epoch by validation loss).

    Args:
        ctx: the run.
        plan: the job.
        role: "mm" (multimodal) or "cross" (the other modality).

    Returns:
        The teacher as an engine `ModuleTeacher` (frozen, on the run's device).

    Example:
        >>> mm = fit_teacher(ctx, plan, "mm")  # doctest: +SKIP
    """
    kind = plan.mm_kind if role == "mm" else plan.cross
    model = plan.new(kind, f"teacher-{role}")
    dev = ctx.fabric.device

    def step(m: nn.Module, batch: BatchT) -> torch.Tensor:
        return F.cross_entropy(m(batch), batch["label"])

    def evaluate(m: nn.Module) -> dict[str, float]:
        return val_scores(m, plan.fold.val, dev, plan.eval_bs)

    # the fusion teacher does not depend on the student modality: share it between directions
    name = f"{plan.fold.test_speaker}-teacher-{kind}"
    fit(ctx, name, model, SplitDataset(plan.fold.train), step, plan.fit_cfg(plan.teacher_epochs), evaluate)
    return ModuleTeacher(model.to(dev), f"teacher-{role}")


class WithProjector(nn.Module):
    """Student plus a FitNet projector (student fc1 -> teacher fc1 width)."""

    def __init__(self, student: Member, t_dim: int) -> None:
        super().__init__()
        self.student = student
        self.proj = nn.Linear(student.net.embed_dim, t_dim, bias=False)

    def forward(self, batch: BatchT) -> torch.Tensor:
        return self.student(batch)


def distill_term(
    plan: Plan, method: str, mm: ModuleTeacher | None, cross: ModuleTeacher | None, model: nn.Module
) -> TermT:
    """The weighted distillation term of a baseline, as a function of one step's values.

    Args:
        plan: the job (temperature, weights, DKD warm-up).
        method: one of `BASELINES` other than "no_kd".
        mm: the multimodal teacher.
        cross: the cross-modal teacher.
        model: the trained module (holds the FitNet projector for "fitnet").

    Returns:
        ``term(student_logits, student_hint_features, batch, state) -> loss``.

    Example:
        >>> term = distill_term(plan, "kd_mm", mm, None, student)  # doctest: +SKIP
    """
    T = plan.temperature
    if method == "kd_mm":
        return lambda s, _f, b, _st: plan.kd_weight * kd_kl(s, mm.predict(b), T)
    if method == "kd_cross":
        return lambda s, _f, b, _st: plan.kd_weight * kd_kl(s, cross.predict(b), T)
    if method == "aver":
        pool = TeacherPool([mm, cross])
        return lambda s, _f, b, _st: plan.kd_weight * multi_teacher_kd(s, pool.predict(b), T)
    if method == "fitnet":
        return lambda _s, f, b, _st: plan.fitnet_weight * fitnet(model.proj(f), mm.features(b, [FEATURE])[FEATURE])
    if method == "dkd":
        warmup_steps = max(1, plan.dkd_warmup_epochs * plan.steps_per_epoch())

        def term(s: torch.Tensor, _f: torch.Tensor | None, b: BatchT, state: FitState) -> torch.Tensor:
            warm = min(1.0, (state.step + 1) / warmup_steps)
            return warm * dkd(s, mm.predict(b), b["label"], plan.dkd_alpha, plan.dkd_beta, T)

        return term
    raise ValueError(f"unknown baseline {method!r}; use one of {BASELINES}")


def baseline_student(
    ctx: RunContext, plan: Plan, method: str, mm: ModuleTeacher | None, cross: ModuleTeacher | None
) -> Member:
    """One baseline student trained for `plan.student_epochs` epochs with CE + its distillation term.

    Args:
        ctx: the run.
        plan: the job.
        method: one of `BASELINES`.
        mm: the multimodal teacher (kd_mm, aver, fitnet, dkd).
        cross: the cross-modal teacher (kd_cross, aver).

    Returns:
        The best student by validation loss, on the run's device.

    Example:
        >>> student = baseline_student(ctx, plan, "kd_mm", fit_teacher(ctx, plan, "mm"), None)  # doctest: +SKIP
    """
    student = plan.new(plan.student, "student")
    dev = ctx.fabric.device
    model: nn.Module = WithProjector(student, mm.module.net.embed_dim) if method == "fitnet" and mm else student
    term = None if method == "no_kd" else distill_term(plan, method, mm, cross, model)

    def step(m: nn.Module, batch: BatchT, state: FitState) -> dict[str, torch.Tensor]:
        feats = None
        if method == "fitnet":
            with capture(student, [FEATURE]) as fs:
                s = m(batch)
            feats = fs[FEATURE]
        else:
            s = m(batch)
        ce = F.cross_entropy(s, batch["label"])
        if term is None:
            return {"loss": ce}
        extra = term(s, feats, batch, state)
        return {"loss": ce + extra, "ce": ce, "distill": extra}

    def evaluate(m: nn.Module) -> dict[str, float]:
        return val_scores(student, plan.fold.val, dev, plan.eval_bs)

    fit(ctx, f"{plan.key}-{method}", model, SplitDataset(plan.fold.train), step,
        plan.fit_cfg(plan.student_epochs), evaluate)
    return student.to(dev)
