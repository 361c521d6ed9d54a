"""One MST job: every requested method on one (fold, student modality), each method one stage.

What several methods share is built once, on first use, in a fixed order: the co-trained trio
(stage 1) for all MST variants, the MaskNets (stage 2) for the masked ones, the independently
trained teachers for the baselines. MST methods run first, so that a resumed run rebuilds the
shared parts from their finished fits in the same order.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from multiteacher.recipes.mst.baselines import baseline_student, fit_teacher
from multiteacher.recipes.mst.cotrain import Trio, cotrain
from multiteacher.recipes.mst.evaluation import result_row
from multiteacher.recipes.mst.plan import Plan
from multiteacher.recipes.mst.routed import distill_routed
from multiteacher.recipes.mst.specialise import fit_masks, mask_stats
from multiteacher.runs import RunContext
from multiteacher.teachers.base import ModuleTeacher

ROUTING = {"mst": "hard", "mst_nomask": "hard", "mst_random": "random", "mst_soft": "soft"}
NEEDS_MM = ("kd_mm", "aver", "fitnet", "dkd")
NEEDS_CROSS = ("kd_cross", "aver")


class Job:
    """The methods of one (fold, student modality); shared parts are built once, on first use.

    Args:
        ctx: the run.
        plan: the job.

    Returns:
        A job; ``run(methods)`` returns the results rows.

    Example:
        >>> rows = Job(ctx, plan).run(["mst", "kd_mm"])  # doctest: +SKIP
    """

    def __init__(self, ctx: RunContext, plan: Plan) -> None:
        self.ctx, self.plan = ctx, plan
        self.dev = ctx.fabric.device
        self._trio: Trio | None = None
        self._masks: torch.nn.ModuleList | None = None
        self._s2_val: dict[str, float] = {}
        self._teachers: dict[str, ModuleTeacher] = {}

    # ------------------------------------------------------------------ shared parts
    def trio(self) -> Trio:
        """The co-trained (mm, cross, student) trio of stage 1."""
        if self._trio is None:
            self._trio = cotrain(self.ctx, self.plan)
        return self._trio

    def masks(self) -> torch.nn.ModuleList:
        """The trained MaskNets of stage 2."""
        if self._masks is None:
            self._masks, self._s2_val = fit_masks(self.ctx, self.plan, self.trio())
        return self._masks

    def teacher(self, role: str) -> ModuleTeacher:
        """The independently trained "mm" or "cross" teacher of the baselines."""
        if role not in self._teachers:
            self._teachers[role] = fit_teacher(self.ctx, self.plan, role)
        return self._teachers[role]

    # ------------------------------------------------------------------ methods
    def run(self, methods: list[str]) -> list[dict[str, Any]]:
        """Rows of every method, MST variants first; each method is one resumable stage."""
        p = self.plan
        rows: list[dict[str, Any]] = []
        for method in sorted(methods, key=lambda m: (not m.startswith("mst"), m != "mst_s1", m)):
            out = self.ctx.stage(f"{p.fold.test_speaker}/{p.student}/{method}", lambda m=method: self.method(m))
            rows += out["rows"]
        return rows

    def method(self, method: str) -> dict[str, Any]:
        """One method's stage result ``{"rows": [...], ...}``."""
        if method in ROUTING:
            return self.mst_variant(method)
        if method == "mst_s1":
            t = self.trio()
            return {"rows": [self.row("mst_s1", t.student), self.row("mst_s1_mm_teacher", t.mm),
                             self.row("mst_s1_cross_teacher", t.cross)]}
        if method == "teachers":
            return {"rows": [self.row("teacher_mm", self.teacher("mm").module),
                             self.row("teacher_cross", self.teacher("cross").module)]}
        mm = self.teacher("mm") if method in NEEDS_MM else None
        cross = self.teacher("cross") if method in NEEDS_CROSS else None
        student = baseline_student(self.ctx, self.plan, method, mm, cross)
        return {"rows": [self.row(method, student)]}

    def mst_variant(self, method: str) -> dict[str, Any]:
        """MST-Distill (stage 3 on the stage-1 trio and stage-2 MaskNets) or one of its routed ablations."""
        m = None if method == "mst_nomask" else self.masks()
        student, info = distill_routed(self.ctx, self.plan, self.trio(), m, ROUTING[method], method)
        row = self.row(method, student)
        # usage: the final router's top-1 choice per instance (test set; route_train/: training set)
        usage = info["route_test"]
        row.update({f"route/{k}": v for k, v in usage.items()})
        row.update({f"route_train/{k}": v for k, v in info["route_train"].items()})
        row["route_teachers_used"] = float(sum(v > 0.02 for v in usage.values()))
        if m is not None:
            row.update(mask_stats(self.trio(), self.plan, m, self.dev))
            row["s2_val_kl"] = self._s2_val.get("val/kl", math.nan)
        self.ctx.log({k: v for k, v in row.items() if isinstance(v, float)}, job=self.plan.key, method=method)
        return {"rows": [row], "route_train": info["route_train"]}

    def row(self, method: str, model: torch.nn.Module) -> dict[str, Any]:
        """The test row of `model` under `method`."""
        return result_row(self.plan, method, model, self.dev)
