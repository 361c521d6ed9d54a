"""Fabric construction and seeding: one place that decides devices, precision and determinism."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from multiteacher.config import FabricConfig


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices).

    Args:
        seed: a non-negative integer.

    Returns:
        None.

    Example:
        >>> seed_everything(0)
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool = True) -> None:
    """Deterministic kernels where torch has them (exact on CPU; best effort on GPU).

    Args:
        enabled: switch deterministic algorithms on (False leaves torch's settings alone).

    Returns:
        None.

    Example:
        >>> set_deterministic(True)
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> dict[str, Any]:
    """Every RNG state a resumed run needs to continue bit-identically.

    Returns:
        `{"python", "numpy", "torch"[, "cuda"]}` states (torch-saveable).

    Example:
        >>> sorted(rng_state())[:3]
        ['numpy', 'python', 'torch']
    """
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by `rng_state`.

    Args:
        state: what `rng_state` returned.

    Returns:
        None.

    Example:
        >>> set_rng_state(rng_state())
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_fabric(cfg: FabricConfig, launch: bool = True) -> Any:
    """Build (and launch) a Lightning Fabric from the config; DDP on CPU uses the gloo backend.

    Args:
        cfg: the config's `fabric` section.
        launch: call `fabric.launch()` (starts DDP worker processes where the strategy needs them).

    Returns:
        The Fabric, with deterministic kernels set as `cfg.deterministic` says.

    Example:
        >>> make_fabric(FabricConfig()).world_size
        1
    """
    from lightning_fabric import Fabric

    strategy: Any = cfg.strategy
    accelerator = cfg.accelerator
    if cfg.strategy in ("ddp", "ddp_spawn") and accelerator == "cpu":
        from lightning_fabric.strategies import DDPStrategy

        start = "popen" if cfg.strategy == "ddp" else "spawn"
        strategy = DDPStrategy(process_group_backend="gloo", start_method=start)
    fabric = Fabric(
        accelerator=accelerator,
        devices=cfg.devices,
        strategy=strategy,
        precision=cfg.precision,
        num_nodes=cfg.num_nodes,
    )
    if launch:
        fabric.launch()
    set_deterministic(cfg.deterministic)
    return fabric
