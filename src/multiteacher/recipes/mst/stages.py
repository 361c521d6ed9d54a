"""MST-Distill stages and the baselines, on one (fold, student modality) of AV-digits.

Roles: ``mm`` is the multimodal teacher (FusionNet on image + audio), ``cross`` the cross-modal
teacher (a unimodal net on the *other* modality), ``student`` a unimodal net on the student's
modality. Every training call goes through `multiteacher.engine.loop.fit` (checkpoints, exact
resume); frozen models stay in eval mode under `torch.no_grad()`.

MST-Distill (Li et al., ACM MM 2025), following the official code (Gray-OREO/MST-Distill):

1. co-train mm, cross and student: each CE + KD (T=4) from the two others, one Adam over all
   three; the last weights are kept (no model selection), as in the official code;
2. MaskNets hooked into `mask_layers` of mm and of cross (2 each -> 2L specialised teachers),
   each trained alone with the teachers frozen to match the co-trained student's softened
   prediction ``KL(p_s^T || p_masked^T)``; the set with the best summed validation KL is kept;
3. the student and a router (a gate on the student's logits) train with
   ``w_task·CE + w_kl·KD(student <- top-k chosen masked teacher) + w_lb·balance(router probs)``;
   ``w_lb`` ×0.9 after epochs 0, 10, 20, ..., ``w_kl`` ×0.5 after epochs 0, 30, ...; best student
   by validation CE. With hard top-k (the official setting) the router gets gradient only from
   the balance loss; `routing="soft"` instead distils from the router-weighted mixture of the
   teachers' distributions, so the router also learns from the KD loss.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from multiteacher.data.avdigits import Fold, Split, stable_seed
from multiteacher.engine.loop import FitConfig, FitState, fit
from multiteacher.hooks import capture, get_submodule, mask_output
from multiteacher.losses.kd import dkd, fitnet, kd_kl, multi_teacher_kd
from multiteacher.metrics.classify import accuracy, weighted_f1
from multiteacher.metrics.dense import miou, pixel_accuracy
from multiteacher.recipes.mst.masknets import masknet_for
from multiteacher.recipes.mst.models import Member, build, other
from multiteacher.routing import Router, load_balance_cv, load_balance_kl, routing_stats
from multiteacher.runs import RunContext

BatchT = dict[str, torch.Tensor]


# --------------------------------------------------------------------------------- data + eval
class SplitDataset(Dataset[BatchT]):
    """A Split as a map-style dataset of dicts (default collate stacks them)."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> BatchT:
        return {**{k: v[i] for k, v in self.split.inputs().items()}, "label": self.split.label[i]}


def batches(split: Split, device: torch.device, bs: int = 500):
    """Fixed-order evaluation batches on `device`."""
    inputs = split.inputs()
    for i in range(0, len(split), bs):
        yield {**{k: v[i:i + bs].to(device) for k, v in inputs.items()}, "label": split.label[i:i + bs].to(device)}


@torch.no_grad()
def predict(
    fn: Callable[[BatchT], torch.Tensor], split: Split, device: torch.device, bs: int = 500
) -> torch.Tensor:
    """Outputs of `fn` over a split (CPU tensor)."""
    return torch.cat([fn(b).float().cpu() for b in batches(split, device, bs)])


def scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Classification (B, C): acc, weighted F1, CE. Segmentation (B, C, H, W): pixel acc, mIoU, CE."""
    loss = float(F.cross_entropy(logits, labels))
    if logits.dim() == 4:
        pred = logits.argmax(1)
        return {"acc": pixel_accuracy(pred, labels, None), "miou": miou(pred, labels, logits.shape[1], None),
                "loss": loss}
    return {"acc": accuracy(logits, labels), "f1": weighted_f1(logits, labels), "loss": loss}


def _device(ctx: RunContext) -> torch.device:
    return ctx.fabric.device


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode, no gradients: how teachers are used after their own training."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# --------------------------------------------------------------------------------- settings
@dataclass
class Plan:
    """What one (fold, student modality) job needs from the config, in plain values."""

    student: str  # "image" or "audio"
    fold: Fold
    fit: FitConfig  # optimiser, batch size (max_steps / val_every are set per call)
    width: int
    embed: int
    dropout: float
    seed: int
    temperature: float
    epochs_s1: int
    epochs_s2: int
    epochs_s3: int
    teacher_epochs: int
    mm_layers: list[str]
    cross_layers: list[str]
    mask_heads: int
    mask_hidden: int | None
    top_k: int
    balance: str
    w_task: float
    w_kl: float
    w_lb: float
    lb_decay: float
    lb_every: int
    kl_decay: float
    kl_every: int
    cumulative_masks: bool
    stage1_detach: bool
    kd_weight: float
    fitnet_weight: float
    dkd_alpha: float
    dkd_beta: float
    dkd_warmup_epochs: int
    # task: AV-digits classification by default; the scene segmentation task sets these
    mm_kind: str = "fusion"
    cross_kind: str | None = None  # None: the other AV modality
    builder: Callable[[str], Member] | None = None
    dense: bool = False
    num_classes: int = 10
    eval_bs: int = 500

    @property
    def cross(self) -> str:
        """Model kind of the cross-modal teacher."""
        return self.cross_kind or other(self.student)

    @property
    def key(self) -> str:
        return f"{self.fold.test_speaker}-{self.student}"

    @property
    def student_epochs(self) -> int:
        """Student epochs of MST (stage 1 + stage 3): what every baseline student gets."""
        return self.epochs_s1 + self.epochs_s3

    def steps_per_epoch(self) -> int:
        n = len(self.fold.train)
        return max(1, n // self.fit.batch_size if self.fit.drop_last else math.ceil(n / self.fit.batch_size))

    def fit_cfg(self, epochs: int, monitor: str = "val/loss", mode: str = "min") -> FitConfig:
        spe = self.steps_per_epoch()
        return self.fit.model_copy(update={"max_steps": max(1, epochs * spe), "val_every": spe,
                                           "monitor": monitor, "mode": mode})

    def new(self, kind: str, role: str) -> Member:
        """A fresh model; the init depends on (seed, fold, student modality, role) only."""
        torch.manual_seed(stable_seed("init", self.seed, self.key, role) % 2**63)
        if self.builder is not None:
            return self.builder(kind)
        return build(kind, self.width, self.embed, self.dropout)


def _kd_both(s: torch.Tensor, t: torch.Tensor, T: float) -> torch.Tensor:
    """T²·KL(p_t || p_s) with gradient into *both* logits (the official stage-1 mutual KD);
    averaged over samples and, for dense logits (B, C, H, W), over pixels (as the official code)."""
    kl = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="none").sum(1)
    return kl.mean() * T * T


def balance_loss(probs: torch.Tensor, kind: str) -> torch.Tensor:
    """Router load balance. "official": the official code's ``KLDivLoss(batchmean)(log p̄, U)``,
    i.e. KL(U || p̄) / K; "kl": KL(p̄ || U); "cv": squared coefficient of variation."""
    if kind == "kl":
        return load_balance_kl(probs)
    if kind == "cv":
        return load_balance_cv(probs)
    pbar = probs.float().mean(0)
    K = pbar.numel()
    return (math.log(1.0 / K) - pbar.clamp(min=1e-12).log()).sum() / (K * K)


# --------------------------------------------------------------------------------- stage 1
class Trio(nn.Module):
    """mm teacher, cross-modal teacher and student trained together in stage 1."""

    def __init__(self, mm: Member, cross: Member, student: Member) -> None:
        super().__init__()
        self.mm, self.cross, self.student = mm, cross, student

    def forward(self, batch: BatchT) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.mm(batch), self.cross(batch), self.student(batch)


def stage1(ctx: RunContext, plan: Plan) -> Trio:
    """Co-training (CE + mutual KD); returns the trio with its last weights."""
    trio = Trio(plan.new(plan.mm_kind, "mm"), plan.new(plan.cross, "cross"), plan.new(plan.student, "student"))
    T = plan.temperature
    kd = (lambda s, t: kd_kl(s, t, T)) if plan.stage1_detach else (lambda s, t: _kd_both(s, t, T))

    def step(model: nn.Module, batch: BatchT) -> dict[str, torch.Tensor]:
        t, a, s = model(batch)
        y = batch["label"]
        loss_t = F.cross_entropy(t, y) + kd(t, s) + kd(t, a)
        loss_a = F.cross_entropy(a, y) + kd(a, t) + kd(a, s)
        loss_s = F.cross_entropy(s, y) + kd(s, t) + kd(s, a)
        return {"loss": loss_t + loss_a + loss_s, "mm": loss_t, "cross": loss_a, "student": loss_s}

    fit(ctx, f"{plan.key}-mst-s1", trio, SplitDataset(plan.fold.train), step, plan.fit_cfg(plan.epochs_s1))
    return trio.to(_device(ctx))  # a fit reloaded from disk leaves the model on the CPU


# --------------------------------------------------------------------------------- stage 2
@dataclass
class MaskedTeacher:
    """One specialised teacher: `model` with `masknet` hooked at `layer` (name for reports)."""

    name: str
    model: nn.Module
    layer: str
    masknet: nn.Module | None


def masked_teachers(trio: Trio, plan: Plan, masks: nn.ModuleList | None) -> list[MaskedTeacher]:
    """The 2L masked teachers (mm layers first, then cross layers); without masks, the plain two."""
    if masks is None:
        return [MaskedTeacher("mm", trio.mm, "", None), MaskedTeacher("cross", trio.cross, "", None)]
    out, j = [], 0
    for role, model, layers in (("mm", trio.mm, plan.mm_layers), ("cross", trio.cross, plan.cross_layers)):
        for layer in layers:
            out.append(MaskedTeacher(f"{role}@{layer.removeprefix('net.')}", model, layer, masks[j]))
            j += 1
    return out


def build_masks(trio: Trio, plan: Plan) -> nn.ModuleList:
    """A MaskNet per hooked layer, shaped from one probe forward pass."""
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


def teacher_logits(
    teachers: list[MaskedTeacher], batch: BatchT, cumulative: bool = False, record: dict | None = None
) -> list[torch.Tensor]:
    """Each masked teacher's logits. `cumulative` reproduces the official stage-3 quirk where the
    hooks of earlier teachers of the same model are still attached (masks accumulate)."""
    outs = []
    for j, t in enumerate(teachers):
        with contextlib.ExitStack() as stack:
            active = [u for u in teachers[: j + 1] if u.model is t.model] if cumulative else [t]
            for u in active:
                if u.masknet is not None:
                    stack.enter_context(mask_output(u.model, u.layer, u.masknet, record))
            outs.append(t.model(batch))
    return outs


def stage2(ctx: RunContext, plan: Plan, trio: Trio) -> tuple[nn.ModuleList, dict[str, float]]:
    """Train every MaskNet alone (teachers and student frozen) to match the student's prediction."""
    for m in (trio.mm, trio.cross, trio.student):
        freeze(m)
    dev = _device(ctx)
    trio.to(dev)
    masks = build_masks(trio, plan)
    T = plan.temperature

    teachers = masked_teachers(trio, plan, masks)

    def losses(batch: BatchT) -> list[torch.Tensor]:
        # each MaskNet alone on its layer; the masked teacher matches the student's soft prediction
        with torch.no_grad():
            s = trio.student(batch)
        return [kd_kl(t, s, T) for t in teacher_logits(teachers, batch)]

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
    masks.to(dev).eval()
    for p in masks.parameters():
        p.requires_grad_(False)
    return masks, res.best_metrics


