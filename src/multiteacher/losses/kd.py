"""Knowledge-distillation losses for classifiers and dense (per-pixel) logits.

Pure functions first, thin ``nn.Module`` wrappers at the end. Logits have the class dimension at
dim 1: ``(B, C)`` or dense ``(B, C, H, W)`` (any trailing spatial dims). All losses are computed in
fp32 (inputs may be bf16/fp16; gradients flow back in the input dtype) and teachers are detached.

References: Hinton et al. 2015 (KD with temperature, T² scaling); Romero et al. 2015 (FitNets);
Zhao et al. CVPR 2022 (DKD: decoupled knowledge distillation). Tests check them against numpy
re-implementations of the published formulas and the DKD identity KD = TCKD + (1 - p_t) NCKD.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multiteacher.errors import ConfigError

__all__ = [
    "DKDLoss",
    "FitNetLoss",
    "KDLoss",
    "MultiTeacherKDLoss",
    "dkd",
    "fitnet",
    "kd_kl",
    "multi_teacher_kd",
    "mutual_kd",
]


def _valid_positions(
    logits: Tensor, target: Tensor | None, ignore_index: int | None, mask: Tensor | None
) -> Tensor | None:
    """Bool (B, *spatial) of positions that count, or None for all."""
    v = None
    if ignore_index is not None:
        if target is None:
            raise ConfigError("ignore_index needs target= (the hard labels that mark ignored positions)")
        v = target != ignore_index
    if mask is not None:
        m = mask.to(torch.bool)
        v = m if v is None else (v & m)
    if v is not None and v.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"mask/target shape {tuple(v.shape)} must be (B, *spatial) of logits {tuple(logits.shape)}")
    return v


def _reduce(per_pos: Tensor, valid: Tensor | None, reduction: str) -> Tensor:
    """Mean over positions (B · H · W, or the valid ones), sum, or none."""
    if valid is not None:
        per_pos = torch.where(valid, per_pos, torch.zeros_like(per_pos))
    if reduction == "none":
        return per_pos
    if reduction == "sum":
        return per_pos.sum()
    if reduction == "mean":
        if valid is None:
            return per_pos.sum() / max(per_pos.numel(), 1)
        return per_pos.sum() / valid.sum().clamp(min=1)
    raise ConfigError(f"unknown reduction {reduction!r}; use 'mean', 'sum' or 'none'")


def _check_T(temperature: float) -> None:
    if temperature <= 0:
        raise ConfigError(f"distillation temperature must be > 0, got {temperature}")


def _kl_from_logp(log_p_t: Tensor, log_p_s: Tensor) -> Tensor:
    """Σ_c p_t (log p_t - log p_s) over dim 1, with 0·log 0 = 0."""
    p_t = log_p_t.exp()
    pos = p_t > 0
    diff = torch.where(pos, log_p_t - log_p_s, torch.zeros_like(p_t))
    return torch.where(pos, p_t * diff, torch.zeros_like(p_t)).sum(1)


def kd_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    target: Tensor | None = None,
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Hinton KD: ``T² · KL(softmax(t/T) || softmax(s/T))``, summed over classes.

    The student matches the teacher's softened distribution; the teacher is detached. The T²
    factor keeps gradient magnitudes comparable across temperatures (Hinton et al. 2015).
    ``reduction="mean"`` averages over positions: for ``(B, C)`` that is PyTorch's ``batchmean``;
    for dense ``(B, C, H, W)`` it divides by ``B·H·W`` (the per-pixel KD of semantic segmentation),
    or by the number of valid positions when ``target``/``ignore_index`` or a ``mask`` excludes some.

    Args:
        student_logits: ``(B, C, ...)`` student logits.
        teacher_logits: ``(B, C, ...)`` teacher logits (same shape; detached).
        temperature: softening temperature ``T > 0``.
        target: ``(B, ...)`` hard labels; only used with ``ignore_index``.
        ignore_index: label value in ``target`` whose positions do not count.
        mask: ``(B, ...)`` bool, positions that count.
        reduction: ``"mean"`` (over counted positions), ``"sum"`` or ``"none"`` (``(B, ...)``).

    Returns:
        A scalar tensor (fp32), or per-position losses for ``reduction="none"``.

    Example:
        >>> s, t = torch.zeros(2, 3), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
        >>> round(kd_kl(s, t, temperature=1.0).item(), 4)  # KL(softmax(t) || uniform)
        0.1233
    """
    _check_T(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)} logits")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    per_pos = _kl_from_logp(log_p_t, log_p_s) * temperature**2
    return _reduce(per_pos, _valid_positions(student_logits, target, ignore_index, mask), reduction)


