"""What `fit` needs from a run, and a stand-in for fits outside a run (executor worker processes).

`fit` uses six things of its context: `fabric`, `seed`, `run_dir`, `log`, `sync_log` and
`truncate_log` (`FitContext`). A run's `RunContext` has them all. A job in an executor worker
process (e.g. one NGC edge) has no run context — its inputs and outputs are files — so it builds
a `LocalContext`: a single-device Fabric, the job's seed, and an in-memory log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

__all__ = ["FitContext", "LocalContext", "resolve_device"]


class FitContext(Protocol):
    """The part of `RunContext` that `fit` uses.

    Example:
        >>> from multiteacher.engine.context import LocalContext
        >>> isinstance(LocalContext(seed=0, run_dir=Path(".")).seed, int)
        True
    """

    fabric: Any
    run_dir: Path

    @property
    def seed(self) -> int: ...

    def log(self, metrics: dict[str, Any], step: int | None = None, sync: bool = True, **tags: Any) -> None: ...

    def sync_log(self) -> None: ...

    def truncate_log(self, fit: str, after_step: int) -> None: ...


def resolve_device(device: Literal["cpu", "cuda", "auto"]) -> str:
    """The accelerator a device choice means here: `auto` is cuda when torch sees a GPU, else cpu.

    Args:
        device: "cpu", "cuda" or "auto".

    Returns:
        "cpu" or "cuda".

    Example:
        >>> resolve_device("cpu")
        'cpu'
    """
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


@dataclass
class LocalContext:
    """A `FitContext` for a fit outside a run (an executor job): one device, the job's seed, an in-memory log.

    `log` keeps records in `records` (a job returns what it needs from them); `sync_log` is a
    no-op; `truncate_log` drops a resumed fit's records after its resume step, as `RunContext` does.

    Args:
        seed: the job's seed (batch order of the default sampler).
        run_dir: folder under which `fit` puts `checkpoints/<name>` unless given `ckpt_dir`.
        device: "cpu", "cuda" or "auto" (a single-device Fabric on it).
        fabric: an existing Fabric to use instead.

    Example:
        >>> ctx = LocalContext(seed=3, run_dir=Path("/tmp/job"))
        >>> ctx.log({"loss": 1.0}, step=1, fit="edge"); ctx.records
        [{'fit': 'edge', 'step': 1, 'loss': 1.0}]
    """

    seed: int
    run_dir: Path
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    fabric: Any = None
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.fabric is None:
            from lightning_fabric import Fabric

            self.fabric = Fabric(accelerator=resolve_device(self.device), devices=1)

    def log(self, metrics: dict[str, Any], step: int | None = None, sync: bool = True, **tags: Any) -> None:
        """Keep one record in memory.

        Args:
            metrics: values to record.
            step: the training step, if any.
            sync: ignored (nothing is on disk).
            **tags: extra keys (e.g. `fit=name`).

        Returns:
            None.

        Example:
            >>> # ctx.log({"train/loss": 0.3}, step=10, fit="edge")
        """
        self.records.append({**tags, **({"step": step} if step is not None else {}), **metrics})

    def sync_log(self) -> None:
        """No-op: the log is in memory.

        Returns:
            None.

        Example:
            >>> # ctx.sync_log()
        """

    def truncate_log(self, fit: str, after_step: int) -> None:
        """Drop records of `fit` after `after_step`.

        Args:
            fit: the fit's name.
            after_step: last step to keep.

        Returns:
            None.

        Example:
            >>> # ctx.truncate_log("edge", after_step=100)
        """
        self.records = [r for r in self.records if not (r.get("fit") == fit and r.get("step", -1) > after_step)]
