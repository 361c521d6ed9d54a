"""Atomic writes leave the old file or the new one, never a torn one; kill points parse specs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from multiteacher import killpoints
from multiteacher.io import (
    atomic_open,
    atomic_write_json,
    clean_temp_files,
    leftover_temp_files,
    sha256_file,
)


def test_atomic_write_replaces_and_cleans_on_error(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    atomic_write_json(p, {"x": 1})
    with pytest.raises(RuntimeError), atomic_open(p, "wb") as f:
        f.write(b"partial")
        raise RuntimeError("boom")
    assert p.read_text().strip().startswith("{") and leftover_temp_files(tmp_path) == []
    assert len(sha256_file(p)) == 64


def test_sigkill_mid_write_keeps_old_file(tmp_path: Path) -> None:
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    code = (
        "from multiteacher.io import atomic_open\nfrom multiteacher.killpoints import killpoint\n"
        f"with atomic_open({str(p)!r}) as f:\n    f.write(b'new-partial')\n    killpoint('t/mid')\n"
    )
    env = {**os.environ, "MULTITEACHER_KILL_AT": "t/mid"}
    r = subprocess.run([sys.executable, "-c", code], env=env)
    assert r.returncode == -9
    assert p.read_bytes() == b"old"
    assert len(leftover_temp_files(tmp_path)) == 1
    assert clean_temp_files(tmp_path) == 1 and leftover_temp_files(tmp_path) == []


def test_kill_spec_counts_hits(monkeypatch: pytest.MonkeyPatch) -> None:
    died: list[str] = []
    monkeypatch.setattr(killpoints, "_die", lambda: died.append("x"))
    monkeypatch.setenv("MULTITEACHER_KILL_AT", "a@3, b")
    killpoints.reset()
    for _ in range(5):
        killpoints.killpoint("a")
    assert died == ["x"]
    killpoints.killpoint("b")
    killpoints.killpoint("c")
    assert died == ["x", "x"]
    monkeypatch.delenv("MULTITEACHER_KILL_AT")
    monkeypatch.setenv("MULTITEACHER_KILL_RANDOM", "1.0:0")
    killpoints.killpoint("anything")
    assert len(died) == 3
    killpoints.reset()
