"""The plan of one MST job: what one (fold, student modality) needs from the config, in plain values.

`Plan` also owns what every stage derives from those values the same way: the steps per epoch,
the `FitConfig` of a stage that runs for some epochs, and fresh models whose initialisation
depends only on (seed, fold, student modality, role), so that a method's result does not depend
on which other methods ran before it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from multiteacher.data.avdigits import Fold, stable_seed
from multiteacher.engine.loop import FitConfig
from multiteacher.recipes.mst.models import Member, build, other


@dataclass
class Plan:
    """What one (fold, student modality) job needs from the config, in plain values.

    Args:
        student: the student modality ("image", "audio"; "rgb" for scene segmentation).
        fold: the data.
        fit: optimiser and batch size (steps and validation period are set per stage).
        (the rest): the config's net, MST and baseline settings, named as there.

    Returns:
        A plan (see `multiteacher.recipes.mst.make_plan`).

    Example:
        >>> plan = make_plan(cfg, fold, "image")  # doctest: +SKIP
        >>> plan.key, plan.cross, plan.student_epochs  # doctest: +SKIP
        ('george-image', 'audio', 30)
    """

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
        """``<test speaker>-<student modality>``: the prefix of this job's fit names."""
        return f"{self.fold.test_speaker}-{self.student}"

    @property
    def student_epochs(self) -> int:
        """Student epochs of MST (stage 1 + stage 3): what every baseline student gets."""
        return self.epochs_s1 + self.epochs_s3

    def steps_per_epoch(self) -> int:
        """Optimiser steps in one pass over the training split."""
        n = len(self.fold.train)
        return max(1, n // self.fit.batch_size if self.fit.drop_last else math.ceil(n / self.fit.batch_size))

    def fit_cfg(self, epochs: int, monitor: str = "val/loss", mode: str = "min") -> FitConfig:
        """The job's FitConfig for `epochs` epochs, validating once per epoch."""
        spe = self.steps_per_epoch()
        return self.fit.model_copy(update={"max_steps": max(1, epochs * spe), "val_every": spe,
                                           "monitor": monitor, "mode": mode})

    def new(self, kind: str, role: str) -> Member:
        """A fresh model; the init depends on (seed, fold, student modality, role) only."""
        torch.manual_seed(stable_seed("init", self.seed, self.key, role) % 2**63)
        if self.builder is not None:
            return self.builder(kind)
        return build(kind, self.width, self.embed, self.dropout)
