"""The fit loop's files: `last.pt` (resume point), `best.pt`, `final_rng.pt` and `done.json`, written atomically.

One `FitCheckpoints` per fit directory. Every write goes through a temp file with a named kill
point half-way (`fit/checkpoint_write`, `fit/best_write`, `fit/rng_write`), so the reliability
tests can SIGKILL a run mid-write and check that resume still works.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multiteacher.engine.setup import rng_state, set_rng_state
from multiteacher.io import atomic_open, atomic_write_json
from multiteacher.killpoints import killpoint

__all__ = ["FitCheckpoints", "save_atomic"]


def save_atomic(path: Path, obj: Any, kill_name: str) -> None:
    """`torch.save` `obj` to `path` atomically, with the kill point `kill_name` half-way through the write.

    Args:
        path: destination file (its folder is created).
        obj: anything `torch.save` takes.
        kill_name: the kill point between the two halves of the write.

    Returns:
        None.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.pt"
        >>> save_atomic(p, {"a": 1}, "doc/write"); torch.load(p)["a"]
        1
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    with atomic_open(path, "wb") as f:
        f.write(data[: len(data) // 2])
        killpoint(kill_name)
        f.write(data[len(data) // 2:])


def _load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=False)


@dataclass
class FitCheckpoints:
    """The files of one fit in `root`: resume point, best weights, final RNG state, done marker.

    Only rank 0 writes (`is_main`); every rank reads.

    Args:
        root: the fit's checkpoint folder (e.g. `<run>/checkpoints/<name>`).
        is_main: whether this process writes.
        fit_config: the FitConfig as a dict, stored in `last.pt` and `done.json` (a later call checks it).

    Example:
        >>> import tempfile, pathlib
        >>> ck = FitCheckpoints(pathlib.Path(tempfile.mkdtemp()))
        >>> ck.finished, ck.last.name
        (False, 'last.pt')
    """

    root: Path
    is_main: bool = True
    fit_config: dict[str, Any] | None = None

    @property
    def done(self) -> Path:
        """`done.json`: the finished fit's `FitResult`."""
        return self.root / "done.json"

    @property
    def last(self) -> Path:
        """`last.pt`: the resume point (model, optimizer, scheduler, state, RNG)."""
        return self.root / "last.pt"

    @property
    def best(self) -> Path:
        """`best.pt`: the best weights (the last ones for a fit without validation)."""
        return self.root / "best.pt"

    @property
    def rng(self) -> Path:
        """`final_rng.pt`: the RNG state at the end of the fit (a reused fit continues the stream)."""
        return self.root / "final_rng.pt"

    @property
    def finished(self) -> bool:
        """Whether an earlier session finished this fit (`done.json` exists)."""
        return self.done.exists()

    def load_finished(self, model: torch.nn.Module) -> dict[str, Any]:
        """Load the best weights and the final RNG state of a finished fit; return its stored result.

        Args:
            model: receives the best weights.

        Returns:
            The `FitResult` fields stored in `done.json`.

        Example:
            >>> # result = FitResult(**ck.load_finished(model))
        """
        model.load_state_dict(_load(self.best)["model"])
        set_rng_state(_load(self.rng))
        result = json.loads(self.done.read_text())
        result.pop("fit_config", None)
        result.pop("fit_config_before", None)
        return result

    def stored_fit_config(self) -> dict[str, Any] | None:
        """The FitConfig (as a dict) the stored fit was made with: `done.json`'s, else `last.pt`'s.

        Returns:
            The dict, or None when there is no fit here (or it predates the record).

        Example:
            >>> # ck.stored_fit_config()["lr"]
        """
        if self.finished:
            return json.loads(self.done.read_text()).get("fit_config")
        if self.last.exists():
            return _load(self.last).get("fit_config")
        return None

    def accept_fit_config(self, before: dict[str, Any]) -> None:
        """Record that a changed FitConfig was accepted (`--allow-changed`): `done.json` takes the new one.

        The settings it was trained with stay in `fit_config_before`; a partial fit's `last.pt`
        takes the new settings at its next checkpoint.

        Args:
            before: the stored FitConfig that was replaced.

        Returns:
            None.

        Example:
            >>> # ck.accept_fit_config(ck.stored_fit_config())
        """
        if self.is_main and self.finished and self.fit_config is not None:
            done = json.loads(self.done.read_text())
            done.setdefault("fit_config_before", before)
            atomic_write_json(self.done, {**done, "fit_config": self.fit_config})

    def load_last(self) -> dict[str, Any] | None:
        """The resume point, or None when there is none.

        Returns:
            `{"model", "optimizer", "scheduler", "state", "rng"}` or None.

        Example:
            >>> # ck = checkpoints.load_last(); ck is None on a fresh fit
        """
        return _load(self.last) if self.last.exists() else None

    def save(self, model: torch.nn.Module, resume: dict[str, Any] | None, best: bool) -> None:
        """Write `best.pt` (when `best`) and `last.pt` (when `resume` is given: optimizer, scheduler, state, RNG).

        Args:
            model: the unwrapped model whose weights are stored.
            resume: the rest of the resume point, or None for no `last.pt`.
            best: whether these weights are the best so far.

        Returns:
            None.

        Example:
            >>> # ck.save(model, {"optimizer": opt.state_dict(), ...}, best=True)
        """
        if not self.is_main:
            return
        payload = {"model": model.state_dict()}
        if best:
            save_atomic(self.best, payload, "fit/best_write")
        if resume is not None:
            extra = {"fit_config": self.fit_config} if self.fit_config is not None else {}
            save_atomic(self.last, {**payload, **resume, **extra, "rng": rng_state()}, "fit/checkpoint_write")

    def load_best_into(self, model: torch.nn.Module) -> bool:
        """Load `best.pt` into `model` if it exists.

        Args:
            model: receives the weights.

        Returns:
            Whether there was a `best.pt`.

        Example:
            >>> # if not ck.load_best_into(model): ck.save(model, None, best=True)
        """
        if not self.best.exists():
            return False
        model.load_state_dict(_load(self.best)["model"])
        return True

    def finish(self, result: dict[str, Any]) -> None:
        """Store the final RNG state and `done.json`; drop `last.pt` (the optimizer state is no longer needed).

        Args:
            result: the JSON-able `FitResult` fields.

        Returns:
            None.

        Example:
            >>> # ck.finish(asdict(result))
        """
        if not self.is_main:
            return
        save_atomic(self.rng, rng_state(), "fit/rng_write")
        extra = {"fit_config": self.fit_config} if self.fit_config is not None else {}
        atomic_write_json(self.done, {**result, **extra})
        self.last.unlink(missing_ok=True)
