"""Tiny MST-Distill RGB-D segmentation run on rendered pybullet scenes (no data files needed)."""

from __future__ import annotations

import pytest

from multiteacher.config import load_config
from multiteacher.errors import ConfigError
from multiteacher.runs import execute_run
from tests.conftest import REPO


@pytest.mark.slow
def test_tiny_seg_mst_behaviour(tmp_path) -> None:
    cfg = load_config(REPO / "recipes" / "mst-scenes-seg-tiny.yaml")
    res = execute_run(cfg, tmp_path / "run", tmp_path / "data", tmp_path / "cache")
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"mst", "no_kd", "kd_mm"}
    m = rows["mst"]
    assert m["direction"] == "depth->rgb" and 0 <= m["miou"] <= 1
    # 2 masked layers in each of the RGB-D and depth teachers -> 4 specialised teachers
    assert len([k for k in m if k.startswith("route/")]) == 4
    assert sum(v > 0.02 for k, v in m.items() if k.startswith("route_train/")) >= 2
    assert min(v for k, v in m.items() if k.startswith("mask_min/")) < 0.9
    # students beat a uniform guess over the 9 classes on pixels and on mIoU
    for r in rows.values():
        assert r["acc"] > 0.3 and r["miou"] > 1 / 9 * 0.5, r


def test_seg_config_rejects_classification_only_methods() -> None:
    with pytest.raises(ConfigError, match="do not apply to task scenes-seg"):
        load_config(REPO / "recipes" / "mst-scenes-seg-tiny.yaml", ["methods=[mst,dkd]"])
    full = load_config(REPO / "recipes" / "mst-scenes-seg.yaml")
    assert full.task == "scenes-seg" and full.seg.resolution == 64
