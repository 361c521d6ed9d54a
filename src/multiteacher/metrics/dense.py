"""Dense-prediction metrics: depth, surface normals, semantic segmentation — functional and accumulating.

Two forms of each, torchmetrics-style, built on the same sufficient statistics:

- accumulators (`DepthMetrics`, `NormalMetrics`, `SemanticMetrics`, all `DenseMetric`s):
  `update(pred, target, mask)` per chunk of frames adds float64 sums, integer counts and a
  confusion matrix; `compute()` reduces them; `merge(other)` adds another accumulator's statistics
  (workers, DDP ranks). Streaming over chunks gives the whole-array result (semantic ones exactly,
  the others up to float64 summation order) in memory that does not grow with the frames.
- functions (`abs_rel`, `rmse`, `delta_accuracy`, `depth_metrics`, `angular_error_deg`,
  `normal_metrics`, `confusion_matrix`, `miou`, `pixel_accuracy`, `semantic_metrics`): one call on
  whole arrays, computed through the same statistics.

Inputs are torch tensors; results are Python floats (for ``results.json``). Conventions follow
Eigen et al. 2014 (depth: abs-rel, RMSE, δ < 1.25; also MAE) and the NYUv2 normals protocol (Fouhey
et al.; angular error in degrees, mean / median / % under 11.25°). Semantic mIoU averages the IoU of
the classes that occur in the ground truth or the prediction (classes absent from both are not
counted). Tests compare against straightforward numpy loops and hand-computed values.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "DenseMetric",
    "DepthMetrics",
    "NormalMetrics",
    "SemanticMetrics",
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

_NAN = float("nan")


def _div(a: float, n: int) -> float:
    return a / n if n else _NAN


class DenseMetric:
    """Base of the accumulating dense metrics: `update` per chunk, `compute` at the end.

    Subclasses keep their sufficient statistics in `self.stats` (a dict of Python floats / ints /
    tensors that add up), so `merge` and `reset` are generic.

    Example:
        >>> m = DepthMetrics()
        >>> m.update(torch.tensor([2.0]), torch.tensor([1.0])).update(torch.tensor([1.0]), torch.tensor([1.0]))
        DepthMetrics(n=2)
        >>> m.compute()["abs_rel"]
        0.5
    """

    stats: dict[str, Any]

    def __init__(self) -> None:
        self.reset()

    def _empty(self) -> dict[str, Any]:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget everything accumulated.

        Returns:
            None.

        Example:
            >>> m = DepthMetrics().update(torch.ones(2), torch.ones(2)); m.reset(); m.stats["n"]
            0
        """
        self.stats = self._empty()

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> DenseMetric:
        """Add one chunk's sufficient statistics.

        Args:
            pred: predictions of the chunk.
            target: ground truth of the chunk.
            mask: optional bool mask of the pixels to count.

        Returns:
            self (so calls chain).

        Example:
            >>> DepthMetrics().update(torch.ones(3), torch.ones(3)).stats["n"]
            3
        """
        for k, v in self._stats(pred, target, mask).items():
            self.stats[k] = self.stats[k] + v
        return self

    def _stats(self, pred: Tensor, target: Tensor, mask: Tensor | None) -> dict[str, Any]:
        raise NotImplementedError

    def merge(self, other: DenseMetric) -> DenseMetric:
        """Add another accumulator's statistics (same kind and settings), e.g. from another worker.

        Args:
            other: an accumulator of the same class.

        Returns:
            self.

        Example:
            >>> a = DepthMetrics().update(torch.ones(1), torch.ones(1))
            >>> a.merge(DepthMetrics().update(torch.ones(1), torch.ones(1))).stats["n"]
            2
        """
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for k, v in other.stats.items():
            self.stats[k] = self.stats[k] + v
        return self

    def compute(self) -> dict[str, float]:
        """The metrics over everything accumulated (NaN where nothing valid was seen).

        Returns:
            Metric name -> value.

        Example:
            >>> DepthMetrics().compute()["rmse"]
            nan
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.stats.get('n', 0)})"


# ------------------------------------------------------------------------------------------- depth


def _depth_valid(pred: Tensor, gt: Tensor, mask: Tensor | None, min_depth: float) -> Tensor:
    if pred.shape != gt.shape:
        raise ValueError(f"depth pred {tuple(pred.shape)} vs gt {tuple(gt.shape)}")
    v = torch.isfinite(gt) & (gt > min_depth) & torch.isfinite(pred)
    return v if mask is None else v & torch.broadcast_to(mask.to(torch.bool), gt.shape)


class DepthMetrics(DenseMetric):
    """Depth (or any positive-ish scalar map) errors: abs-rel, RMSE, δ < `delta`, MAE — accumulated.

    A pixel counts when its ground truth is finite and > `min_depth`, its prediction is finite
    and the mask (if any) keeps it. Statistics: valid count, float64 sums of ``|d̂-d|/d``,
    ``(d̂-d)²`` and ``|d̂-d|``, and the count under the δ threshold.

    Args:
        min_depth: ground truth at or below this is invalid (use e.g. -1.0 for heights above a floor).
        delta: the δ-accuracy threshold.

    Example:
        >>> m = DepthMetrics()
        >>> m.update(torch.tensor([[1.0, 4.0]]), torch.tensor([[2.0, 4.0]])).compute()["abs_rel"]
        0.25
    """

    def __init__(self, min_depth: float = 1e-3, delta: float = 1.25) -> None:
        self.min_depth, self.delta = min_depth, delta
        super().__init__()

    def _empty(self) -> dict[str, Any]:
        return {"n": 0, "rel": 0.0, "sq": 0.0, "abs": 0.0, "delta_ok": 0}

    def _stats(self, pred: Tensor, target: Tensor, mask: Tensor | None) -> dict[str, Any]:
        v = _depth_valid(pred, target, mask, self.min_depth)
        p, g = pred[v].double(), target[v].double()
        d = p - g
        ok = p > 0  # non-positive predictions fail δ
        ratio = torch.where(ok, torch.maximum(p / g, g / p.clamp(min=1e-300)), torch.full_like(p, math.inf))
        return {"n": int(v.sum()), "rel": float((d.abs() / g).sum()), "sq": float((d**2).sum()),
                "abs": float(d.abs().sum()), "delta_ok": int((ratio < self.delta).sum())}

    def compute(self) -> dict[str, float]:
        """``{"abs_rel", "rmse", "delta1", "mae"}`` over the valid pixels seen (NaN when none).

        Returns:
            Metric name -> value (``delta1`` is the share under `delta`).

        Example:
            >>> DepthMetrics().update(torch.tensor([3.0]), torch.tensor([1.0])).compute()["rmse"]
            2.0
        """
        s = self.stats
        return {"abs_rel": _div(s["rel"], s["n"]), "rmse": math.sqrt(s["sq"] / s["n"]) if s["n"] else _NAN,
                "delta1": _div(s["delta_ok"], s["n"]), "mae": _div(s["abs"], s["n"])}


def abs_rel(pred: Tensor, gt: Tensor, mask: Tensor | None = None, min_depth: float = 1e-3) -> float:
    """Mean absolute relative error ``mean(|d̂ - d| / d)`` over valid pixels (gt > min_depth).

    Args:
        pred: predicted depth.
        gt: ground-truth depth (same shape).
        mask: optional bool mask (broadcast to `gt`).
        min_depth: ground truth at or below this is invalid.

    Returns:
        The error (NaN without valid pixels).

    Example:
        >>> abs_rel(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0]))
        0.5
    """
    return DepthMetrics(min_depth).update(pred, gt, mask).compute()["abs_rel"]


def rmse(pred: Tensor, gt: Tensor, mask: Tensor | None = None, min_depth: float = 1e-3) -> float:
    """Root mean squared error ``sqrt(mean((d̂ - d)²))`` over valid pixels.

    Args:
        pred: predicted depth.
        gt: ground-truth depth (same shape).
        mask: optional bool mask.
        min_depth: ground truth at or below this is invalid.

    Returns:
        The error (NaN without valid pixels).

    Example:
        >>> rmse(torch.tensor([1.0, 5.0]), torch.tensor([2.0, 4.0]))
        1.0
    """
    return DepthMetrics(min_depth).update(pred, gt, mask).compute()["rmse"]


def delta_accuracy(
    pred: Tensor, gt: Tensor, mask: Tensor | None = None, threshold: float = 1.25, min_depth: float = 1e-3
) -> float:
    """Fraction of valid pixels with ``max(d̂/d, d/d̂) < threshold`` (δ₁ for 1.25).

    Non-positive predictions count as failures.

    Args:
        pred: predicted depth.
        gt: ground-truth depth.
        mask: optional bool mask.
        threshold: the ratio bound.
        min_depth: ground truth at or below this is invalid.

    Returns:
        The share in [0, 1] (NaN without valid pixels).

    Example:
        >>> delta_accuracy(torch.tensor([1.0, 2.0]), torch.tensor([1.1, 1.0]))
        0.5
    """
    return DepthMetrics(min_depth, threshold).update(pred, gt, mask).compute()["delta1"]


def depth_metrics(pred: Tensor, gt: Tensor, mask: Tensor | None = None, min_depth: float = 1e-3) -> dict[str, float]:
    """``{"abs_rel", "rmse", "delta1"}`` over valid pixels (NaN when there are none).

    Args:
        pred: predicted depth.
        gt: ground-truth depth.
        mask: optional bool mask.
        min_depth: ground truth at or below this is invalid.

    Returns:
        Metric name -> value.

    Example:
        >>> depth_metrics(torch.tensor([2.0]), torch.tensor([2.0]))
        {'abs_rel': 0.0, 'rmse': 0.0, 'delta1': 1.0}
    """
    out = DepthMetrics(min_depth).update(pred, gt, mask).compute()
    return {k: out[k] for k in ("abs_rel", "rmse", "delta1")}


# ----------------------------------------------------------------------------------------- normals


def angular_error_deg(pred: Tensor, gt: Tensor, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """Per-pixel angle in degrees between normal maps (vectors along `dim`, normalised here).

    Args:
        pred: predicted normals, e.g. ``(B, 3, H, W)``.
        gt: ground-truth normals (same shape).
        dim: the vector dimension.
        eps: floor of the norms.

    Returns:
        A float64 tensor of angles (`dim` removed).

    Example:
        >>> angular_error_deg(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([[0.0, 1.0, 0.0]])).tolist()
        [90.0]
    """
    p = pred.double() / pred.double().norm(dim=dim, keepdim=True).clamp(min=eps)
    g = gt.double() / gt.double().norm(dim=dim, keepdim=True).clamp(min=eps)
    cos = (p * g).sum(dim).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))


class NormalMetrics(DenseMetric):
    """Surface-normal angular errors: mean, % under thresholds, optionally the median — accumulated.

    A pixel counts when its ground-truth normal is non-zero and the mask (if any) keeps it.
    Statistics: valid count, float64 sum of angles, counts under each threshold; with
    `median=True` also every valid angle (memory grows with the pixels: the median has no
    fixed-size sufficient statistic).

    Args:
        thresholds: angles (degrees) for the ``pct_<t>`` shares.
        median: also keep the angles to report ``median_deg``.
        dim: the vector dimension of the inputs.

    Example:
        >>> gt = torch.tensor([[[[0.0, 0.0]], [[0.0, 0.0]], [[1.0, 1.0]]]])   # (1, 3, 1, 2): both up
        >>> pred = torch.tensor([[[[0.0, 1.0]], [[0.0, 0.0]], [[1.0, 0.0]]]])  # up, sideways
        >>> NormalMetrics().update(pred, gt).compute()
        {'mean_deg': 45.0, 'pct_11.25': 50.0}
    """

    def __init__(self, thresholds: tuple[float, ...] = (11.25,), median: bool = False, dim: int = 1) -> None:
        self.thresholds, self.median, self.dim = tuple(thresholds), median, dim
        super().__init__()

    def _empty(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n": 0, "deg": 0.0, **{f"under_{t:g}": 0 for t in self.thresholds}}
        if self.median:
            out["errors"] = torch.zeros(0, dtype=torch.float64)
        return out

    def update(self, pred: Tensor, target: Tensor, mask: Tensor | None = None) -> NormalMetrics:
        """Add one chunk (errors are concatenated, the rest summed); see `DenseMetric.update`.

        Args:
            pred: predicted normals ``(B, 3, H, W)``.
            target: ground-truth normals.
            mask: optional ``(B, H, W)`` bool mask.

        Returns:
            self.

        Example:
            >>> NormalMetrics().update(torch.ones(1, 3, 2, 2), torch.ones(1, 3, 2, 2)).stats["n"]
            4
        """
        for k, v in self._stats(pred, target, mask).items():
            self.stats[k] = torch.cat([self.stats[k], v]) if k == "errors" else self.stats[k] + v
        return self

    def merge(self, other: DenseMetric) -> NormalMetrics:
        """Add another `NormalMetrics`' statistics (angles concatenated).

        Args:
            other: a `NormalMetrics` with the same settings.

        Returns:
            self.

        Example:
            >>> a = NormalMetrics().update(torch.ones(1, 3, 1, 1), torch.ones(1, 3, 1, 1))
            >>> a.merge(a).stats["n"]
            2
        """
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into NormalMetrics")
        for k, v in dict(other.stats).items():
            self.stats[k] = torch.cat([self.stats[k], v]) if k == "errors" else self.stats[k] + v
        return self

    def _stats(self, pred: Tensor, target: Tensor, mask: Tensor | None) -> dict[str, Any]:
        err = angular_error_deg(pred, target, self.dim)
        v = target.double().norm(dim=self.dim) > 0
        if mask is not None:
            v = v & torch.broadcast_to(mask.to(torch.bool), v.shape)
        e = err[v]
        out: dict[str, Any] = {"n": int(v.sum()), "deg": float(e.sum()),
                               **{f"under_{t:g}": int((e < t).sum()) for t in self.thresholds}}
        if self.median:
            out["errors"] = e
        return out

    def compute(self) -> dict[str, float]:
        """``{"mean_deg", ["median_deg",] "pct_<t>"...}`` in degrees / percent (NaN when nothing valid).

        Returns:
            Metric name -> value; the median is the average of the two middle angles.

        Example:
            >>> NormalMetrics(median=True).compute()["median_deg"]
            nan
        """
        s = self.stats
        out = {"mean_deg": _div(s["deg"], s["n"])}
        if self.median:
            e = s["errors"].sort().values
            n = e.numel()
            out["median_deg"] = float((e[(n - 1) // 2] + e[n // 2]) / 2) if n else _NAN
        for t in self.thresholds:
            out[f"pct_{t:g}"] = _div(s[f"under_{t:g}"] * 100.0, s["n"])
        return out


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

    Args:
        pred: predicted normals.
        gt: ground-truth normals.
        mask: optional bool mask.
        dim: the vector dimension.
        thresholds: angles for the ``pct_<t>`` shares.

    Returns:
        Metric name -> value (NaN without valid pixels).

    Example:
        >>> normal_metrics(torch.ones(1, 3, 1, 1), torch.ones(1, 3, 1, 1))["mean_deg"]
        0.0
    """
    return NormalMetrics(thresholds, median=True, dim=dim).update(pred, gt, mask).compute()


