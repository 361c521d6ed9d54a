"""Open recipes: a recipe outside the package runs through the CLI (kill, resume, report), the
built-in four are found through the `multiteacher.recipes` entry point group, and the engine does
not import recipes."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from multiteacher import recipe_registry
from multiteacher.config import load_config
from multiteacher.errors import ConfigError
from multiteacher.runs import comparable_results

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "own_recipe"
SRC = REPO / "src" / "multiteacher"


def _own_recipe_outside(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """Copy the example recipe package to tmp_path (outside the repo and the package); its env."""
    pkgs = tmp_path / "pkgs"
    shutil.copytree(EXAMPLE, pkgs / "own_recipe", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(pkgs)}
    env.pop("MULTITEACHER_KILL_AT", None)
    return pkgs, env


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "multiteacher.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def test_own_recipe_runs_from_cli_killed_resumed_and_reported(tmp_path: Path) -> None:
    pkgs, env = _own_recipe_outside(tmp_path)
    cfg = pkgs / "own_recipe" / "own-recipe.yaml"
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    r = cli("run", str(cfg), "--run-dir", str(ref), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    # SIGKILL in the middle of the student's fit (150 steps, checkpoints every 50), then resume
    r = cli("run", str(cfg), "--run-dir", str(killed), env={**env, "MULTITEACHER_KILL_AT": "fit/step@120"},
            cwd=tmp_path)
    assert r.returncode == -9, r.stderr[-2000:]
    assert not (killed / "results.json").exists()
    r = cli("run", "--resume", str(killed), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    a = json.loads((ref / "results.json").read_text())
    b = json.loads((killed / "results.json").read_text())
    assert comparable_results(a) == comparable_results(b)
    assert b["recipe"] == "own_recipe.recipe" and b["sessions"] == 2
    assert json.loads((killed / "run.json").read_text())["sessions"] == 2
    # the consensus of the three noisy teachers beats each of them (the recipe really ran)
    m = a["metrics"]
    assert m["consensus/test_acc"] > max(m[f"teacher{k}/test_acc"] for k in range(3))
    # the report: one row per model, values as in results.json
    r = cli("report", str(ref), str(killed), env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    student = next(row["test_acc"] for row in a["rows"] if row["model"] == "student")
    assert f"| student | {student:.3f} ± 0.000 |" in r.stdout and "runs: 2" in r.stdout
    assert (killed / "report.md").read_text().startswith("# Run `own-recipe` (own_recipe.recipe)")


def test_own_recipe_without_pythonpath_is_one_clear_line(tmp_path: Path) -> None:
    _, env = _own_recipe_outside(tmp_path)
    env.pop("PYTHONPATH")
    r = cli("run", str(EXAMPLE / "own-recipe.yaml"), "--run-dir", str(tmp_path / "r"), env=env, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "'own_recipe.recipe'" in r.stderr and "PYTHONPATH" in r.stderr and not (tmp_path / "r").exists()


def test_builtin_recipes_are_entry_points() -> None:
    assert recipe_registry.registered_recipes() == {
        "example": "multiteacher.recipes.example", "mst": "multiteacher.recipes.mst",
        "ngc": "multiteacher.recipes.ngc", "rerank": "multiteacher.recipes.rerank"}
    assert recipe_registry.load_recipe("example").__name__ == "multiteacher.recipes.example"


def test_unknown_recipe_lists_registered_names_and_dotted_path(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("recipe: nope\nname: x\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "'nope'" in msg and "example, mst, ngc, rerank" in msg and "dotted module path" in msg


def test_module_without_config_or_run_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "half_recipe.py").write_text("def run(cfg, ctx):\n    return {}\n")
    (tmp_path / "no_recipe.py").write_text("Config = dict\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"lacks a `Config` class subclassing .*RecipeConfig — "):
        recipe_registry.load_recipe("half_recipe", "c.yaml")
    with pytest.raises(ConfigError, match=r"lacks a `Config` class .* and a `run\(cfg, ctx\)` function"):
        recipe_registry.load_recipe("no_recipe", "c.yaml")


def test_a_recipe_registered_by_another_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkgs, _ = _own_recipe_outside(tmp_path)
    monkeypatch.syspath_prepend(str(pkgs))
    real = recipe_registry.entry_points

    def fake(group: str) -> list[EntryPoint]:
        return [*real(group=group), EntryPoint("mine", "own_recipe.recipe", group)]

    monkeypatch.setattr(recipe_registry, "entry_points", fake)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("recipe: mine\nname: m\nteachers: 2\n")
    loaded = load_config(cfg)
    assert type(loaded).__module__ == "own_recipe.recipe" and loaded.teachers == 2
    with pytest.raises(ConfigError, match="valid recipes: example, mine, mst, ngc, rerank"):
        recipe_registry.load_recipe("nope")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_engine_does_not_import_recipes_and_has_no_runs_report_cycle() -> None:
    for name in ("config.py", "runs.py", "cli.py", "report.py", "schema.py", "recipe_registry.py", "io.py"):
        bad = {m for m in _imports(SRC / name) if m.startswith("multiteacher.recipes")}
        assert not bad, f"{name} imports {bad}"
        assert "multiteacher.io._json_default" not in _imports(SRC / name)
    assert not {m for m in _imports(SRC / "report.py") if m.startswith("multiteacher.runs")}
    r = subprocess.run([sys.executable, "-c", "import sys, multiteacher.cli, multiteacher.runs, multiteacher.config, "
                        "multiteacher.report; print(sorted(m for m in sys.modules if m.startswith('multiteacher.recip"
                        "es')))"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
