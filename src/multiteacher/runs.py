"""Run directories and the context a recipe runs in.

`runs/<name>/` holds: `config.yaml` (resolved), `run.json` (config hash, recipe, sessions),
`metrics.jsonl` (one JSON record per line), `stages/*.json` (finished stages), `checkpoints/`,
`results.json`, `report.md` and `plots/`. Only rank 0 writes. `execute_run` is the whole
lifecycle: create or resume, run the recipe, write results and the report.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from multiteacher import __version__
from multiteacher.config import RecipeConfig, build_config, config_dict, config_hash, config_yaml, load_yaml
from multiteacher.engine.setup import make_fabric, rng_state, seed_everything, set_rng_state
from multiteacher.errors import ConfigError
from multiteacher.io import (
    TMP_MARK,
    _json_default,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    clean_temp_files,
)
from multiteacher.killpoints import killpoint

VOLATILE_RESULT_KEYS = ("wall_time_s", "timings", "finished_at", "sessions", "versions", "commit")


@dataclass
class RunContext:
    """Everything a recipe needs: where to read and write, the config, Fabric, logging, stages."""

    run_dir: Path
    data_dir: Path
    cache_dir: Path
    config: RecipeConfig
    fabric: Any = None
    resumed: bool = False
    _log_file: Path = field(init=False)
    _log_handle: Any = field(init=False, default=None, repr=False)  # kept open: one open() per record cost ~70 µs

    def __post_init__(self) -> None:
        self._log_file = self.run_dir / "metrics.jsonl"
        if self.fabric is None:
            from lightning_fabric import Fabric

            self.fabric = Fabric(accelerator="cpu", devices=1)

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def is_main(self) -> bool:
        return self.fabric.global_rank == 0

    def path(self, *rel: str) -> Path:
        """A path inside the run directory, parent created."""
        p = self.run_dir.joinpath(*rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def log(self, metrics: dict[str, Any], step: int | None = None, sync: bool = True, **tags: Any) -> None:
        """Append one record to metrics.jsonl (rank 0). `sync=False` skips the fsync (a SIGKILL
        still loses nothing written); the fit loop uses it for per-step records and calls
        `sync_log()` before each checkpoint, so the log is durable whenever a checkpoint is."""
        if not self.is_main:
            return
        rec = {**tags, **({"step": step} if step is not None else {}),
               **{k: (v if type(v) is float else float(v) if isinstance(v, int | float) or torch.is_tensor(v) else v)
                  for k, v in metrics.items()}}
        f = self._log_handle
        if f is None or f.closed:
            f = self._log_handle = open(self._log_file, "a")  # noqa: SIM115 — closed by truncate_log / close_log
        f.write(json.dumps(rec, sort_keys=True) + "\n")
        f.flush()  # in the kernel now: a SIGKILL loses nothing written
        if sync:
            os.fsync(f.fileno())

    def close_log(self) -> None:
        """Close the metrics.jsonl handle (reopened by the next `log`)."""
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def sync_log(self) -> None:
        """fsync metrics.jsonl (called before checkpoints)."""
        if self.is_main and self._log_file.exists():
            fd = os.open(self._log_file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def truncate_log(self, fit: str, after_step: int) -> None:
        """Drop records of `fit` logged after `after_step` (a resumed fit re-logs them)."""
        if not self.is_main or not self._log_file.exists():
            return
        self.close_log()  # the file is replaced: a handle would keep writing to the old one
        keep = [r for r in read_metrics(self._log_file)
                if not (r.get("fit") == fit and r.get("step", -1) > after_step)]
        atomic_write_text(self._log_file, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run `fn()` once: its JSON-able result (and the RNG state after it) is stored under
        `stages/`, and a resumed run returns the stored result instead of running it again."""
        safe = name.replace("/", "__")
        result_path = self.run_dir / "stages" / f"{safe}.json"
        rng_path = self.run_dir / "stages" / f"{safe}.rng.pt"
        if result_path.exists():
            if rng_path.exists():
                set_rng_state(torch.load(rng_path, map_location="cpu", weights_only=False))
            return json.loads(result_path.read_text())["result"]
        # Return the stored (JSON, key-sorted) form in this session too: a resumed run gets exactly
        # that form from disk, so code iterating a stage's dict sees the same order in both.
        result = json.loads(json.dumps(fn(), sort_keys=True, default=_json_default))
        if self.is_main:
            atomic_torch_save(rng_path, rng_state())
            atomic_write_json(result_path, {"stage": name, "result": result})
        self.fabric.barrier()
        killpoint(f"stage/{name.split('/')[0]}")
        return result


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl; a torn last line (killed mid-write) is ignored."""
    out = []
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def git_commit() -> str:
    """Commit SHA of the source tree (`+dirty` when modified), or 'unknown' outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def comparable_results(results: dict[str, Any]) -> dict[str, Any]:
    """results.json without the fields that legitimately differ between identical runs (session
    fields and `timings`, where recipes put wall-clock measurements)."""
    return {k: v for k, v in results.items() if k not in VOLATILE_RESULT_KEYS}