# --------------------------------------------------------------------------------- stage 3
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


def stage3(
    ctx: RunContext, plan: Plan, trio: Trio, masks: nn.ModuleList | None, routing: str, tag: str,
) -> tuple[Member, dict[str, Any]]:
    """Student + router distillation from the masked teachers. `routing`: hard | soft | random."""
    dev = _device(ctx)
    for m in (trio.mm, trio.cross, trio.student):
        freeze(m).to(dev)
    teachers = masked_teachers(trio, plan, masks)
    names = [t.name for t in teachers]
    student = plan.new(plan.student, "student")
    student.load_state_dict(trio.student.state_dict())
    for p in student.parameters():
        p.requires_grad_(True)
    T, k = plan.temperature, min(plan.top_k, len(teachers))
    torch.manual_seed(stable_seed("router", plan.seed, plan.key, tag) % 2**63)
    model = StudentRouter(student, len(teachers), k, plan.num_classes, plan.dense)

    def step(m: nn.Module, batch: BatchT, state: FitState) -> dict[str, torch.Tensor]:
        s, r = m(batch)
        with torch.no_grad():
            t = torch.stack(teacher_logits(teachers, batch, plan.cumulative_masks), 1)  # (B, K, C)
        probs = r.logits.float().softmax(-1)
        w_kl, w_lb = loss_weights(plan, state.epoch)
        if routing == "soft":
            kd = multi_teacher_kd(s, t, T, weights=probs)
        else:
            if routing == "random":
                # the global CPU generator: its state is in the fit checkpoints, so resume is exact
                idx = torch.randint(0, len(teachers), (len(s), k)).to(s.device)
            else:
                idx = torch.topk(probs, k, dim=1).indices
            kd = sum(multi_teacher_kd(s, t, T, select=idx[:, i]) for i in range(k)) / k
        lb = balance_loss(probs, plan.balance) if routing != "random" else probs.sum() * 0.0
        ce = F.cross_entropy(s, batch["label"])
        return {"loss": plan.w_task * ce + w_kl * kd + w_lb * lb, "ce": ce, "kd": kd, "lb": lb}

    def evaluate(m: nn.Module) -> dict[str, float]:
        sc = scores(predict(lambda b: m.student(b), plan.fold.val, dev, plan.eval_bs), plan.fold.val.label)
        return {f"val/{k_}": v for k_, v in sc.items()}

    res = fit(ctx, f"{plan.key}-{tag}", model, SplitDataset(plan.fold.train), step,
              plan.fit_cfg(plan.epochs_s3), evaluate)
    model.to(dev)
    # routing usage of the final router (which teacher each instance would get), on test and train
    # data; computed from the saved weights so that a resumed run reports the same numbers
    model.eval()
    usage = {}
    for split_name, split in (("test", plan.fold.test), ("train", plan.fold.train)):
        probs = predict(lambda b: model(b)[1].logits.float().softmax(-1), split, dev, plan.eval_bs)
        usage[split_name] = routing_stats(probs, names)["usage"]
    if routing == "random":  # uniform draws: the router is not used
        usage = {k_: {n: 1.0 / len(names) for n in names} for k_ in usage}
    info = {"route_test": usage["test"], "route_train": usage["train"], "val": res.best_metrics,
            "teachers": names}
    return model.student, info


