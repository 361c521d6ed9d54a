"""MST-Distill for RGB-D semantic segmentation on the pybullet scene generator.

RGB student (U-Net), depth cross-modal teacher (U-Net on log-depth) and RGB-D multimodal teacher
(early-fusion U-Net on RGB + log-depth); MaskNets are 2-d (channel masks on U-Net feature maps);
the router reads the student's dense logits (conv + global pooling, as the official dense
GateNet), so each *image* is routed to one teacher; KD is per pixel (KL averaged over pixels).
Scenes of the train / val / test splits come from disjoint scene seeds (see data/scenes.py).
Metrics: pixel accuracy and mIoU over the 9 scene classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from pydantic import Field
from torch import nn

from multiteacher.config import StrictModel
from multiteacher.data.avdigits import Fold
from multiteacher.data.scenes import SCENE_CLASSES, ScenesConfig, render_scenes
from multiteacher.models.unet import UNet
from multiteacher.recipes.mst.models import Member
from multiteacher.runs import RunContext

SEG_METHODS = {"no_kd", "kd_mm", "kd_cross", "aver", "mst", "mst_s1", "mst_nomask", "mst_random", "mst_soft",
               "teachers"}
INPUTS = {"rgb": ("rgb",), "depth": ("depth",), "rgbd": ("rgb", "depth")}


class SegSection(StrictModel):
    """Scene rendering and segmentation networks (used when `task: scenes-seg`)."""

    resolution: int = Field(64, ge=16, le=256, description="Rendered frame size in pixels.")
    train_scenes: int = Field(40, ge=1, description="Training scenes.")
    val_scenes: int = Field(8, ge=1, description="Validation scenes (disjoint seeds).")
    test_scenes: int = Field(12, ge=1, description="Test scenes (disjoint seeds).")
    views_per_scene: int = Field(6, ge=1, description="Camera views rendered per scene.")
    scene_seed: int = Field(0, description="Seed of the scene generator.")
    workers: int = Field(2, ge=0, description="Rendering processes (0: in this process).")
    width: int = Field(16, gt=0, description="U-Net base width.")
    depth: int = Field(3, ge=2, description="U-Net levels.")
    mm_layers: list[str] = Field(default_factory=lambda: ["net.unet.down.2", "net.unet.up.0"], min_length=1,
                                 description="Module paths of the RGB-D teacher that get a MaskNet.")
    cross_layers: list[str] = Field(default_factory=lambda: ["net.unet.down.2", "net.unet.up.0"], min_length=1,
                                    description="Module paths of the depth teacher that get a MaskNet.")
    eval_batch_size: int = Field(32, gt=0, description="Batch size of evaluation passes.")


class SegNet(nn.Module):
    """A U-Net over the channel-concatenation of its inputs (early fusion for RGB-D)."""

    def __init__(self, in_ch: int, classes: int, width: int, depth: int) -> None:
        super().__init__()
        self.unet = UNet(in_ch, classes, width, depth)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat(xs, 1))


def builder(sec: SegSection, classes: int = len(SCENE_CLASSES)):
    """Model factory for the plan: "rgb" (student), "depth" (cross-modal), "rgbd" (multimodal)."""

    def build(kind: str) -> Member:
        in_ch = {"rgb": 3, "depth": 1, "rgbd": 4}[kind]
        return Member(SegNet(in_ch, classes, sec.width, sec.depth), INPUTS[kind])

    return build


@dataclass
class DenseSplit:
    """Frames as tensors: rgb (N,3,H,W), depth (N,1,H,W) (standardised log-depth), label (N,H,W)."""

    rgb: torch.Tensor
    depth: torch.Tensor
    label: torch.Tensor

    def __len__(self) -> int:
        return len(self.label)

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"rgb": self.rgb, "depth": self.depth}


def load_fold(sec: SegSection, ctx: RunContext) -> Fold:
    """Render (or reuse from the cache dir) the three splits; standardise with train statistics."""
    cfg = ScenesConfig(resolution=sec.resolution, train_scenes=sec.train_scenes, val_scenes=sec.val_scenes,
                       test_scenes=sec.test_scenes, views_per_scene=sec.views_per_scene, seed=sec.scene_seed,
                       workers=sec.workers)
    raw = {s: render_scenes(cfg, ctx.cache_dir, s, progress=False) for s in ("train", "val", "test")}
    rgb = {s: np.asarray(a.rgb, np.float32).transpose(0, 3, 1, 2) / 255.0 for s, a in raw.items()}
    dep = {s: np.log(np.clip(np.asarray(a.depth, np.float32), 0.05, None))[:, None] for s, a in raw.items()}
    mu_r, sd_r = rgb["train"].mean((0, 2, 3), keepdims=True), rgb["train"].std((0, 2, 3), keepdims=True) + 1e-6
    mu_d, sd_d = float(dep["train"].mean()), float(dep["train"].std()) + 1e-6
    splits = {s: DenseSplit(torch.from_numpy((rgb[s] - mu_r) / sd_r).float(),
                            torch.from_numpy((dep[s] - mu_d) / sd_d).float(),
                            torch.from_numpy(np.asarray(raw[s].semantic, np.int64)))
              for s in raw}
    info: dict[str, Any] = {"frames_train": len(splits["train"]), "frames_val": len(splits["val"]),
                            "frames_test": len(splits["test"])}
    return Fold("scenes", splits["train"], splits["val"], splits["test"], info)  # type: ignore[arg-type]
