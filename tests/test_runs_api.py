"""`multiteacher.runs.run`: what `multiteacher run` does, from Python (config path or object,
overrides, resume), returning the validated results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from multiteacher.config import load_config
from multiteacher.errors import ConfigError
from multiteacher.runs import comparable_results, run
from multiteacher.schema import RunResults

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "example-tiny.yaml"
FAST = ["teacher_fit.max_steps=40", "student_fit.max_steps=40", "teacher_fit.val_every=20",
        "student_fit.val_every=20"]


def test_run_from_path_and_from_object_agree_and_resume(tmp_path: Path) -> None:
    a = run(TINY, run_dir=tmp_path / "a", overrides=FAST, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert isinstance(a, RunResults)
    assert a.model_dump() == RunResults.model_validate(json.loads((tmp_path / "a" / "results.json").read_text())
                                                       ).model_dump()
    assert a.config["teacher_fit"]["max_steps"] == 40 and a.sessions == 1
    # the same config as an object (overrides applied to it): identical results
    cfg = load_config(TINY)
    b = run(cfg, run_dir=tmp_path / "b", overrides=FAST, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert comparable_results(b.model_dump()) == comparable_results(a.model_dump())
    # resuming a finished run re-creates the same results in a second session
    c = run(run_dir=tmp_path / "a", resume=True, data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert comparable_results(c.model_dump()) == comparable_results(a.model_dump()) and c.sessions == 2
    with pytest.raises(ConfigError, match="differs from the run's saved config"):
        run(TINY, run_dir=tmp_path / "a", resume=True)


def test_run_errors_leave_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="teacher_fit.lrr"):
        run(TINY, run_dir=tmp_path / "x", overrides=["teacher_fit.lrr=1"])
    with pytest.raises(ConfigError, match="needs run_dir"):
        run(TINY, resume=True)
    with pytest.raises(ConfigError, match="give a CONFIG"):
        run()
    assert not (tmp_path / "x").exists()