def mask_stats(trio: Trio, plan: Plan, masks: nn.ModuleList, dev: torch.device) -> dict[str, float]:
    """Mean and spread of each MaskNet's mask on validation data (all-ones would mean 'no mask')."""
    teachers = masked_teachers(trio, plan, masks)
    out: dict[str, float] = {}
    b = next(batches(plan.fold.val, dev, min(plan.eval_bs, 256)))
    for t in teachers:
        rec: dict[str, torch.Tensor] = {}
        with torch.no_grad(), mask_output(t.model, t.layer, t.masknet, rec):
            t.model(b)
        m = rec[t.layer]
        out[f"mask_mean/{t.name}"] = float(m.mean())
        out[f"mask_std/{t.name}"] = float(m.std())
        out[f"mask_min/{t.name}"] = float(m.min())
    return out


# --------------------------------------------------------------------------------- baselines
def train_teacher(ctx: RunContext, plan: Plan, role: str) -> Member:
    """Independently trained teacher for the baselines: "mm" (fusion) or "cross" (other modality)."""
    kind = plan.mm_kind if role == "mm" else plan.cross
    model = plan.new(kind, f"teacher-{role}")
    dev = _device(ctx)

    def step(m: nn.Module, batch: BatchT) -> torch.Tensor:
        return F.cross_entropy(m(batch), batch["label"])

    def evaluate(m: nn.Module) -> dict[str, float]:
        sc = scores(predict(m, plan.fold.val, dev, plan.eval_bs), plan.fold.val.label)
        return {f"val/{k}": v for k, v in sc.items()}

    # the fusion teacher does not depend on the student modality: share it between directions
    name = f"{plan.fold.test_speaker}-teacher-{kind}"
    fit(ctx, name, model, SplitDataset(plan.fold.train), step, plan.fit_cfg(plan.teacher_epochs), evaluate)
    return freeze(model).to(dev)


