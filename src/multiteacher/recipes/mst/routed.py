"""MST-Distill stage 3: the student distils from the specialised teachers through a router.

The student and an engine `Router` (a gate on the student's logits) train with
``w_task·CE + w_kl·KD(student <- top-k chosen teacher) + w_lb·balance(router probs)``; the
teachers are served together by a `TeacherPool` as ``(B, K, C, ...)``. ``w_lb`` ×0.9 after
epochs 0, 10, 20, ..., ``w_kl`` ×0.5 after epochs 0, 30, ...; best student by validation CE.
With hard top-k (the official setting) the router gets gradient only from the balance loss;
``routing="soft"`` distils from the router-weighted mixture of the teachers' distributions, so
the router also learns from the KD loss; ``"random"`` draws teachers uniformly (an ablation).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from multiteacher.data.avdigits import stable_seed
from multiteacher.engine.loop import FitState, fit
from multiteacher.losses.kd import multi_teacher_kd
from multiteacher.recipes.mst.cotrain import Trio
from multiteacher.recipes.mst.evaluation import BatchT, SplitDataset, predict, val_scores
from multiteacher.recipes.mst.models import Member
from multiteacher.recipes.mst.plan import Plan
from multiteacher.recipes.mst.specialise import masked_teachers
from multiteacher.routing import Router, load_balance_cv, load_balance_kl, load_balance_kl_uniform, routing_stats
from multiteacher.runs import RunContext
from multiteacher.teachers.base import freeze_teacher
from multiteacher.teachers.pool import TeacherPool

# config `mst.balance` -> engine load-balance loss; "official": the official code's
# KLDivLoss(batchmean)(log p̄, U), i.e. KL(U || p̄) / K
BALANCE: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "official": partial(load_balance_kl_uniform, per_teacher=True),
    "kl": load_balance_kl,
    "cv": load_balance_cv,
}


class StudentRouter(nn.Module):
    """The student plus the router that gates on its logits."""

    def __init__(self, student: Member, num_teachers: int, top_k: int, num_classes: int = 10,
                 dense: bool = False) -> None:
        super().__init__()
        self.student = student
        # as the official GateNet: the student's logits through a 2x-wide hidden layer; dense logits
        # (B, C, H, W) go through conv + global pooling, so routing stays per instance
        c = num_classes
        self.router = (Router(num_teachers, in_channels=c, hidden=2 * c, top_k=top_k, hard=True) if dense
                       else Router(num_teachers, in_features=c, hidden=2 * c, top_k=top_k, hard=True))

    def forward(self, batch: BatchT) -> tuple[torch.Tensor, Any]:
        s = self.student(batch)
        return s, self.router(s)


def loss_weights(plan: Plan, epoch: int) -> tuple[float, float]:
    """(w_kl, w_lb) during `epoch` (0-based): the official decays are applied after epochs
    0, every, 2·every, ..., so during epoch e the factor is decay^ceil(e / every)."""
    n_kl = -(-epoch // plan.kl_every)
    n_lb = -(-epoch // plan.lb_every)
    return plan.w_kl * plan.kl_decay**n_kl, plan.w_lb * plan.lb_decay**n_lb


def routed_kd(
    s: torch.Tensor, t: torch.Tensor, probs: torch.Tensor, routing: str, k: int, temperature: float
) -> torch.Tensor:
    """KD of student logits `s` from teacher logits `t` (B, K, C, ...) as routed by `probs` (B, K):
    "soft" from the probs-weighted mixture, "hard" from each of the top-k teachers (mean over the k),
    "random" from k uniformly drawn teachers."""
    if routing == "soft":
        return multi_teacher_kd(s, t, temperature, weights=probs)
    if routing == "random":
        # the global CPU generator: its state is in the fit checkpoints, so resume is exact
        idx = torch.randint(0, t.shape[1], (len(s), k)).to(s.device)
    else:
        idx = torch.topk(probs, k, dim=1).indices
    return sum(multi_teacher_kd(s, t, temperature, select=idx[:, i]) for i in range(k)) / k


def distill_routed(
    ctx: RunContext, plan: Plan, trio: Trio, masks: nn.ModuleList | None, routing: str, tag: str,
) -> tuple[Member, dict[str, Any]]:
    """Student + router distillation from the masked teachers. `routing`: hard | soft | random.

    Returns the best student (by validation CE) and ``{"route_test", "route_train", "val", "teachers"}``.
    """
    dev = ctx.fabric.device
    for m in (trio.mm, trio.cross, trio.student):
        freeze_teacher(m).to(dev)
    pool = TeacherPool(masked_teachers(trio, plan, masks, plan.cumulative_masks))
    names = pool.names
    student = plan.new(plan.student, "student")
    student.load_state_dict(trio.student.state_dict())
    for p in student.parameters():
        p.requires_grad_(True)
    T, k = plan.temperature, min(plan.top_k, len(pool))
    torch.manual_seed(stable_seed("router", plan.seed, plan.key, tag) % 2**63)
    model = StudentRouter(student, len(pool), k, plan.num_classes, plan.dense)
    balance = BALANCE[plan.balance]

    def step(m: nn.Module, batch: BatchT, state: FitState) -> dict[str, torch.Tensor]:
        s, r = m(batch)
        t = pool.predict(batch)  # (B, K, C, ...)
        probs = r.logits.float().softmax(-1)
        w_kl, w_lb = loss_weights(plan, state.epoch)
        kd = routed_kd(s, t, probs, routing, k, T)
        lb = balance(probs) if routing != "random" else probs.sum() * 0.0
        ce = F.cross_entropy(s, batch["label"])
        return {"loss": plan.w_task * ce + w_kl * kd + w_lb * lb, "ce": ce, "kd": kd, "lb": lb}

    def evaluate(m: nn.Module) -> dict[str, float]:
        return val_scores(lambda b: m.student(b), plan.fold.val, dev, plan.eval_bs)

    res = fit(ctx, f"{plan.key}-{tag}", model, SplitDataset(plan.fold.train), step,
              plan.fit_cfg(plan.epochs_s3), evaluate)
    model.to(dev)
    usage = route_usage(model, plan, names, dev)
    if routing == "random":  # uniform draws: the router is not used
        usage = {k_: {n: 1.0 / len(names) for n in names} for k_ in usage}
    info = {"route_test": usage["test"], "route_train": usage["train"], "val": res.best_metrics,
            "teachers": names}
    return model.student, info


def route_usage(model: StudentRouter, plan: Plan, names: list[str], dev: torch.device) -> dict[str, dict[str, float]]:
    """Share of instances whose top-1 teacher is each teacher under the final router, on the test
    and the training split; computed from the saved weights so a resumed run reports the same."""
    model.eval()
    usage = {}
    for split_name, split in (("test", plan.fold.test), ("train", plan.fold.train)):
        probs = predict(lambda b: model(b)[1].logits.float().softmax(-1), split, dev, plan.eval_bs)
        usage[split_name] = routing_stats(probs, names)["usage"]
    return usage