def prepare_run_dir(cfg: RecipeConfig, run_dir: Path, resume: bool) -> None:
    """Create a new run directory (refusing to clobber one) or check a resumed one."""
    cfg_path = run_dir / "config.yaml"
    if resume:
        if not cfg_path.exists():
            raise ConfigError(f"--resume {run_dir}: no config.yaml there — not a run directory, or a run killed "
                              f"before it started: start it again with `multiteacher run CONFIG --run-dir {run_dir}`")
        return
    if run_dir.is_dir() and all(TMP_MARK in p.name for p in run_dir.iterdir()):
        clean_temp_files(run_dir)  # killed while writing its first file (config.yaml): it never started
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"run directory {run_dir} already exists and is not empty — "
                          f"pass --resume {run_dir} to continue it, or choose another --run-dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cfg_path, config_yaml(cfg))


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> RecipeConfig:
    """The resolved config saved in a run directory (with optional `--set` overrides)."""
    from multiteacher.config import apply_overrides

    path = run_dir / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir}: no config.yaml — pass a run directory made by `multiteacher run`")
    return build_config(apply_overrides(load_yaml(path), overrides), source=str(path))


def execute_run(cfg: RecipeConfig, run_dir: Path, data_dir: Path, cache_dir: Path, resume: bool = False,
                fabric: Any = None) -> dict[str, Any]:
    """Run a recipe end to end: run dir, seeding, Fabric, recipe, results.json, report."""
    from multiteacher.recipes import load_recipe
    from multiteacher.report import write_run_report

    recipe = load_recipe(cfg.recipe)
    run_dir = run_dir.resolve()
    if fabric is None:
        fabric = make_fabric(cfg.fabric)
    if fabric.global_rank == 0:
        prepare_run_dir(cfg, run_dir, resume)
        if resume:
            clean_temp_files(run_dir)
    fabric.barrier()
    meta_path = run_dir / "run.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"sessions": 0}
    meta.update(recipe=cfg.recipe, name=cfg.name, config_hash=config_hash(cfg), sessions=meta["sessions"] + 1)
    if fabric.global_rank == 0:
        atomic_write_json(meta_path, meta)
    seed_everything(cfg.seed)
    ctx = RunContext(run_dir=run_dir, data_dir=data_dir, cache_dir=cache_dir, config=cfg, fabric=fabric,
                     resumed=resume)
    started = time.perf_counter()
    try:
        out = recipe.run(cfg, ctx)
    finally:
        ctx.close_log()
    results = {
        "recipe": cfg.recipe,
        "name": cfg.name,
        "seed": cfg.seed,
        "config_hash": config_hash(cfg),
        "config_hash_without_seed": config_hash(cfg, exclude_seed=True),
        "world_size": fabric.world_size,
        "metrics": out.get("metrics", {}),
        "rows": out.get("rows", []),
        "timings": out.get("timings", {}),
        "commit": git_commit(),
        "sessions": meta["sessions"],
        "wall_time_s": round(time.perf_counter() - started, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"multiteacher": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "config": config_dict(cfg),
    }
    if fabric.global_rank == 0:
        killpoint("run/before_results")
        atomic_write_json(run_dir / "results.json", results)
        write_run_report(run_dir)
    fabric.barrier()
    return results
