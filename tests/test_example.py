"""The example recipe learns: teacher near-perfect, both students far above chance."""

from __future__ import annotations

from pathlib import Path

from multiteacher.config import load_config
from multiteacher.data.registry import resolve_cache_dir
from multiteacher.runs import execute_run

REPO = Path(__file__).resolve().parents[1]


def test_example_tiny_learns(tmp_path: Path) -> None:
    cfg = load_config(REPO / "recipes" / "example-tiny.yaml")
    res = execute_run(cfg, tmp_path / "run", tmp_path, resolve_cache_dir(None))
    m = res["metrics"]
    assert m["teacher/test_acc"] > 0.9
    assert m["student_ce/test_acc"] > 3 * m["chance_acc"] and m["student_kd/test_acc"] > 3 * m["chance_acc"]
    assert {r["model"] for r in res["rows"]} == {"teacher", "student_ce", "student_kd"}
