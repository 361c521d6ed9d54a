"""Classification metrics: accuracy and support-weighted F1 (as scikit-learn's ``average="weighted"``).

Inputs: predicted labels ``(N,)`` or logits ``(N, C)``, and targets ``(N,)`` (tensors, numpy arrays
or lists). Results are Python floats. Tests compare with scikit-learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["accuracy", "classification_metrics", "f1_per_class", "weighted_f1"]


def _labels(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred.detach().cpu() if hasattr(pred, "detach") else pred)
    t = np.asarray(target.detach().cpu() if hasattr(target, "detach") else target).reshape(-1)
    if p.ndim == 2 and p.shape[0] == t.shape[0] and p.shape[1] > 1:
        p = p.argmax(1)
    p = p.reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"{p.shape[0]} predictions for {t.shape[0]} targets")
    return p.astype(np.int64), t.astype(np.int64)


def accuracy(pred: Any, target: Any) -> float:
    """Fraction of samples whose predicted label equals the target.

    Args:
        pred: ``(N,)`` predicted labels or ``(N, C)`` logits / probabilities (argmax is taken).
        target: ``(N,)`` true labels (tensor, numpy array or list).

    Returns:
        A float in [0, 1]; NaN for no samples.

    Example:
        >>> accuracy([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], [0, 1, 1])
        0.6666666666666666
    """
    p, t = _labels(pred, target)
    return float("nan") if t.size == 0 else float((p == t).mean())


def f1_per_class(
    pred: Any, target: Any, classes: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """F1 of every class, ``2·TP / (2·TP + FP + FN)`` (0 when undefined), with its support.

    Args:
        pred: ``(N,)`` predicted labels or ``(N, C)`` logits.
        target: ``(N,)`` true labels.
        classes: the classes to report (default: those in `pred` or `target`).

    Returns:
        ``(classes, f1, support)``, three arrays of one entry per class; support counts `target`.

    Example:
        >>> cls, f1, support = f1_per_class([0, 1, 1], [0, 1, 0])
        >>> f1.round(3).tolist(), support.tolist()
        ([0.667, 0.667], [2.0, 1.0])
    """
    p, t = _labels(pred, target)
    cls = np.union1d(p, t) if classes is None else np.asarray(classes)
    tp = np.array([np.sum((p == c) & (t == c)) for c in cls], dtype=np.float64)
    fp = np.array([np.sum((p == c) & (t != c)) for c in cls], dtype=np.float64)
    fn = np.array([np.sum((p != c) & (t == c)) for c in cls], dtype=np.float64)
    den = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0)
    return cls, f1, tp + fn


def weighted_f1(pred: Any, target: Any) -> float:
    """F1 per class averaged with weights = class support in ``target`` (scikit-learn ``"weighted"``).

    Args:
        pred: ``(N,)`` predicted labels or ``(N, C)`` logits.
        target: ``(N,)`` true labels.

    Returns:
        A float in [0, 1]; NaN for no samples.

    Example:
        >>> round(weighted_f1([0, 1, 1], [0, 1, 0]), 3)
        0.667
    """
    _, f1, support = f1_per_class(pred, target)
    tot = support.sum()
    return float("nan") if tot == 0 else float((f1 * support).sum() / tot)


def classification_metrics(pred: Any, target: Any) -> dict[str, float]:
    """Accuracy and weighted F1 in one call.

    Args:
        pred: ``(N,)`` predicted labels or ``(N, C)`` logits.
        target: ``(N,)`` true labels.

    Returns:
        ``{"accuracy": float, "weighted_f1": float}``.

    Example:
        >>> classification_metrics([0, 1], [0, 1])
        {'accuracy': 1.0, 'weighted_f1': 1.0}
    """
    return {"accuracy": accuracy(pred, target), "weighted_f1": weighted_f1(pred, target)}
