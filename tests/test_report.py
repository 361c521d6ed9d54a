"""Report aggregation: grouping, mean ± std, filters and column selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multiteacher.errors import DataError
from multiteacher.report import aggregate, format_table, parse_where, report_markdown


def write(tmp_path: Path, name: str, seed: int, rows: list[dict]) -> Path:
    p = tmp_path / f"{name}.json"
    p.write_text(json.dumps({"recipe": "t", "name": "r", "seed": seed, "config_hash": "h", "commit": "abc",
                             "metrics": {}, "rows": rows}))
    return p


def test_mean_std_over_seeds_and_folds(tmp_path: Path) -> None:
    a = write(tmp_path, "a", 0, [{"method": "kd", "fold": "x", "acc": 0.5}, {"method": "ce", "fold": "x", "acc": 0.2}])
    b = write(tmp_path, "b", 1, [{"method": "kd", "fold": "y", "acc": 0.7}])
    table = aggregate([json.loads(a.read_text()), json.loads(b.read_text())])
    kd = next(e for e in table if e["method"] == "kd")
    assert kd["acc"][0] == pytest.approx(0.6) and kd["acc"][1] == pytest.approx(0.1414213, rel=1e-5)
    assert kd["acc"][2] == 2
    md = format_table(table)
    assert "0.600 ± 0.141 (n=2)" in md and "| ce | 0.200 (n=1) |" in md


def test_filters_and_columns(tmp_path: Path) -> None:
    a = write(tmp_path, "a", 0, [{"kind": "direct", "node": "d", "rmse": 1.0, "mae": 2.0},
                                 {"kind": "two_hop", "node": "d", "rmse": 3.0, "mae": 4.0}])
    md = report_markdown([a], where=parse_where(["kind=direct"]), columns=["rmse"])
    assert "two_hop" not in md and "mae" not in md and "1.000" in md
    with pytest.raises(DataError, match="FIELD=VALUE"):
        parse_where(["nonsense"])


def test_by_groups_runs_apart_by_a_config_field(tmp_path: Path) -> None:
    def run(name: str, seed: int, hyper: bool, v: float) -> Path:
        p = tmp_path / f"{name}.json"
        rows = [{"kind": "direct", "node": "d", "rmse": v}]
        p.write_text(json.dumps({"recipe": "t", "name": name, "seed": seed, "config_hash": "h", "commit": "c",
                                 "config": {"graph": {"hyperedges": hyper}}, "metrics": {}, "rows": rows}))
        return p

    paths = [run("a", 0, False, 1.0), run("b", 1, False, 3.0), run("c", 0, True, 5.0)]
    # without --by the variant is not averaged in (issue 15): rows split by the differing config field
    plain = report_markdown(paths)
    assert plain.splitlines()[0].startswith("| graph.hyperedges | kind |")
    assert "| False | direct | d | 2.000 ± 1.414 (n=2) |" in plain and "| True | direct | d | 5.000 (n=1) |" in plain
    assert "configs differ in: graph.hyperedges" in plain
    md = report_markdown(paths, by=["config.graph.hyperedges"])
    assert "| hyperedges |" in md.splitlines()[0]
    assert "| False | direct | d | 2.000 ± 1.414 (n=2) |" in md and "| True | direct | d | 5.000 (n=1) |" in md
    with pytest.raises(DataError, match="no field 'config.graph.nope'"):
        report_markdown(paths, by=["config.graph.nope"])
