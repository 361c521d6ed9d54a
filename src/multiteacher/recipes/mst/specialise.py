"""MST-Distill stage 2: specialise the co-trained teachers with MaskNets hooked into their layers.

A MaskNet per layer in `mm_layers` (multimodal teacher) and `cross_layers` (cross-modal teacher)
makes one engine `MaskedTeacher` each (2L specialised teachers). Every MaskNet is trained alone,
with the networks frozen, so that its masked teacher matches the co-trained student's softened
prediction, ``KL(p_s^T || p_masked^T)``; the epoch with the best summed validation KL is kept.
"""

from __future__ import annotations

import torch
from torch import nn

from multiteacher.data.avdigits import stable_seed
from multiteacher.engine.loop import fit
from multiteacher.hooks import capture, get_submodule
from multiteacher.losses.kd import kd_kl
from multiteacher.recipes.mst.cotrain import Trio
from multiteacher.recipes.mst.evaluation import BatchT, SplitDataset, batches
from multiteacher.recipes.mst.masknets import masknet_for
from multiteacher.recipes.mst.plan import Plan
from multiteacher.runs import RunContext
from multiteacher.teachers.base import ModuleTeacher, Teacher, freeze_teacher
from multiteacher.teachers.masked import MaskedTeacher


def masked_teachers(
    trio: Trio, plan: Plan, masks: nn.ModuleList | None, cumulative: bool = False
) -> list[Teacher]:
    """The specialised teachers: one engine `MaskedTeacher` per MaskNet (mm layers first, then cross).

    Args:
        trio: the co-trained networks.
        plan: the job (`mm_layers`, `cross_layers`).
        masks: one MaskNet per layer, in that order (None: the two plain networks as `ModuleTeacher`s).
        cumulative: the official stage-3 quirk where the hooks of the earlier teachers of the same
            network stay attached: teacher j of a network also carries the masks before it.

    Returns:
        The teachers, named ``"<role>@<layer>"`` (or "mm", "cross").

    Example:
        >>> [t.name for t in masked_teachers(trio, plan, masks)]  # doctest: +SKIP
        ['mm@concat', 'mm@fc1', 'cross@conv3', 'cross@fc1']
    """
    if masks is None:
        return [ModuleTeacher(trio.mm, "mm"), ModuleTeacher(trio.cross, "cross")]
    out: list[Teacher] = []
    j = 0
    for role, model, layers in (("mm", trio.mm, plan.mm_layers), ("cross", trio.cross, plan.cross_layers)):
        active: dict[str, nn.Module] = {}
        for layer in layers:
            active = {**active, layer: masks[j]} if cumulative else {layer: masks[j]}
            out.append(MaskedTeacher(model, active, f"{role}@{layer.removeprefix('net.')}"))
            j += 1
    return out


def build_masks(trio: Trio, plan: Plan) -> nn.ModuleList:
    """A fresh MaskNet per hooked layer, shaped from one probe forward pass (seeded per job).

    Args:
        trio: the co-trained networks.
        plan: the job (layers, MaskNet heads and width, seed).

    Returns:
        The MaskNets, mm layers first, then cross layers.

    Example:
        >>> masks = build_masks(trio, plan)  # doctest: +SKIP
    """
    probe = {k: v[:2] for k, v in plan.fold.train.inputs().items()}
    nets = []
    torch.manual_seed(stable_seed("masks", plan.seed, plan.key) % 2**63)
    for model, layers in ((trio.mm, plan.mm_layers), (trio.cross, plan.cross_layers)):
        for layer in layers:
            get_submodule(model, layer)
            was = model.training
            model.eval()
            with torch.no_grad(), capture(model, [layer]) as feats:
                model({k: v.to(next(model.parameters()).device) for k, v in probe.items()})
            model.train(was)
            nets.append(masknet_for(feats[layer].cpu(), plan.mask_heads, plan.mask_hidden))
    return nn.ModuleList(nets)


def fit_masks(ctx: RunContext, plan: Plan, trio: Trio) -> tuple[nn.ModuleList, dict[str, float]]:
    """Stage 2: train every MaskNet alone (networks frozen) so its masked teacher matches the student.

    Args:
        ctx: the run.
        plan: the job.
        trio: the co-trained networks (frozen here).

    Returns:
        The frozen MaskNets and the best validation metrics (``val/kl`` summed, ``val/kl<j>`` each).

    Example:
        >>> masks, val = fit_masks(ctx, plan, trio)  # doctest: +SKIP
    """
    for m in (trio.mm, trio.cross, trio.student):
        freeze_teacher(m)
    dev = ctx.fabric.device
    trio.to(dev)
    masks = build_masks(trio, plan)
    T = plan.temperature
    teachers = masked_teachers(trio, plan, masks)
    student = ModuleTeacher(trio.student, "s1-student")

    def losses(batch: BatchT) -> list[torch.Tensor]:
        # each MaskNet alone on its layer; the masked teacher matches the student's soft prediction
        s = student.predict(batch)
        return [kd_kl(t.forward(batch), s, T) for t in teachers]

    def step(_bank: nn.Module, batch: BatchT) -> dict[str, torch.Tensor]:
        ls = losses(batch)
        return {"loss": torch.stack(ls).sum(), **{f"kl{j}": v for j, v in enumerate(ls)}}

    def evaluate(_bank: nn.Module) -> dict[str, float]:
        tot = torch.zeros(len(masks))
        n = 0
        for b in batches(plan.fold.val, dev, plan.eval_bs):
            tot += torch.stack(losses(b)).cpu() * len(b["label"])
            n += len(b["label"])
        return {"val/kl": float(tot.sum() / n), **{f"val/kl{j}": float(v / n) for j, v in enumerate(tot)}}

    res = fit(ctx, f"{plan.key}-mst-s2", masks, SplitDataset(plan.fold.train), step,
              plan.fit_cfg(plan.epochs_s2, "val/kl", "min"), evaluate)
    freeze_teacher(masks.to(dev))
    return masks, res.best_metrics


def mask_stats(trio: Trio, plan: Plan, masks: nn.ModuleList, dev: torch.device) -> dict[str, float]:
    """Mean and spread of each MaskNet's mask on validation data (all-ones would mean 'no mask').

    Args:
        trio: the co-trained networks.
        plan: the job.
        masks: the trained MaskNets.
        dev: where to evaluate.

    Returns:
        ``{"mask_mean/<teacher>", "mask_std/<teacher>", "mask_min/<teacher>": float}``.

    Example:
        >>> mask_stats(trio, plan, masks, dev)["mask_mean/mm@fc1"]  # doctest: +SKIP
        0.62
    """
    out: dict[str, float] = {}
    b = next(batches(plan.fold.val, dev, min(plan.eval_bs, 256)))
    for t in masked_teachers(trio, plan, masks):
        (m,) = t.mask_values(b).values()
        out[f"mask_mean/{t.name}"] = float(m.mean())
        out[f"mask_std/{t.name}"] = float(m.std())
        out[f"mask_min/{t.name}"] = float(m.min())
    return out
