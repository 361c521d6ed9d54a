"""Forward hooks selected by module path: capture features or rewrite a submodule's output.

Models are never rewritten to expose features (see DESIGN.md): a recipe names a submodule by
its dotted path (as in `model.named_modules()`, e.g. ``"encoder.layer.3"``) and these helpers
attach a forward hook for the duration of a `with` block, removing it on exit even on error.
Hooks on one module run in the order the blocks were entered (capture inside a mask block sees
the masked output; outside it, the raw output).

    with capture(model, ["conv3", "fc1"]) as feats:
        logits = model(x)
    feats["fc1"]              # the fc1 output of that forward pass

    with mask_output(model, "fc1", masknet):     # fc1's output becomes output * masknet(output)
        logits = model(x)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from multiteacher.errors import ConfigError


def get_submodule(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted `path`; a one-line ConfigError lists valid paths when it is absent."""
    if path == "":
        return model
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        shown = ", ".join(names[:40]) + (" ..." if len(names) > 40 else "")
        raise ConfigError(
            f"module path {path!r} not found in {type(model).__name__}; valid paths: {shown}"
        ) from None


@contextmanager
def transform_output(
    model: nn.Module, path: str, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Replace the output of submodule `path` by `fn(output)` inside the block."""
    module = get_submodule(model, path)
    handle = module.register_forward_hook(lambda _m, _inp, out: fn(out))
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def capture(
    model: nn.Module, paths: Sequence[str], detach: bool = False
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the submodules at `paths` (latest forward pass wins) into a dict."""
    feats: dict[str, torch.Tensor] = {}
    handles = []

    def make(name: str):
        def hook(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
            feats[name] = out.detach() if detach else out

        return hook

    try:
        for p in paths:
            handles.append(get_submodule(model, p).register_forward_hook(make(p)))
        yield feats
    finally:
        for h in handles:
            h.remove()


def apply_mask(output: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`output * mask`, with a per-channel mask (B, C) broadcast over trailing spatial dims."""
    while mask.dim() < output.dim():
        mask = mask.unsqueeze(-1)
    return output * mask


@contextmanager
def mask_output(
    model: nn.Module,
    path: str,
    masknet: Callable[[torch.Tensor], torch.Tensor],
    record: dict[str, torch.Tensor] | None = None,
) -> Iterator[None]:
    """Multiply submodule `path`'s output by `masknet(output)` inside the block.

    If `record` is given, the last mask is stored in it under `path` (for diagnostics/tests).
    """

    def fn(out: torch.Tensor) -> torch.Tensor:
        mask = masknet(out)
        if record is not None:
            record[path] = mask
        return apply_mask(out, mask)

    with transform_output(model, path, fn):
        yield
