"""MST-Distill stage 1: co-train the multimodal teacher, the cross-modal teacher and the student.

Each network learns from the labels (CE) and from the two others (KD, temperature T), all three
under one optimiser; the last weights are kept (no model selection), as in the official code
(Gray-OREO/MST-Distill). By default the KD terms send gradient into both networks
(`losses.kd.mutual_kd`, the official behaviour); `stage1_detach` detaches the target side
(`losses.kd.kd_kl`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from multiteacher.engine.loop import fit
from multiteacher.losses.kd import kd_kl, mutual_kd
from multiteacher.recipes.mst.evaluation import BatchT, SplitDataset
from multiteacher.recipes.mst.models import Member
from multiteacher.recipes.mst.plan import Plan
from multiteacher.runs import RunContext


class Trio(nn.Module):
    """mm teacher, cross-modal teacher and student trained together in stage 1."""

    def __init__(self, mm: Member, cross: Member, student: Member) -> None:
        super().__init__()
        self.mm, self.cross, self.student = mm, cross, student

    def forward(self, batch: BatchT) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.mm(batch), self.cross(batch), self.student(batch)


def cotrain(ctx: RunContext, plan: Plan) -> Trio:
    """Stage 1: co-train the multimodal teacher, the cross-modal teacher and the student.

    Args:
        ctx: the run.
        plan: the job (epochs_s1, temperature, stage1_detach).

    Returns:
        The trio with its last weights, on the run's device.

    Example:
        >>> trio = cotrain(ctx, plan)  # doctest: +SKIP
    """
    trio = Trio(plan.new(plan.mm_kind, "mm"), plan.new(plan.cross, "cross"), plan.new(plan.student, "student"))
    T = plan.temperature
    kd = (lambda s, t: kd_kl(s, t, T)) if plan.stage1_detach else (lambda s, t: mutual_kd(s, t, T))

    def step(model: nn.Module, batch: BatchT) -> dict[str, torch.Tensor]:
        t, a, s = model(batch)
        y = batch["label"]
        loss_t = F.cross_entropy(t, y) + kd(t, s) + kd(t, a)
        loss_a = F.cross_entropy(a, y) + kd(a, t) + kd(a, s)
        loss_s = F.cross_entropy(s, y) + kd(s, t) + kd(s, a)
        return {"loss": loss_t + loss_a + loss_s, "mm": loss_t, "cross": loss_a, "student": loss_s}

    fit(ctx, f"{plan.key}-mst-s1", trio, SplitDataset(plan.fold.train), step, plan.fit_cfg(plan.epochs_s1))
    return trio.to(ctx.fabric.device)  # a fit reloaded from disk leaves the model on the CPU