# ---------------------------------------------------------------------------------------- semantic


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    """``cm[true, pred]`` counts over pixels whose target is in ``[0, C)`` and not `ignore_index`.

    Args:
        pred: class indices in ``[0, C)``.
        target: class indices (same shape).
        num_classes: C.
        ignore_index: target value to skip (None: none).

    Returns:
        An int64 ``(C, C)`` tensor.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 255]), 2).tolist()
        [[1, 1], [0, 0]]
    """
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


def _miou_from_cm(cm: Tensor) -> float:
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return float((tp[present] / union[present]).mean()) if present.any() else _NAN


def _pixel_hits(pred: Tensor, target: Tensor, ignore_index: int | None) -> tuple[int, int]:
    if pred.shape != target.shape:
        raise ValueError(f"semantic pred {tuple(pred.shape)} vs target {tuple(target.shape)}")
    keep = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    return int((pred[keep] == target[keep]).sum()), int(keep.sum())


class SemanticMetrics(DenseMetric):
    """Semantic segmentation: mIoU and pixel accuracy — accumulated as a confusion matrix and hit counts.

    Integer statistics: streaming equals the whole-array result exactly.

    Args:
        num_classes: C (predictions must be in ``[0, C)``).
        ignore_index: target value that is not counted (None: none).

    Example:
        >>> m = SemanticMetrics(2)
        >>> m.update(torch.tensor([0, 1]), torch.tensor([0, 0])).update(torch.tensor([1]), torch.tensor([1]))
        SemanticMetrics(n=3)
        >>> m.compute()
        {'miou': 0.5, 'pixel_acc': 0.6666666666666666}
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        super().__init__()

    def _empty(self) -> dict[str, Any]:
        return {"cm": torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64), "hit": 0, "n": 0}

    def _stats(self, pred: Tensor, target: Tensor, mask: Tensor | None) -> dict[str, Any]:
        """Pred may be labels or logits ``(B, C, H, W)``; `mask` False pixels count as ignored."""
        if pred.ndim == target.ndim + 1:
            pred = pred.argmax(1)
        if mask is not None:
            keep = torch.broadcast_to(mask.to(torch.bool), target.shape)
            pred, target = pred[keep], target[keep]
        hit, n = _pixel_hits(pred, target, self.ignore_index)
        return {"cm": confusion_matrix(pred, target, self.num_classes, self.ignore_index), "hit": hit, "n": n}

    def compute(self) -> dict[str, float]:
        """``{"miou", "pixel_acc"}`` (NaN when nothing was counted).

        Returns:
            Metric name -> value.

        Example:
            >>> SemanticMetrics(3).compute()["miou"]
            nan
        """
        return {"miou": _miou_from_cm(self.stats["cm"]), "pixel_acc": _div(self.stats["hit"], self.stats["n"])}


def miou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> float:
    """Mean IoU ``TP / (TP + FP + FN)`` over classes present in target or prediction.

    Args:
        pred: class indices in ``[0, C)``.
        target: class indices.
        num_classes: C.
        ignore_index: target value to skip.

    Returns:
        The mean IoU (NaN when no class is present).

    Example:
        >>> miou(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2)
        0.5
    """
    return _miou_from_cm(confusion_matrix(pred, target, num_classes, ignore_index))


def pixel_accuracy(pred: Tensor, target: Tensor, ignore_index: int | None = 255) -> float:
    """Fraction of non-ignored pixels predicted correctly.

    Args:
        pred: class indices.
        target: class indices (same shape).
        ignore_index: target value to skip.

    Returns:
        The share in [0, 1] (NaN when every pixel is ignored).

    Example:
        >>> pixel_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 255]))
        0.5
    """
    hit, n = _pixel_hits(pred, target, ignore_index)
    return _div(hit, n)


def semantic_metrics(
    pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255
) -> dict[str, float]:
    """``{"miou", "pixel_acc"}``; `pred` may be labels ``(B, H, W)`` or logits ``(B, C, H, W)``.

    Args:
        pred: labels or logits.
        target: class indices.
        num_classes: C.
        ignore_index: target value to skip.

    Returns:
        Metric name -> value.

    Example:
        >>> semantic_metrics(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]), 2)
        {'miou': 1.0, 'pixel_acc': 1.0}
    """
    return SemanticMetrics(num_classes, ignore_index).update(pred, target).compute()
