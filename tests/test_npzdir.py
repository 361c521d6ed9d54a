"""Dronescapes-style npz directory loader on a tiny fixture written by the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from multiteacher.data.npzdir import NpzDir
from multiteacher.errors import DataError


@pytest.fixture
def root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(5):
        fid = f"{i:05d}"
        for rep, arr in {
            "rgb": rng.integers(0, 256, (8, 10, 3), dtype=np.uint8),
            "depth": rng.random((8, 10, 1), dtype=np.float32),
            "normals": rng.random((8, 10, 3), dtype=np.float32),
        }.items():
            (tmp_path / "d" / rep).mkdir(parents=True, exist_ok=True)
            np.savez(tmp_path / "d" / rep / f"{fid}.npz", arr)
        if i % 2 == 0:  # labels exist for a subset of frames
            (tmp_path / "d" / "semantic").mkdir(exist_ok=True)
            np.savez_compressed(tmp_path / "d" / "semantic" / f"{fid}.npz", semantic=np.full((8, 10), i, np.uint8))
    return tmp_path / "d"


def test_lists_and_reads(root: Path) -> None:
    d = NpzDir(root)
    assert d.representations == ["depth", "normals", "rgb", "semantic"]
    assert d.frames("rgb") == [f"{i:05d}" for i in range(5)]
    assert d.frames() == ["00000", "00002", "00004"]
    assert d.read("semantic", "00002").tolist() == np.full((8, 10), 2).tolist()


def test_export_is_memmapped_and_cached(root: Path, tmp_path: Path) -> None:
    d = NpzDir(root)
    arrs = d.export(tmp_path / "cache", progress=False)
    assert arrs["rgb"].shape == (3, 8, 10, 3) and arrs["rgb"].dtype == np.uint8
    assert arrs["depth"].shape == (3, 8, 10)  # trailing channel of 1 dropped
    assert isinstance(arrs["depth"], np.memmap)
    np.testing.assert_array_equal(arrs["semantic"][1], np.full((8, 10), 2))
    np.testing.assert_array_equal(arrs["rgb"][2], d.read("rgb", "00004"))
    again = d.export(tmp_path / "cache", progress=False)
    assert again["rgb"].filename == arrs["rgb"].filename
    sub = d.export(tmp_path / "cache", ["rgb", "depth"], progress=False)
    assert sub["rgb"].shape[0] == 5


def test_errors_are_one_line(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        NpzDir(tmp_path / "nope")
    (tmp_path / "empty" / "rgb").mkdir(parents=True)
    with pytest.raises(DataError, match="no sub-folder"):
        NpzDir(tmp_path / "empty")
    d = NpzDir(root)
    with pytest.raises(DataError, match="no representation"):
        d.read("flow", "00000")
    np.savez(root / "rgb" / "00001.npz", a=np.zeros(3), b=np.zeros(3))
    with pytest.raises(DataError, match="exactly one"):
        NpzDir(root).read("rgb", "00001")
    np.savez(root / "depth" / "00003.npz", np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match="same shape"):
        NpzDir(root).export(tmp_path / "c2", ["depth"], progress=False)
    for e in (DataError("x"),):
        assert "\n" not in str(e)
