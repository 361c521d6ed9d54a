"""Splits as training data and fixed-order evaluation batches; predictions and test scores.

A split (`avdigits.Split`, or the scene task's `DenseSplit`) holds one tensor per modality and the
labels; models take a batch dict ``{modality: tensor, ..., "label": tensor}``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from multiteacher.metrics.classify import accuracy, weighted_f1
from multiteacher.metrics.dense import miou, pixel_accuracy

BatchT = dict[str, torch.Tensor]


class SplitDataset(Dataset[BatchT]):
    """A Split as a map-style dataset of dicts (default collate stacks them)."""

    def __init__(self, split: Any) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> BatchT:
        return {**{k: v[i] for k, v in self.split.inputs().items()}, "label": self.split.label[i]}


def batches(split: Any, device: torch.device, bs: int = 500) -> Iterator[BatchT]:
    """Fixed-order evaluation batches on `device`."""
    inputs = split.inputs()
    for i in range(0, len(split), bs):
        yield {**{k: v[i:i + bs].to(device) for k, v in inputs.items()}, "label": split.label[i:i + bs].to(device)}


@torch.no_grad()
def predict(
    fn: Callable[[BatchT], torch.Tensor], split: Any, device: torch.device, bs: int = 500
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


def val_scores(fn: Callable[[BatchT], torch.Tensor], split: Any, device: torch.device, bs: int) -> dict[str, float]:
    """`scores` of `fn` on a validation split, keyed ``val/<name>`` (what fit's `evaluate` returns)."""
    return {f"val/{k}": v for k, v in scores(predict(fn, split, device, bs), split.label).items()}


def result_row(plan: Any, method: str, model: torch.nn.Module, dev: torch.device) -> dict[str, Any]:
    """A results row: `model`'s test scores (no loss) with method, direction and fold."""
    model.eval()
    sc = scores(predict(model, plan.fold.test, dev, plan.eval_bs), plan.fold.test.label)
    return {"method": method, "direction": f"{plan.cross}->{plan.student}", "fold": plan.fold.test_speaker,
            **{k: v for k, v in sc.items() if k != "loss"}}
