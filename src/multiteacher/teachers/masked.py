"""MaskedTeacher: a frozen network specialised by plug-in mask nets hooked into its layers.

A mask net reads the output of a layer (named by its module path, as in `named_modules()`) and
returns a mask that multiplies that output (`multiteacher.hooks.mask_output`; a per-channel
``(B, C)`` mask broadcasts over spatial dims). One frozen network with different mask nets gives
several specialised teachers without copying or rewriting the network — MST-Distill's "mixture of
specialised teachers" (Li et al., ACM MM 2025). The mask nets can be trained through
`forward` (gradients reach the mask nets, never the frozen network); `predict` is the teacher
side (eval mode, inference mode), so a `MaskedTeacher` fits a `TeacherPool` and the teacher cache.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

import multiteacher
from multiteacher.errors import UserError
from multiteacher.hooks import get_submodule, mask_output
from multiteacher.teachers.base import (
    fingerprint_callable,
    fingerprint_module,
    fingerprint_obj,
    fingerprint_state_dict,
    freeze_teacher,
)

MaskNetT = Callable[[torch.Tensor], torch.Tensor]


class MaskedTeacher:
    """A frozen module whose layer outputs are multiplied by mask nets, as an engine `Teacher`.

    The module is frozen (:func:`~multiteacher.teachers.base.freeze_teacher`); the mask nets are
    left as they are, so they can be trained through :meth:`forward` and frozen afterwards. Masks
    are applied in the order of ``masks``. Like `ModuleTeacher`, this is not an ``nn.Module``:
    neither the network nor the mask nets end up in a student's checkpoint.

    Args:
        module: the network to specialise (called as ``module(batch)``).
        masks: ``{module path: mask net}``; empty for the plain network.
        name: the teacher's name (default: the module's class name).
        config: anything that changes the outputs and is not in the weights (joins the fingerprint).
        code_version: joins the fingerprint (default: the package version).

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> half = lambda h: torch.full(h.shape[:2], 0.5)
        >>> t = MaskedTeacher(net, {"1": half}, name="net@relu")
        >>> t.predict(torch.ones(5, 4)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        module: nn.Module,
        masks: Mapping[str, MaskNetT] | None = None,
        name: str | None = None,
        *,
        config: Any = None,
        code_version: str | None = None,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise UserError(f"MaskedTeacher needs an nn.Module, got {type(module).__name__}")
        self.module = freeze_teacher(module)
        self.masks = dict(masks or {})
        for path in self.masks:
            get_submodule(module, path)  # a one-line error listing the valid paths
        self.name = name or type(module).__name__
        self.config = config
        self.code_version = code_version

    @property
    def fingerprint(self) -> str:
        """Changes with the module's weights, the mask nets' weights and paths, the config and the code."""
        parts = {
            "module": fingerprint_module(self.module, {"name": self.name, "config": self.config}, self.code_version),
            "masks": [[p, _fingerprint_masknet(m, f"MaskedTeacher {self.name!r}: the mask at {p!r}", self.code_version)]
                      for p, m in self.masks.items()],
            "code": self.code_version if self.code_version is not None else multiteacher.__version__,
        }
        return fingerprint_obj(parts)

    def forward(self, batch: Any, record: dict[str, torch.Tensor] | None = None) -> Any:
        """The masked module's outputs with autograd on: gradients reach the mask nets (to train them).

        Args:
            batch: the module's input.
            record: if given, each mask of this pass is stored in it under its module path.

        Returns:
            The module's output with every mask applied.
        """
        with contextlib.ExitStack() as stack:
            for path, masknet in self.masks.items():
                stack.enter_context(mask_output(self.module, path, masknet, record))
            return self.module(batch)

    def predict(self, batch: Any) -> Any:
        """Teacher outputs for `batch`: module and mask nets in eval mode, under `torch.inference_mode()`.

        Args:
            batch: the module's input.

        Returns:
            The masked module's output (no autograd history).
        """
        for m in (self.module, *self.masks.values()):
            if isinstance(m, nn.Module) and m.training:
                m.eval()
        with torch.inference_mode():
            return self.forward(batch)

    __call__ = predict

    def mask_values(self, batch: Any) -> dict[str, torch.Tensor]:
        """The masks each mask net produces on `batch` (for diagnostics), by module path.

        Args:
            batch: the module's input.

        Returns:
            ``{module path: mask}`` from one inference pass.
        """
        record: dict[str, torch.Tensor] = {}
        with torch.inference_mode():
            self.forward(batch, record)
        return record

    def __repr__(self) -> str:
        return f"MaskedTeacher(name={self.name!r}, module={type(self.module).__name__}, masks={list(self.masks)})"


def _fingerprint_masknet(m: MaskNetT, what: str, version: str | None) -> str:
    """A mask net by class and weights; a plain callable mask by its code (`fingerprint_callable`; one that
    cannot be fingerprinted needs the teacher's `code_version`, which then names it)."""
    if isinstance(m, nn.Module):
        return fingerprint_obj([f"{type(m).__module__}.{type(m).__qualname__}", fingerprint_state_dict(m.state_dict())])
    try:
        return fingerprint_callable(m, what, version)
    except UserError as e:
        raise UserError(str(e).replace("version=", "code_version=")) from None
