"""Experiment tracking: metrics also go to Fabric's TensorBoard / CSV loggers when switched on,
with the same values as metrics.jsonl, and switching them on changes neither results nor hashes."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from multiteacher.config import config_dict, config_hash, load_config
from multiteacher.errors import ConfigError
from multiteacher.io import read_metrics
from multiteacher.runs import RunContext, run

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "example-tiny.yaml"
FAST = ["teacher_fit.max_steps=40", "student_fit.max_steps=40", "teacher_fit.val_every=20",
        "student_fit.val_every=20", "teacher_fit.log_every=5"]


def test_tensorboard_and_csv_get_what_metrics_jsonl_has(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    on = run(TINY, run_dir=tmp_path / "on", overrides=[*FAST, "tracking.tensorboard=true", "tracking.csv=true"],
             data_dir=tmp_path, cache_dir=tmp_path / "cache")
    off = run(TINY, run_dir=tmp_path / "off", overrides=FAST, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert on.metrics == off.metrics and on.rows == off.rows and on.config_hash == off.config_hash
    assert on.config["tracking"] == {"tensorboard": True, "csv": True, "wandb": False, "mlflow": False}
    assert "tracking" not in off.config and not (tmp_path / "off" / "tracking").exists()

    records = read_metrics(tmp_path / "on" / "metrics.jsonl")
    expected = {(r["step"], r["train/loss"]) for r in records if r.get("fit") == "teacher" and "train/loss" in r}
    val = {(r["step"], r["val/acc"]) for r in records if r.get("fit") == "student_kd" and "val/acc" in r}
    assert len(expected) == 8 and len(val) == 2
    events = tmp_path / "on" / "tracking" / "tensorboard" / "version_0"
    acc = EventAccumulator(str(events))
    acc.Reload()
    got = {(e.step, e.value) for e in acc.Scalars("teacher/train/loss")}
    assert {s for s, _ in got} == {s for s, _ in expected}
    for (s, v), (s2, v2) in zip(sorted(got), sorted(expected)):
        assert s == s2 and v == pytest.approx(v2, rel=1e-6)  # event files store float32
    tb_val = sorted((e.step, e.value) for e in acc.Scalars("student_kd/val/acc"))
    assert [s for s, _ in tb_val] == [s for s, _ in sorted(val)]
    assert [v for _, v in tb_val] == pytest.approx([v for _, v in sorted(val)], rel=1e-6)

    with open(tmp_path / "on" / "tracking" / "csv" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    got_csv = {(int(r["step"]), float(r["student_kd/val/acc"])) for r in rows if r.get("student_kd/val/acc")}
    assert got_csv == val


def test_tracking_is_not_hashed_and_omitted_when_off() -> None:
    off, on = load_config(TINY), load_config(TINY, ["tracking.csv=true"])
    assert config_hash(off) == config_hash(on)
    assert "tracking" not in config_dict(off) and config_dict(on)["tracking"]["csv"] is True


@pytest.mark.parametrize("logger,package", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_missing_logger_package_is_one_config_error(logger: str, package: str, tmp_path: Path) -> None:
    if importlib.util.find_spec(package) and importlib.util.find_spec("lightning"):
        pytest.skip(f"{package} and lightning are installed")
    with pytest.raises(ConfigError, match=rf"tracking\.{logger}' = True: needs the package\(s\) .*pip install"):
        load_config(TINY, [f"tracking.{logger}=true"])
    with pytest.raises(ConfigError, match=rf"RunContext.create: tracking\.{logger}: needs the package"):
        RunContext.create(tmp_path / "run", tracking={logger: True})
    assert not (tmp_path / "run").exists()
