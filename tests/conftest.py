"""Shared fixtures. `data_dir` fails (not skips) when MULTITEACHER_DATA is set but incomplete."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never write to the user's cache from tests unless a test asks for it."""
    if "MULTITEACHER_CACHE" not in os.environ:
        monkeypatch.setenv("MULTITEACHER_CACHE", str(tmp_path_factory.getbasetemp() / "mt-cache"))


def _shared_data() -> Path | None:
    env = os.environ.get("MULTITEACHER_DATA")
    if env:
        return Path(env).resolve()
    default = REPO.parent / "shared" / "data"
    return default if default.exists() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data directory. Fails when MULTITEACHER_DATA is set and missing; skips only when unset."""
    path = _shared_data()
    if path is None:
        pytest.skip("shared data not found and MULTITEACHER_DATA not set")
    if not path.is_dir():
        pytest.fail(f"MULTITEACHER_DATA={path} does not exist")
    return path


def require_data(data_dir: Path, *rel: str) -> Path:
    """Path under the data dir that must exist (fails the test, never skips)."""
    p = data_dir.joinpath(*rel)
    if not p.exists():
        pytest.fail(f"required shared data missing: {p}")
    return p
