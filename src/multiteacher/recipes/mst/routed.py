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
    """The student plus the engine `Router` that gates on its logits (trained together in stage 3).

    Args:
        student: the student network.
        num_teachers: K.
        top_k: teachers per instance (hard straight-through top-k).
        num_classes: width of the student's logits.
        dense: the logits are ``(B, C, H, W)`` (a conv router with global pooling: one route per image).

    Returns:
        A module; ``forward(batch)`` returns ``(student logits, RouterOutput)``.

    Example:
        >>> model = StudentRouter(student, num_teachers=4, top_k=1)  # doctest: +SKIP
        >>> logits, route = model(batch)  # doctest: +SKIP
    """

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
    """The stage-3 loss weights ``(w_kl, w_lb)`` during `epoch` (0-based).

    The official decays are applied after epochs 0, every, 2·every, ..., so during epoch e the
    factor is ``decay^ceil(e / every)``.

    Args:
        plan: the job (initial weights, decays and periods).
        epoch: the current epoch.

    Returns:
        ``(w_kl, w_lb)``.

    Example:
        >>> from types import SimpleNamespace as NS
        >>> p = NS(w_kl=1.0, kl_decay=0.5, kl_every=30, w_lb=1.0, lb_decay=0.9, lb_every=10)
        >>> loss_weights(p, 0), loss_weights(p, 1), loss_weights(p, 11)
        ((1.0, 1.0), (0.5, 0.9), (0.5, 0.81))
    """
    n_kl = -(-epoch // plan.kl_every)
    n_lb = -(-epoch // plan.lb_every)
    return plan.w_kl * plan.kl_decay**n_kl, plan.w_lb * plan.lb_decay**n_lb


def routed_kd(
    s: torch.Tensor, t: torch.Tensor, probs: torch.Tensor, routing: str, k: int, temperature: float
) -> torch.Tensor:
    """KD of the student from the teachers as a router chooses them.

    Args:
        s: ``(B, C, ...)`` student logits.
        t: ``(B, K, C, ...)`` teacher logits (a `TeacherPool`'s output).
        probs: ``(B, K)`` router probabilities.
        routing: "soft" (KD from the probs-weighted mixture), "hard" (mean KD over each instance's
            top-k teachers) or "random" (k uniformly drawn teachers; uses the global generator).
        k: teachers per instance (hard / random).
        temperature: KD temperature.

    Returns:
        A scalar tensor.

    Example:
        >>> s, t = torch.zeros(2, 3), torch.randn(2, 4, 3)
        >>> probs = torch.eye(4)[[1, 3]]  # instance 0 -> teacher 1, instance 1 -> teacher 3
        >>> hard = routed_kd(s, t, probs, "hard", 1, 2.0)
        >>> bool(torch.isclose(hard, multi_teacher_kd(s, t, 2.0, select=torch.tensor([1, 3]))))
        True
    """
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
    """Stage 3: the student (from the co-trained one) and a router distil from the masked teachers.

    Args:
        ctx: the run.
        plan: the job.
        trio: the co-trained networks (frozen here).
        masks: the stage-2 MaskNets (None: route over the two unmasked teachers).
        routing: "hard" (official), "soft" or "random".
        tag: the method name (fit name and router seed).

    Returns:
        The best student (by validation CE) and ``{"route_test", "route_train", "val", "teachers"}``.

    Example:
        >>> student, info = distill_routed(ctx, plan, trio, masks, "hard", "mst")  # doctest: +SKIP
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
    """Share of instances whose top-1 teacher is each teacher under the final router.

    Computed from the saved weights, so a resumed run reports the same numbers.

    Args:
        model: the trained student + router.
        plan: the job (its test and training splits).
        names: the teacher names, in pool order.
        dev: where to evaluate.

    Returns:
        ``{"test": {name: share}, "train": {name: share}}``.

    Example:
        >>> route_usage(model, plan, pool.names, dev)["test"]  # doctest: +SKIP
        {'mm@concat': 0.4, 'mm@fc1': 0.1, 'cross@conv3': 0.3, 'cross@fc1': 0.2}
    """
    model.eval()
    usage = {}
    for split_name, split in (("test", plan.fold.test), ("train", plan.fold.train)):
        probs = predict(lambda b: model(b)[1].logits.float().softmax(-1), split, dev, plan.eval_bs)
        usage[split_name] = routing_stats(probs, names)["usage"]
    return usage