class WithProjector(nn.Module):
    """Student plus a FitNet projector (student fc1 -> teacher fc1 width)."""

    def __init__(self, student: Member, t_dim: int) -> None:
        super().__init__()
        self.student = student
        self.proj = nn.Linear(student.net.embed_dim, t_dim, bias=False)

    def forward(self, batch: BatchT) -> torch.Tensor:
        return self.student(batch)


def train_baseline(
    ctx: RunContext, plan: Plan, method: str, mm: Member | None, cross: Member | None
) -> Member:
    """One baseline student with `plan.student_epochs` epochs. Methods: no_kd, kd_mm, kd_cross,
    aver (mean of the two teachers' distributions), fitnet (fc1 hint from mm), dkd (from mm)."""
    student = plan.new(plan.student, "student")
    T = plan.temperature
    dev = _device(ctx)
    model: nn.Module = WithProjector(student, mm.net.embed_dim) if method == "fitnet" and mm else student
    spe = plan.steps_per_epoch()

    def step(m: nn.Module, batch: BatchT, state: FitState) -> dict[str, torch.Tensor]:
        y = batch["label"]
        if method == "fitnet":
            with capture(student, ["net.fc1"]) as fs:
                s = m(batch)
        else:
            s = m(batch)
        ce = F.cross_entropy(s, y)
        if method == "no_kd":
            return {"loss": ce}
        with torch.no_grad():
            if method == "fitnet":
                with capture(mm, ["net.fc1"]) as ft:
                    mm(batch)
            t_mm = mm(batch) if method in ("kd_mm", "aver", "dkd") else None
            t_cr = cross(batch) if method in ("kd_cross", "aver") else None
        if method == "kd_mm":
            extra = plan.kd_weight * kd_kl(s, t_mm, T)
        elif method == "kd_cross":
            extra = plan.kd_weight * kd_kl(s, t_cr, T)
        elif method == "aver":
            extra = plan.kd_weight * multi_teacher_kd(s, torch.stack([t_mm, t_cr], 1), T)
        elif method == "fitnet":
            extra = plan.fitnet_weight * fitnet(model.proj(fs["net.fc1"]), ft["net.fc1"])
        elif method == "dkd":
            warm = min(1.0, (state.step + 1) / max(1, plan.dkd_warmup_epochs * spe))
            extra = warm * dkd(s, t_mm, y, plan.dkd_alpha, plan.dkd_beta, T)
        else:
            raise ValueError(f"unknown baseline {method!r}")
        return {"loss": ce + extra, "ce": ce, "distill": extra}

    def evaluate(m: nn.Module) -> dict[str, float]:
        sc = scores(predict(student, plan.fold.val, dev, plan.eval_bs), plan.fold.val.label)
        return {f"val/{k}": v for k, v in sc.items()}

    fit(ctx, f"{plan.key}-{method}", model, SplitDataset(plan.fold.train), step,
        plan.fit_cfg(plan.student_epochs), evaluate)
    return student.to(dev)
