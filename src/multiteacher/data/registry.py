"""Where data and derived files live, and the named datasets `multiteacher data list|check` knows.

Data directory: `--data-dir` > `$MULTITEACHER_DATA` > `<user cache>/multiteacher/data`.
Cache directory: `--cache-dir` > `$MULTITEACHER_CACHE` > `<user cache>/multiteacher/cache`.
The data directory may be read-only: everything derived goes to the cache directory.

Dataset modules register themselves with `register_dataset`; `DATASET_MODULES` lists the modules
to import so that the registry is complete without importing heavy code up front.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from multiteacher.errors import DataError

DATA_ENV = "MULTITEACHER_DATA"
CACHE_ENV = "MULTITEACHER_CACHE"
DATASET_MODULES = ["multiteacher.data.ir", "multiteacher.data.avdigits", "multiteacher.data.scenes"]


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "multiteacher"


def resolve_data_dir(cli_value: str | os.PathLike[str] | None = None) -> Path:
    """Data directory by precedence: CLI > $MULTITEACHER_DATA > user cache dir."""
    if cli_value:
        return Path(cli_value).expanduser().resolve()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser().resolve()
    return _user_cache() / "data"


def resolve_cache_dir(cli_value: str | os.PathLike[str] | None = None) -> Path:
    """Cache directory by precedence: CLI > $MULTITEACHER_CACHE > user cache dir (created)."""
    if cli_value:
        path = Path(cli_value).expanduser().resolve()
    elif os.environ.get(CACHE_ENV):
        path = Path(os.environ[CACHE_ENV]).expanduser().resolve()
    else:
        path = _user_cache() / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class DatasetInfo:
    """A named dataset: `check(data_dir)` returns a one-line summary or raises DataError."""

    name: str
    description: str
    check: Callable[[Path], str]
    needs_files: bool = True


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a dataset to the registry (idempotent by name)."""
    DATASETS[info.name] = info
    return info


def load_all() -> dict[str, DatasetInfo]:
    """Import every dataset module so that all datasets are registered."""
    for mod in DATASET_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a module not written yet, or an optional extra missing
            if e.name and e.name.startswith("multiteacher"):
                continue
            raise
    return DATASETS


def require_path(path: Path, what: str, hint: str) -> Path:
    """Return `path` if it exists, else raise a one-line DataError saying what to put where."""
    if not path.exists():
        raise DataError(f"missing {what}: {path} does not exist — {hint}")
    return path