def mutual_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """KD between two networks trained together: :func:`kd_kl` without detaching the teacher.

    ``T² · KL(softmax(t/T) || softmax(s/T))``, summed over classes and averaged over positions
    (samples, and pixels for dense ``(B, C, H, W)`` logits). Unlike :func:`kd_kl`, the gradient
    reaches *both* logits, as in the co-training stage of MST-Distill's official code, where the
    teacher, the cross-modal teacher and the student learn from each other at once. Computed as
    ``F.kl_div(log_softmax(s/T), softmax(t/T))`` in fp32.

    Args:
        student_logits: ``(B, C, ...)`` logits of the network that is pulled towards the other.
        teacher_logits: ``(B, C, ...)`` logits it is pulled towards (not detached).
        temperature: softening temperature ``T > 0``.

    Returns:
        A scalar tensor with gradients for both inputs.

    Example:
        >>> s, t = torch.zeros(2, 3, requires_grad=True), torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
        >>> loss = mutual_kd(s, t, temperature=1.0)  # KL(softmax(t) || uniform), per row
        >>> round(loss.item(), 4)
        0.1233
    """
    _check_T(temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student {tuple(student_logits.shape)} vs teacher {tuple(teacher_logits.shape)} logits")
    T = temperature
    log_p_s = F.log_softmax(student_logits.float() / T, 1)
    kl = F.kl_div(log_p_s, F.softmax(teacher_logits.float() / T, 1), reduction="none").sum(1)
    return kl.mean() * T * T


def multi_teacher_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float = 4.0,
    weights: Tensor | None = None,
    select: Tensor | None = None,
    target: Tensor | None = None,
    ignore_index: int | None = None,
    mask: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """KD from K teachers at once, from their weighted mixture or from one chosen teacher per sample.

    Mixture (default): ``T² · KL(Σ_k w̃_k softmax(t_k/T) || softmax(s/T))`` with ``w̃`` the weights
    normalised to sum 1 (uniform if None: the average of the teachers' distributions, as AvER).
    Selection: ``select`` picks one teacher per sample (e.g. a router's argmax) and the loss is
    :func:`kd_kl` against it. Teacher axis second, as everywhere in the engine (`TeacherPool.predict`).

    Args:
        student_logits: ``(B, C, ...)`` student logits.
        teacher_logits: ``(B, K, C, ...)`` logits of K teachers (detached).
        temperature: softening temperature ``T > 0``.
        weights: ``(K,)`` or per-sample ``(B, K)`` non-negative teacher weights (e.g. router probs).
        select: ``(B,)`` long, the teacher index per sample (exclusive with ``weights``).
        target: ``(B, ...)`` hard labels; only used with ``ignore_index``.
        ignore_index: label value in ``target`` whose positions do not count.
        mask: ``(B, ...)`` bool, positions that count.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``, as in :func:`kd_kl`.

    Returns:
        A scalar tensor (fp32), or per-position losses for ``reduction="none"``.

    Example:
        >>> s = torch.zeros(2, 3)
        >>> t = torch.stack([torch.eye(3)[:2] * 4, -torch.eye(3)[:2] * 4], 1)  # (B=2, K=2, C=3)
        >>> mix = multi_teacher_kd(s, t, 1.0, weights=torch.tensor([1.0, 0.0]))  # all weight on teacher 0
        >>> bool(torch.isclose(mix, kd_kl(s, t[:, 0], 1.0)))
        True
        >>> bool(torch.isclose(multi_teacher_kd(s, t, 1.0, select=torch.tensor([1, 1])), kd_kl(s, t[:, 1], 1.0)))
        True
    """
    _check_T(temperature)
    if teacher_logits.ndim != student_logits.ndim + 1:
        raise ValueError(f"teacher logits must be (B, K, C, ...); got {tuple(teacher_logits.shape)}")
    B, K = teacher_logits.shape[:2]
    t = teacher_logits.detach().float()
    if select is not None:
        if weights is not None:
            raise ConfigError("multi_teacher_kd: give weights= or select=, not both")
        sel = torch.as_tensor(select, device=t.device).long().reshape(B)
        if (sel < 0).any() or (sel >= K).any():
            raise ValueError(f"select indices must be in [0, {K})")
        return kd_kl(
            student_logits,
            t[torch.arange(B, device=t.device), sel],
            temperature,
            target,
            ignore_index,
            mask,
            reduction,
        )
    if weights is None:
        w = torch.full((B, K), 1.0 / K, device=t.device)
    else:
        w = torch.as_tensor(weights, device=t.device).float()
        w = w.expand(B, K) if w.ndim == 1 else w
        if (w < 0).any():
            raise ConfigError("multi_teacher_kd: teacher weights must be non-negative")
        w = w / w.sum(1, keepdim=True).clamp(min=1e-12)
    w = w.reshape((B, K) + (1,) * (t.ndim - 2))
    log_p_k = F.log_softmax(t / temperature, dim=2)
    log_mix = torch.logsumexp(log_p_k + w.clamp(min=1e-30).log().masked_fill(w == 0, -1e30), dim=1)
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    per_pos = _kl_from_logp(log_mix, log_p_s) * temperature**2
    return _reduce(per_pos, _valid_positions(student_logits, target, ignore_index, mask), reduction)


def fitnet(student_feat: Tensor, teacher_feat: Tensor, mask: Tensor | None = None, reduction: str = "mean") -> Tensor:
    """FitNet hint loss: mean squared error ``mean((f_s - f_t)²)`` over all elements.

    The student's intermediate features imitate the teacher's (Romero et al. 2015). Romero et al.
    use ``½‖·‖²``; we use the mean (as torchdistill's ``FitNetLoss`` default), which only rescales
    the loss weight. The teacher features are detached.

    Args:
        student_feat: ``(B, D)`` or ``(B, C, H, W)`` features, already projected to the teacher's
            shape (see :class:`FitNetLoss`).
        teacher_feat: teacher features of the same shape.
        mask: ``(B, *spatial)`` bool; restricts the mean to valid positions (all channels count).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        A scalar tensor (fp32), or per-element squared errors for ``reduction="none"``.

    Example:
        >>> fitnet(torch.zeros(2, 4), torch.ones(2, 4)).item()
        1.0
    """
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(
            f"FitNet: student features {tuple(student_feat.shape)} vs teacher {tuple(teacher_feat.shape)};"
            " add a projector"
        )
    d2 = (student_feat.float() - teacher_feat.detach().float()) ** 2
    if mask is None:
        return _reduce(d2, None, reduction)
    m = mask.to(torch.bool).unsqueeze(1).expand_as(d2) if d2.ndim > 2 else mask.to(torch.bool).expand_as(d2)
    return _reduce(d2, m, reduction)


def dkd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    return_parts: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Decoupled KD (Zhao et al., CVPR 2022): ``α · TCKD + β · NCKD``, both × T², batch-mean.

    Classic KD equals ``TCKD + (1 - p_t) · NCKD``; decoupling lets the non-target knowledge
    (NCKD) weigh more when the teacher is confident. TCKD = ``KL([p_t^T, 1 - p_t^T] || [p_t^S,
    1 - p_t^S])`` (binary target-vs-rest); NCKD = ``KL(p̂^T || p̂^S)`` over the non-target classes
    renormalised (``p̂_i = p_i / (1 - p_t)``). Log-space throughout, so it is finite when the
    target probability saturates.

    Args:
        student_logits: ``(B, C)`` student logits.
        teacher_logits: ``(B, C)`` teacher logits (detached).
        target: ``(B,)`` long, the true classes.
        alpha: weight of TCKD.
        beta: weight of NCKD.
        temperature: softening temperature ``T > 0``.
        return_parts: return the unweighted per-sample parts instead of the loss.

    Returns:
        A scalar tensor (fp32); with ``return_parts``, ``(tckd, nckd)``, each ``(B,)`` and × T².

    Example:
        >>> s, t, y = torch.zeros(2, 4), torch.eye(4)[:2] * 3, torch.tensor([0, 1])
        >>> tckd, nckd = dkd(s, t, y, temperature=1.0, return_parts=True)
        >>> float(nckd.sum())  # the teacher's non-target classes are uniform, like the student's
        0.0
    """
    _check_T(temperature)
    if student_logits.ndim != 2:
        raise ValueError(f"dkd expects (B, C) logits, got {tuple(student_logits.shape)}")
    if student_logits.shape[1] < 2:
        raise ValueError("dkd needs at least 2 classes")
    tgt = target.long().reshape(-1, 1)
    onehot = torch.zeros_like(student_logits, dtype=torch.bool).scatter_(1, tgt, True)

    def parts(z: Tensor) -> tuple[Tensor, Tensor]:
        z = z.float() / temperature
        lse = torch.logsumexp(z, 1)
        zt = z.gather(1, tgt).squeeze(1)
        z_other = z.masked_fill(onehot, -1e30)
        lse_other = torch.logsumexp(z_other, 1)
        log_pt, log_1mpt = zt - lse, lse_other - lse  # log p_t, log (1 - p_t)
        log_hat = F.log_softmax(z_other, 1)  # non-target distribution; target entry ~ -inf
        return torch.stack([log_pt, log_1mpt], 1), log_hat

    b_s, hat_s = parts(student_logits)
    b_t, hat_t = parts(teacher_logits.detach())
    tckd = _kl_from_logp(b_t, b_s) * temperature**2
    hat_t = hat_t.masked_fill(onehot, float("-inf"))  # exact zero prob for the target class
    nckd = _kl_from_logp(hat_t, hat_s) * temperature**2
    if return_parts:
        return tckd, nckd
    return alpha * tckd.mean() + beta * nckd.mean()


class KDLoss(nn.Module):
    """Module form of :func:`kd_kl` (fixed temperature and ignore index).

    Args:
        temperature: softening temperature ``T > 0``.
        ignore_index: label value whose positions do not count (pass ``target`` to ``forward``).

    Returns:
        A module; ``loss(student_logits, teacher_logits, target=None)`` returns a scalar tensor.

    Example:
        >>> KDLoss(temperature=2.0)(torch.zeros(2, 3), torch.zeros(2, 3)).item()
        0.0
    """

    def __init__(self, temperature: float = 4.0, ignore_index: int | None = None) -> None:
        super().__init__()
        _check_T(temperature)
        self.temperature, self.ignore_index = temperature, ignore_index

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor | None = None) -> Tensor:
        return kd_kl(student_logits, teacher_logits, self.temperature, target, self.ignore_index)


class MultiTeacherKDLoss(nn.Module):
    """Module form of :func:`multi_teacher_kd` (fixed ``weights`` (K,) as a buffer, or per call).

    Args:
        temperature: softening temperature ``T > 0``.
        weights: ``(K,)`` fixed teacher weights (None: uniform, or given per call).
        ignore_index: label value whose positions do not count (pass ``target`` to ``forward``).

    Returns:
        A module; ``loss(student_logits, teacher_logits (B, K, C, ...), weights=, select=, target=)``
        returns a scalar tensor.

    Example:
        >>> loss = MultiTeacherKDLoss(temperature=2.0, weights=torch.tensor([3.0, 1.0]))
        >>> loss(torch.zeros(4, 5), torch.zeros(4, 2, 5)).item()
        0.0
    """

    def __init__(
        self, temperature: float = 4.0, weights: Tensor | None = None, ignore_index: int | None = None
    ) -> None:
        super().__init__()
        _check_T(temperature)
        self.temperature, self.ignore_index = temperature, ignore_index
        self.register_buffer("weights", None if weights is None else torch.as_tensor(weights).float())

    def forward(
        self,
        student_logits: Tensor,
        teacher_logits: Tensor,
        weights: Tensor | None = None,
        select: Tensor | None = None,
        target: Tensor | None = None,
    ) -> Tensor:
        w = weights if weights is not None else (None if select is not None else self.weights)
        return multi_teacher_kd(student_logits, teacher_logits, self.temperature, w, select, target, self.ignore_index)


class FitNetLoss(nn.Module):
    """FitNet hint loss with an optional learned projector (student -> teacher width).

    A projector is created when the widths differ or ``projector=True``; it belongs to the student
    side (its parameters must be in the optimiser).

    Args:
        student_dim: student feature channels (or width).
        teacher_dim: teacher feature channels (or width).
        kind: ``"conv"`` (1×1 conv, ``(B, C, H, W)`` features) or ``"linear"`` (``(B, D)``).
        projector: force (True) or forbid (False) the projector; None: only when widths differ.

    Returns:
        A module; ``loss(student_feat, teacher_feat, mask=None)`` returns a scalar tensor.

    Example:
        >>> loss = FitNetLoss(8, 16, kind="linear")
        >>> loss(torch.randn(2, 8), torch.randn(2, 16)).shape
        torch.Size([])
    """

    def __init__(self, student_dim: int, teacher_dim: int, kind: str = "conv", projector: bool | None = None) -> None:
        super().__init__()
        if kind not in ("conv", "linear"):
            raise ConfigError(f"FitNetLoss kind must be 'conv' or 'linear', got {kind!r}")
        use = (student_dim != teacher_dim) if projector is None else projector
        if not use and student_dim != teacher_dim:
            raise ConfigError(f"FitNetLoss: widths differ ({student_dim} vs {teacher_dim}); set projector=True")
        if not use:
            self.proj: nn.Module = nn.Identity()
        elif kind == "conv":
            self.proj = nn.Conv2d(student_dim, teacher_dim, kernel_size=1, bias=False)
        else:
            self.proj = nn.Linear(student_dim, teacher_dim, bias=False)

    def forward(self, student_feat: Tensor, teacher_feat: Tensor, mask: Tensor | None = None) -> Tensor:
        return fitnet(self.proj(student_feat), teacher_feat, mask)


class DKDLoss(nn.Module):
    """Module form of :func:`dkd`.

    Args:
        alpha: weight of TCKD.
        beta: weight of NCKD.
        temperature: softening temperature ``T > 0``.

    Returns:
        A module; ``loss(student_logits, teacher_logits, target)`` returns a scalar tensor.

    Example:
        >>> DKDLoss()(torch.zeros(2, 4), torch.zeros(2, 4), torch.tensor([0, 1])).item()
        0.0
    """

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> None:
        super().__init__()
        _check_T(temperature)
        self.alpha, self.beta, self.temperature = alpha, beta, temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, target: Tensor) -> Tensor:
        return dkd(student_logits, teacher_logits, target, self.alpha, self.beta, self.temperature)
