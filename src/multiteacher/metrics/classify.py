"""Classification metrics: accuracy and support-weighted F1 (as scikit-learn's ``average="weighted"``).

Inputs: predicted labels ``(N,)`` or logits ``(N, C)``, and targets ``(N,)`` (tensors, numpy arrays
or lists). Results are Python floats. Tests compare with scikit-learn.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "classification_metrics", "f1_per_class", "weighted_f1"]


def _labels(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred)
    t = np.asarray(target.detach().cpu() if hasattr(target, "detach") else target).reshape(-1)
    if p.ndim == 2 and p.shape[0] == t.shape[0] and p.shape[1] > 1:
        p = p.argmax(1)
    p = p.reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"{p.shape[0]} predictions for {t.shape[0]} targets")
    return p.astype(np.int64), t.astype(np.int64)


def accuracy(pred, target) -> float:
    """Fraction of samples whose predicted label equals the target (NaN for no samples)."""
    p, t = _labels(pred, target)
    return float("nan") if t.size == 0 else float((p == t).mean())


def f1_per_class(pred, target, classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class ``(classes, f1, support)``; F1 = 2·TP / (2·TP + FP + FN), 0 when undefined."""
    p, t = _labels(pred, target)
    cls = np.union1d(p, t) if classes is None else np.asarray(classes)
    tp = np.array([np.sum((p == c) & (t == c)) for c in cls], dtype=np.float64)
    fp = np.array([np.sum((p == c) & (t != c)) for c in cls], dtype=np.float64)
    fn = np.array([np.sum((p != c) & (t == c)) for c in cls], dtype=np.float64)
    den = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0)
    return cls, f1, tp + fn


def weighted_f1(pred, target) -> float:
    """F1 per class averaged with weights = class support in ``target`` (scikit-learn ``"weighted"``)."""
    _, f1, support = f1_per_class(pred, target)
    tot = support.sum()
    return float("nan") if tot == 0 else float((f1 * support).sum() / tot)


def classification_metrics(pred, target) -> dict[str, float]:
    """``{"accuracy", "weighted_f1"}``."""
    return {"accuracy": accuracy(pred, target), "weighted_f1": weighted_f1(pred, target)}
