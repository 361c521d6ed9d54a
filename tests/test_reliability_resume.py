"""Kill-anywhere resume and determinism for every recipe's tiny run (real SIGKILL, real processes).

For each recipe: one uninterrupted reference run, and a run SIGKILLed at named kill points — one
per session, so one test exercises a chain of kills — and resumed with `multiteacher run --resume`
until it finishes. Its comparable results must equal the reference's, with no temp file left in the
run or cache directory. This is also the determinism check: every part of the resumed run's results
was computed in other processes than the reference's, from the same config and seed, and must be
bit-identical (a separate uninterrupted rerun would double the cost and prove less).
`make reliability` (scripts/reliability.py) does the same at random moments. The example recipe's
other kill points are in tests/test_cli.py; the teacher cache's in tests/test_cache.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from multiteacher.io import leftover_temp_files
from multiteacher.runs import comparable_results

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# recipe -> (tiny config, needs ../shared/data, kill points: one per session, in order)
RECIPES: dict[str, tuple[str, bool, list[str]]] = {
    # best.pt write torn mid-file; then the RNG-state write after the 2nd fit of the next session
    # (shortened fits: tests/test_cli.py runs the example's full tiny config at four more kill points)
    "example": ("example-tiny.yaml", False, ["fit/best_write@2", "fit/rng_write@2"]),
    # mid generation 0 (after 5 edges trained); then between generation 0 and generation 1
    "ngc": ("ngc-scenes-tiny.yaml", False, ["ngc/edge_trained@5", "stage/ngc_gen0"]),
    # mid-epoch in MST stage 1; then between stage 1 and stage 2 (between methods: `make reliability`)
    "mst": ("mst-avdigits-tiny.yaml", True, ["fit/step@10", "fit/done@1"]),
    # between the baseline and untrained stages; then during the first last.pt write
    "rerank": ("rerank-trecdl-tiny.yaml", True, ["stage/baselines", "fit/checkpoint_write@1"]),
}


def cli(*args: str, cache: Path, kill: str | None = None, data: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`multiteacher ARGS` in a fresh process (OMP_NUM_THREADS=1, own cache dir, optional kill point)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MULTITEACHER_CACHE": str(cache)}
    for k in ("MULTITEACHER_KILL_AT", "MULTITEACHER_KILL_RANDOM"):
        env.pop(k, None)
    if kill:
        env["MULTITEACHER_KILL_AT"] = kill
    if data is not None:
        env["MULTITEACHER_DATA"] = str(data)
    return subprocess.run([sys.executable, "-m", "multiteacher.cli", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)


def results(run_dir: Path) -> dict[str, Any]:
    return comparable_results(json.loads((run_dir / "results.json").read_text()))


SETS = {"example": ["--set", "teacher_fit.max_steps=60", "student_fit.max_steps=60", "teacher_fit.val_every=20",
                    "student_fit.val_every=20"]}


def _config(recipe: str) -> Path:
    path = REPO / "recipes" / RECIPES[recipe][0]
    if not path.exists():
        pytest.fail(f"{path} is missing — every recipe ships a tiny config")
    return path


def _data(recipe: str, request: pytest.FixtureRequest) -> Path | None:
    return request.getfixturevalue("data_dir") if RECIPES[recipe][1] else None


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """Lazily run (once per recipe) the uninterrupted reference: recipe -> its run directory."""
    done: dict[str, Path] = {}

    def get(recipe: str) -> Path:
        if recipe not in done:
            root = tmp_path_factory.mktemp(f"ref-{recipe}")
            r = cli("run", str(_config(recipe)), "--run-dir", str(root / "run"), *SETS.get(recipe, []),
                    cache=root / "cache", data=_data(recipe, request))
            assert r.returncode == 0, r.stderr[-3000:]
            done[recipe] = root / "run"
        return done[recipe]

    return get


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_sigkill_chain_resume_equals_same_seed_run(recipe: str, tmp_path: Path, reference,
                                                  request: pytest.FixtureRequest) -> None:
    data = _data(recipe, request)
    ref = reference(recipe)
    run, cache = tmp_path / "run", tmp_path / "cache"
    points = RECIPES[recipe][2]
    for i, point in enumerate(points):
        args = ("run", str(_config(recipe)), "--run-dir", str(run), *SETS.get(recipe, [])) if i == 0 \
            else ("run", "--resume", str(run))
        r = cli(*args, cache=cache, kill=point, data=data)
        assert r.returncode == -9, f"session {i + 1}: kill point {point} never fired (rc {r.returncode}) " \
                                   f"{r.stderr[-3000:]}"
        assert not (run / "results.json").exists()
    r = cli("run", "--resume", str(run), cache=cache, data=data)
    assert r.returncode == 0, r.stderr[-3000:]
    assert results(run) == results(ref)
    full = json.loads((run / "results.json").read_text())
    assert full["sessions"] == len(points) + 1
    assert leftover_temp_files(run) == [] and leftover_temp_files(cache) == []


# ----------------------------------------------------------------------------- in-process units


def test_stage_result_is_the_same_in_the_first_and_a_resumed_session(tmp_path: Path) -> None:
    """A stage returns its stored JSON form (keys sorted, tuples as lists) in the session that ran
    it too, so code iterating a stage's dict builds rows in the same order before and after resume."""
    from multiteacher.config import RecipeConfig
    from multiteacher.runs import RunContext

    def ctx() -> RunContext:
        return RunContext(run_dir=tmp_path, data_dir=tmp_path, cache_dir=tmp_path,
                          config=RecipeConfig(recipe="example", name="t"))

    def work() -> dict[str, Any]:
        return {"val": {"b": 1.5, "a": (1, 2)}, "test": 2}

    first = ctx().stage("s", work)
    resumed = ctx().stage("s", lambda: pytest.fail("a stored stage must not run again"))
    assert first == resumed and list(first) == list(resumed) == ["test", "val"]
    assert list(first["val"]) == ["a", "b"] and first["val"]["a"] == [1, 2]


def test_timing_fields_are_not_compared() -> None:
    res = {"metrics": {"acc": 0.5}, "rows": [{"acc": 0.5}], "timings": {"train_seconds": 3.2},
           "wall_time_s": 9.0, "sessions": 2}
    assert comparable_results(res) == {"metrics": {"acc": 0.5}, "rows": [{"acc": 0.5}]}


def test_run_killed_before_it_started_can_be_started_again(tmp_path: Path) -> None:
    """Killed while writing config.yaml (only its temp file exists): the same `run` command works."""
    from multiteacher.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / ".config.yaml.tmp-4242-deadbeef").write_text("recipe: exa")
    fast = ["teacher_fit.max_steps=20", "student_fit.max_steps=20", "teacher_fit.val_every=10",
            "student_fit.val_every=10"]
    assert main(["run", str(REPO / "recipes" / "example-tiny.yaml"), "--run-dir", str(run), "--set", *fast]) == 0
    assert (run / "results.json").exists() and leftover_temp_files(run) == []
