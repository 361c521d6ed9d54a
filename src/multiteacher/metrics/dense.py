"""Dense-prediction metrics: depth, surface normals, semantic segmentation.

Inputs are torch tensors; results are Python floats (for ``results.json``). Conventions follow
Eigen et al. 2014 (depth: abs-rel, RMSE, δ < 1.25) and the NYUv2 normals protocol (Fouhey et al.;
angular error in degrees, mean / median / % under 11.25°). Semantic mIoU averages the IoU of the
classes that occur in the ground truth or the prediction (classes absent from both are not counted).
Tests compare against straightforward numpy loops.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "abs_rel",
    "angular_error_deg",
    "confusion_matrix",
    "delta_accuracy",
    "depth_metrics",
    "miou",
    "normal_metrics",
    "pixel_accuracy",
    "rmse",
    "semantic_metrics",
]


def _depth_valid(pred: Tensor, gt: Tensor, mask: Tensor | None, min_depth: float) -> Tensor:
    if pred.shape != gt.shape:
        raise ValueError(f"depth pred {tuple(pred.shape)} vs gt {tuple(gt.shape)}")
    v = torch.isfinite(gt) & (gt > min_depth) & torch.isfinite(pred)
    return v if mask is None else v & torch.broadcast_to(mask.to(torch.bool), gt.shape)


def abs_rel(pred: Tensor, gt: Tensor, mask: Tensor | None = None, min_depth: float = 1e-3) -> float:
    """Mean absolute relative error ``mean(|d̂ - d| / d)`` over valid pixels (gt > min_depth)."""
    v = _depth_valid(pred, gt, mask, min_depth)
    if not v.any():
        return float("nan")
    p, g = pred[v].double(), gt[v].double()
    return float(((p - g).abs() / g).mean())


def rmse(pred: Tensor, gt: Tensor, mask: Tensor | None = None, min_depth: float = 1e-3) -> float:
    """Root mean squared error ``sqrt(mean((d̂ - d)²))`` over valid pixels."""
    v = _depth_valid(pred, gt, mask, min_depth)
    if not v.any():
        return float("nan")
    p, g = pred[v].double(), gt[v].double()
    return float(((p - g) ** 2).mean().sqrt())


def delta_accuracy(
    pred: Tensor, gt: Tensor, mask: Tensor | None = None, threshold: float = 1.25, min_depth: float = 1e-3
) -> float:
    """Fraction of valid pixels with ``max(d̂/d, d/d̂) < threshold`` (δ₁ for 1.25). Non-positive
    predictions count as failures."""
    v = _depth_valid(pred, gt, mask, min_depth)
    if not v.any():
        return float("nan")
    p, g = pred[v].double(), gt[v].double()
    ok = p > 0
    ratio = torch.where(ok, torch.maximum(p / g, g / p.clamp(min=1e-300)), torch.full_like(p, math.inf))
    return float((ratio < threshold).double().mean())


def depth_metrics(pred: Tensor, gt: Tensor, mask: Tensor | None = None, min_depth: float = 1e-3) -> dict[str, float]:
    """``{"abs_rel", "rmse", "delta1"}`` over valid pixels (NaN when there are none)."""
    return {
        "abs_rel": abs_rel(pred, gt, mask, min_depth),
        "rmse": rmse(pred, gt, mask, min_depth),
        "delta1": delta_accuracy(pred, gt, mask, 1.25, min_depth),
    }


def angular_error_deg(pred: Tensor, gt: Tensor, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """Per-pixel angle in degrees between normal maps (vectors along ``dim``, normalised here)."""
    p = pred.double() / pred.double().norm(dim=dim, keepdim=True).clamp(min=eps)
    g = gt.double() / gt.double().norm(dim=dim, keepdim=True).clamp(min=eps)
    cos = (p * g).sum(dim).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


def normal_metrics(
    pred: Tensor,
    gt: Tensor,
    mask: Tensor | None = None,
    dim: int = 1,
    thresholds: tuple[float, ...] = (11.25,),
) -> dict[str, float]:
    """``{"mean_deg", "median_deg", "pct_<t>"}`` (percent of valid pixels under each threshold).

    Normals ``(B, 3, H, W)``; ``mask`` (B, H, W) marks valid pixels (pixels with a zero ground-truth
    normal are always invalid). Median is the true median (average of the two middle values).
    """
    err = angular_error_deg(pred, gt, dim)
    v = gt.double().norm(dim=dim) > 0
    if mask is not None:
        v = v & torch.broadcast_to(mask.to(torch.bool), v.shape)
    e = err[v]
    out: dict[str, float] = {}
    if e.numel() == 0:
        out["mean_deg"] = out["median_deg"] = float("nan")
        for t in thresholds:
            out[f"pct_{t:g}"] = float("nan")
        return out
    s = e.sort().values
    n = s.numel()
    out["mean_deg"] = float(e.mean())
    out["median_deg"] = float((s[(n - 1) // 2] + s[n // 2]) / 2)
    for t in thresholds:
        out[f"pct_{t:g}"] = float((e < t).double().mean() * 100.0)
    return out


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    """``cm[true, pred]`` counts (int64, ``(C, C)``) over pixels whose target is in ``[0, C)`` and
    not ``ignore_index``. Predictions must be class indices in ``[0, C)``."""
    if pred.shape != target.shape:
        raise ValueError(f"semantic pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long()
    keep = (t >= 0) & (t < num_classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    t, p = t[keep], p[keep]
    if p.numel() and (p.min() < 0 or p.max() >= num_classes):
        raise ValueError(f"predicted class indices must be in [0, {num_classes})")
    idx = t * num_classes + p
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def miou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> float:
    """Mean IoU ``TP / (TP + FP + FN)`` over classes present in target or prediction."""
    cm = confusion_matrix(pred, target, num_classes, ignore_index).double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    if not present.any():
        return float("nan")
    return float((tp[present] / union[present]).mean())


def pixel_accuracy(pred: Tensor, target: Tensor, ignore_index: int | None = 255) -> float:
    """Fraction of non-ignored pixels predicted correctly."""
    if pred.shape != target.shape:
        raise ValueError(f"semantic pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    n = int(keep.sum())
    return float("nan") if n == 0 else float((pred[keep] == target[keep]).sum()) / n


def semantic_metrics(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255
) -> dict[str, float]:
    """``{"miou", "pixel_acc"}``; ``pred`` may be labels ``(B, H, W)`` or logits ``(B, C, H, W)``."""
    if pred.ndim == target.ndim + 1:
        pred = pred.argmax(1)
    return {
        "miou": miou(pred, target, num_classes, ignore_index),
        "pixel_acc": pixel_accuracy(pred, target, ignore_index),
    }
