"""Run directories and the context a recipe (or your own script) runs in.

`runs/<name>/` holds: `config.yaml` (resolved), `run.json` (config hash, recipe, sessions),
`metrics.jsonl` (one JSON record per line), `stages/*.json` (finished stages), `checkpoints/`,
`results.json`, `report.md`, `plots/` and, when switched on, `tracking/` (TensorBoard / CSV logs).
Only rank 0 writes. `run` (and `execute_run`, its core) is the whole lifecycle of a recipe run:
create or resume, run the recipe, write results and the report. A script without a recipe uses
`RunContext.create(...)`, calls `fit(ctx, ...)`, and ends with `ctx.finish(metrics, rows)`.
`results.json` and `run.json` follow `multiteacher.schema`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from multiteacher import __version__
from multiteacher.config import (
    FabricConfig,
    RecipeConfig,
    TrackingConfig,
    apply_overrides,
    build_config,
    config_dict,
    config_hash,
    config_yaml,
    load_config,
    load_yaml,
)
from multiteacher.engine.setup import make_fabric, rng_state, seed_everything, set_rng_state
from multiteacher.errors import ConfigError, UserError
from multiteacher.io import (
    TMP_MARK,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    clean_temp_files,
    json_default,
    read_metrics,
)
from multiteacher.killpoints import killpoint
from multiteacher.recipe_registry import load_recipe
from multiteacher.report import write_run_report
from multiteacher.rundir import RunDirLock, config_differences, data_fingerprint, disk_error, is_disk_error
from multiteacher.schema import RunInfo, RunResults, read_run_info, validated

VOLATILE_RESULT_KEYS = ("wall_time_s", "cpu_time_s", "timings", "finished_at", "sessions", "versions", "commit")
TRACKING_DIR = "tracking"


@dataclass
class RunContext:
    """Everything a recipe needs: where to read and write, the config, Fabric, logging, stages.

    A recipe gets one from `run` / `execute_run`; a script makes one with `RunContext.create` and
    ends it with `finish`. `log` appends to `metrics.jsonl` and, when the config's `tracking`
    switches them on, to Fabric's experiment loggers (TensorBoard, CSV, W&B, MLflow).

    Args:
        run_dir: the run directory (checkpoints, `metrics.jsonl`, results).
        data_dir: where datasets are read (may be read-only).
        cache_dir: where derived files go (teacher outputs, rendered data).
        config: the run's resolved config (its `seed` seeds every fit).
        fabric: a launched Lightning Fabric (None: one CPU process).
        resumed: whether this session continues a killed run.
        allow_changed: a resume may change the config or data (`--allow-changed`); a `fit` then
            continues with a changed FitConfig instead of refusing it.

    Example:
        >>> ctx = RunContext.create("runs/my-script", seed=0)  # doctest: +SKIP
        >>> fit(ctx, "student", model, train, step_fn, FitConfig(max_steps=100))  # doctest: +SKIP
        >>> ctx.finish(metrics={"acc": 0.9})  # doctest: +SKIP
    """

    run_dir: Path
    data_dir: Path
    cache_dir: Path
    config: RecipeConfig
    fabric: Any = None
    resumed: bool = False
    allow_changed: bool = False
    _log_file: Path = field(init=False)
    _log_handle: Any = field(init=False, default=None, repr=False)  # kept open: one open() per record cost ~70 µs
    _loggers: list[Any] | None = field(init=False, default=None, repr=False)  # built on the first log (rank 0)
    _started: float = field(init=False, default=0.0, repr=False)
    _cpu_started: float = field(init=False, default=0.0, repr=False)
    _sessions: int = field(init=False, default=1, repr=False)
    _lock: RunDirLock | None = field(init=False, default=None, repr=False)  # held by rank 0 for the run's life

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self._log_file = self.run_dir / "metrics.jsonl"
        self._started = time.perf_counter()
        self._cpu_started = time.process_time()
        if self.fabric is None:
            from lightning_fabric import Fabric

            self.fabric = Fabric(accelerator="cpu", devices=1)

    # ----------------------------------------------------------------------------- construction

    @classmethod
    def create(
        cls,
        run_dir: str | os.PathLike[str],
        seed: int | None = None,
        *,
        name: str | None = None,
        recipe: str = "script",
        data_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        accelerator: str = "cpu",
        devices: int | str = 1,
        precision: str = "32-true",
        tracking: TrackingConfig | dict[str, bool] | None = None,
        config: RecipeConfig | None = None,
        resume: bool = False,
        allow_changed: bool = False,
    ) -> RunContext:
        """One call for scripts: run directory, `config.yaml` + `run.json`, Fabric and seeding.

        Why: `fit(ctx, ...)`, `ctx.stage(...)` and `ctx.log(...)` need a context; a script using the
        engine without a recipe gets the same run directory, resume and reports as `multiteacher run`.

        Args:
            run_dir: the run directory (created; refused if it exists and is not empty, unless `resume`).
            seed: seeds Python, NumPy and torch (ignored when `config` is given: its seed is used;
                default 0, or with `resume` the run's own seed).
            name: the run's name (default: the directory's name, made filesystem-safe).
            recipe: what `results.json` names as the recipe (default `"script"`).
            data_dir: data directory (default: `$MULTITEACHER_DATA`, else a user cache dir).
            cache_dir: cache directory (default: `$MULTITEACHER_CACHE`, else a user cache dir).
            accelerator: Fabric accelerator (`cpu`, `cuda`, `auto`, ...).
            devices: devices per node (or `"auto"`).
            precision: Fabric precision (`32-true`, `bf16-mixed`, ...).
            tracking: loggers to switch on, e.g. `{"tensorboard": True}`.
            config: a full config instead of the arguments above (its seed, name and Fabric settings win).
            resume: continue an existing run directory (a killed `fit` resumes from its checkpoint);
                `data_dir` / `cache_dir` default to the run's own.
            allow_changed: with `resume`, accept a config or data that differ from the run's (recorded
                in `run.json`'s `changes`).

        Returns:
            A context with Fabric launched and every RNG seeded; call `finish` at the end. The run
            directory stays locked against other processes until `finish` (or the process ends).

        Raises:
            ConfigError: a non-empty or in-use run directory, a resume whose config or data differ,
                or invalid settings.

        Example:
            >>> ctx = RunContext.create(tmp_path / "run", seed=1)  # doctest: +SKIP
            >>> ctx.seed  # doctest: +SKIP
            1
        """
        from multiteacher.data.registry import resolve_cache_dir, resolve_data_dir

        run_dir = Path(run_dir).expanduser().resolve()
        if seed is None:
            seed = 0
            if resume and (run_dir / "config.yaml").is_file():
                seed = int(load_yaml(run_dir / "config.yaml").get("seed", 0))
        if config is None:
            import re

            try:
                config = RecipeConfig(
                    recipe=recipe, seed=seed, name=name or re.sub(r"[^A-Za-z0-9_.\-]", "_", run_dir.name) or "run",
                    fabric=FabricConfig(accelerator=accelerator, devices=devices, precision=precision),  # type: ignore[arg-type]
                    tracking=tracking or {})  # type: ignore[arg-type]  # validated: errors say `tracking.<key>`
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                msg = first["msg"].removeprefix("Value error, ")
                raise ConfigError(f"RunContext.create: {where or 'arguments'}: {msg}") from None
        data, cache = (resume_dirs(run_dir, data_dir, cache_dir) if resume
                       else (resolve_data_dir(data_dir), resolve_cache_dir(cache_dir)))
        return cls._start(config, run_dir, data, cache, resume, allow_changed=allow_changed)

    @classmethod
    def _start(cls, cfg: RecipeConfig, run_dir: Path, data_dir: Path, cache_dir: Path, resume: bool,
               fabric: Any = None, allow_changed: bool = False, recipe: Any = None) -> RunContext:
        """Fabric, run directory (claimed and locked, or resumed and checked), run.json, seeding:
        what precedes a recipe's `run`."""
        run_dir = Path(run_dir).resolve()
        data_dir, cache_dir = Path(data_dir).resolve(), Path(cache_dir).resolve()
        if fabric is None:
            fabric = make_fabric(cfg.fabric)
        lock = RunDirLock(run_dir) if fabric.global_rank == 0 else None
        if recipe is None:  # a script's context still fingerprints data the way the recipe does, if there is one
            try:
                recipe = load_recipe(cfg.recipe)
            except UserError:
                recipe = None
        try:
            if lock is not None:
                prepare_run_dir(cfg, run_dir, resume, lock)
                if resume:
                    clean_temp_files(run_dir)
            fabric.barrier()
            meta_path = run_dir / "run.json"
            old = read_run_info(run_dir).model_dump() if meta_path.exists() else {"sessions": 0}
            now = {"config": config_dict(cfg), "data_dir": str(data_dir), "cache_dir": str(cache_dir),
                   "data_fingerprint": data_fingerprint(config_dict(cfg), data_dir, (run_dir, cache_dir), recipe, cfg)}
            meta = dict(old)
            if resume and old["sessions"]:
                changes = resume_differences(old, cfg, now)
                if changes and not allow_changed:
                    more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
                    raise ConfigError(f"--resume {run_dir}: {changes[0]}{more} — resume it unchanged, start a new "
                                      "run, or pass --allow-changed to continue with what differs")
                if changes:
                    meta["changes"] = [*old.get("changes", []), {"session": old["sessions"] + 1,
                                                                   "differences": changes}]
                    if lock is not None:
                        atomic_write_text(run_dir / "config.yaml", config_yaml(cfg))
            meta.update(recipe=cfg.recipe, name=cfg.name, config_hash=config_hash(cfg), sessions=old["sessions"] + 1,
                        **now)
            if lock is not None:
                atomic_write_json(meta_path, validated(RunInfo, meta, meta_path))
        except BaseException as e:
            if lock is not None:
                lock.remove_if_failed() if isinstance(e, UserError | OSError) else lock.release()
            if isinstance(e, OSError) and is_disk_error(e):
                then = f"resume with `multiteacher run --resume {run_dir}`" if resume else "run it again"
                raise disk_error(e, f"cannot write run directory {run_dir}",
                                 f"free space or fix permissions, then {then} (or choose another --run-dir)") from None
            raise
        seed_everything(cfg.seed)
        ctx = cls(run_dir=run_dir, data_dir=data_dir, cache_dir=cache_dir, config=cfg, fabric=fabric, resumed=resume,
                  allow_changed=allow_changed)
        ctx._sessions = meta["sessions"]
        ctx._lock = lock
        return ctx

    def release(self) -> None:
        """Release the run directory's lock (after `finish`; the process ending releases it too).

        Returns:
            None.

        Example:
            >>> ctx.release()  # doctest: +SKIP
        """
        if self._lock is not None:
            self._lock.release()

    def _fail(self) -> bool:
        """After a failure: remove a new run directory that holds nothing worth keeping; release the lock."""
        if self._lock is None:
            return False
        return self._lock.remove_if_failed() if not self.resumed else (self._lock.release() or False)

    # ------------------------------------------------------------------------------ properties

    @property
    def seed(self) -> int:
        """The config's seed (what `fit` seeds its data order with)."""
        return self.config.seed

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (global rank 0)."""
        return self.fabric.global_rank == 0

    def path(self, *rel: str) -> Path:
        """A path inside the run directory, its parent folder created.

        Args:
            *rel: path parts below the run directory.

        Returns:
            The absolute path (the file itself is not created).

        Example:
            >>> ctx.path("artifacts", "teacher.pt")  # doctest: +SKIP
            PosixPath('/.../runs/demo/artifacts/teacher.pt')
        """
        p = self.run_dir.joinpath(*rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # --------------------------------------------------------------------------------- logging

    def log(self, metrics: dict[str, Any], step: int | None = None, sync: bool = True, **tags: Any) -> None:
        """Append one record to metrics.jsonl (rank 0), and send its numbers to the tracking loggers.

        `sync=False` skips the fsync (a SIGKILL still loses nothing written); the fit loop uses it
        for per-step records and calls `sync_log()` before each checkpoint, so the log is durable
        whenever a checkpoint is. Tracking loggers get each numeric value under the tag values
        joined by `/` (`fit="teacher"` -> `teacher/train/loss`).

        Args:
            metrics: `{name: value}`; tensors and numbers are stored as floats.
            step: the step the values belong to (kept in the record).
            sync: fsync the file after writing.
            **tags: extra fields of the record (e.g. `fit="teacher"`).

        Returns:
            None.

        Example:
            >>> ctx.log({"val/acc": 0.91}, step=100, fit="student")  # doctest: +SKIP
        """
        if not self.is_main:
            return
        values = {k: (v if type(v) is float else float(v) if isinstance(v, int | float) or torch.is_tensor(v) else v)
                  for k, v in metrics.items()}
        rec = {**tags, **({"step": step} if step is not None else {}), **values}
        f = self._log_handle
        if f is None or f.closed:
            f = self._log_handle = open(self._log_file, "a")  # noqa: SIM115 — closed by truncate_log / close_log
        f.write(json.dumps(rec, sort_keys=True) + "\n")
        f.flush()  # in the kernel now: a SIGKILL loses nothing written
        if sync:
            os.fsync(f.fileno())
        self._track(values, step, tags)

    def _track(self, values: dict[str, Any], step: int | None, tags: dict[str, Any]) -> None:
        tracking = getattr(self.config, "tracking", None)
        if tracking is None or not tracking.any_on():
            return
        if self._loggers is None:
            self._loggers = make_loggers(tracking, self.run_dir / TRACKING_DIR, self.config.name)
        prefix = "/".join(str(v) for v in tags.values())
        numbers = {f"{prefix}/{k}" if prefix else k: float(v) for k, v in values.items()
                   if isinstance(v, int | float) and not isinstance(v, bool)}
        if numbers:
            for logger in self._loggers:
                logger.log_metrics(numbers, step=step)

    def close_log(self) -> None:
        """Close the metrics.jsonl handle (reopened by the next `log`); tracking loggers stay open.

        Returns:
            None.

        Example:
            >>> ctx.close_log()  # doctest: +SKIP
        """
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def close(self) -> None:
        """Close metrics.jsonl and flush / finalize the tracking loggers (end of a session).

        `finish` (and `execute_run`) call it; a script that does not call `finish` should.

        Returns:
            None.

        Example:
            >>> ctx.close()  # doctest: +SKIP
        """
        self.close_log()
        for logger in self._loggers or []:
            logger.finalize("success")
        self._loggers = None

    def sync_log(self) -> None:
        """fsync metrics.jsonl, so the log is durable whenever a checkpoint is (called before checkpoints).

        Returns:
            None.

        Example:
            >>> ctx.sync_log()  # doctest: +SKIP
        """
        if self.is_main and self._log_file.exists():
            fd = os.open(self._log_file, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def truncate_log(self, fit: str, after_step: int) -> None:
        """Drop records of `fit` logged after `after_step` (a resumed fit re-logs them).

        Args:
            fit: the fit's name (the `fit` tag of its records).
            after_step: the step of the checkpoint the fit resumes from.

        Returns:
            None.

        Example:
            >>> ctx.truncate_log("student", after_step=200)  # doctest: +SKIP
        """
        if not self.is_main or not self._log_file.exists():
            return
        self.close_log()  # the file is replaced: a handle would keep writing to the old one
        keep = [r for r in read_metrics(self._log_file)
                if not (r.get("fit") == fit and r.get("step", -1) > after_step)]
        atomic_write_text(self._log_file, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))

    # ---------------------------------------------------------------------------------- stages

    def stage(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run `fn()` once: its JSON-able result (and the RNG state after it) is stored under
        `stages/`, and a resumed run returns the stored result instead of running it again.

        Args:
            name: the stage's name (unique within the run; `/` allowed).
            fn: computes the result (numbers, strings, lists, dicts; numpy/torch scalars are converted).

        Returns:
            The result in its stored JSON form (dict keys sorted), in this session and on resume.

        Example:
            >>> split = ctx.stage("split", lambda: {"train": [0, 1], "val": [2]})  # doctest: +SKIP
        """
        safe = name.replace("/", "__")
        result_path = self.run_dir / "stages" / f"{safe}.json"
        rng_path = self.run_dir / "stages" / f"{safe}.rng.pt"
        if result_path.exists():
            if rng_path.exists():
                set_rng_state(torch.load(rng_path, map_location="cpu", weights_only=False))
            return json.loads(result_path.read_text())["result"]
        # Return the stored (JSON, key-sorted) form in this session too: a resumed run gets exactly
        # that form from disk, so code iterating a stage's dict sees the same order in both.
        result = json.loads(json.dumps(fn(), sort_keys=True, default=json_default))
        if self.is_main:
            atomic_torch_save(rng_path, rng_state())
            atomic_write_json(result_path, {"stage": name, "result": result})
        self.fabric.barrier()
        killpoint(f"stage/{name.split('/')[0]}")
        return result

    # ---------------------------------------------------------------------------------- finish

    def finish(self, metrics: dict[str, Any] | None = None, rows: list[dict[str, Any]] | None = None,
               timings: dict[str, Any] | None = None, report: bool = True) -> RunResults:
        """Write `results.json` (validated against `RunResults`) and `report.md`; close the logs.

        Why: a script's run directory then looks like a recipe's, so `multiteacher report` and
        `write_run_report` work on it.

        Args:
            metrics: headline metrics `{name: value}`.
            rows: result rows (what `multiteacher report` aggregates over runs).
            timings: wall-clock measurements (ignored when runs are compared).
            report: also write `report.md` and `plots/`.

        Returns:
            The results as written.

        Example:
            >>> ctx.finish(metrics={"acc": 0.9}, rows=[{"model": "student", "acc": 0.9}]).metrics  # doctest: +SKIP
            {'acc': 0.9}
        """
        results = self._write_results({"metrics": metrics or {}, "rows": rows or [], "timings": timings or {}},
                                       report=report)
        return RunResults.model_validate(results)

    def _write_results(self, out: dict[str, Any], report: bool = True) -> dict[str, Any]:
        self.close()
        cfg = self.config
        results = {
            "recipe": cfg.recipe,
            "name": cfg.name,
            "seed": cfg.seed,
            "config_hash": config_hash(cfg),
            "config_hash_without_seed": config_hash(cfg, exclude_seed=True),
            "world_size": self.fabric.world_size,
            "metrics": out.get("metrics", {}),
            "rows": out.get("rows", []),
            "timings": out.get("timings", {}),
            "commit": git_commit(),
            "sessions": self._sessions,
            "wall_time_s": round(time.perf_counter() - self._started, 3),
            "cpu_time_s": round(time.process_time() - self._cpu_started, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": {"multiteacher": __version__, "torch": torch.__version__,
                         "python": platform.python_version()},
            "config": config_dict(cfg),
        }
        path = self.run_dir / "results.json"
        validated(RunResults, results, path)
        if self.is_main:
            killpoint("run/before_results")
            atomic_write_json(path, results)
            if report:
                write_run_report(self.run_dir)
        self.fabric.barrier()
        self.release()
        return results


def make_loggers(tracking: TrackingConfig, root: Path, name: str) -> list[Any]:
    """Fabric experiment loggers for the switched-on entries of a `tracking` config section.

    Each session of a run writes a new `version_N` under `root/<logger>/` (a resumed run keeps
    the earlier sessions' logs).

    Args:
        tracking: which loggers.
        root: where local loggers write (`<run dir>/tracking`).
        name: the run's name (W&B / MLflow run name).

    Returns:
        Logger objects with `log_metrics(metrics, step)` and `finalize(status)`.

    Example:
        >>> [type(lg).__name__ for lg in make_loggers(TrackingConfig(csv=True), tmp_path, "r")]  # doctest: +SKIP
        ['CSVLogger']
    """
    loggers: list[Any] = []
    if tracking.tensorboard:
        from lightning_fabric.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(root_dir=root, name="tensorboard"))
    if tracking.csv:
        from lightning_fabric.loggers import CSVLogger

        loggers.append(CSVLogger(root_dir=root, name="csv", flush_logs_every_n_steps=1))
    if tracking.wandb:
        from lightning.pytorch.loggers import WandbLogger

        loggers.append(WandbLogger(name=name, save_dir=str(root)))
    if tracking.mlflow:
        from lightning.pytorch.loggers import MLFlowLogger

        loggers.append(MLFlowLogger(run_name=name, save_dir=str(root / "mlruns")))
    return loggers


def git_commit() -> str:
    """Commit SHA of the source tree (`+dirty` when modified), or 'unknown' outside git.

    Returns:
        The SHA string recorded in results.json's `commit`.

    Example:
        >>> git_commit()  # doctest: +SKIP
        '8907fee...+dirty'
    """
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
    fields and `timings`, where recipes put wall-clock measurements).

    Args:
        results: a results dict.

    Returns:
        The dict without `VOLATILE_RESULT_KEYS`; equal for a killed-and-resumed and an uninterrupted run.

    Example:
        >>> comparable_results({"metrics": {"acc": 1.0}, "wall_time_s": 3.2, "commit": "abc"})
        {'metrics': {'acc': 1.0}}
    """
    return {k: v for k, v in results.items() if k not in VOLATILE_RESULT_KEYS}


def prepare_run_dir(cfg: RecipeConfig, run_dir: Path, resume: bool, lock: RunDirLock | None = None) -> None:
    """Claim a new run directory (atomically; refusing to clobber one) or lock and check a resumed one.

    Why a lock: two processes started into one directory must not both run there, nor delete each
    other's files; the loser gets one line. The lock is held until `lock.release()` (or the
    process ends, so a SIGKILLed run can be resumed at once).

    Args:
        cfg: the resolved config (saved as `config.yaml` in a new directory).
        run_dir: the run directory.
        resume: check that `run_dir` is a run directory instead of creating one.
        lock: the lock to take (default: a new one, released again before returning).

    Returns:
        None.

    Raises:
        ConfigError: a non-empty or in-use directory, a file, or (with `resume`) no `config.yaml`.

    Example:
        >>> prepare_run_dir(cfg, Path("runs/demo"), resume=False)  # doctest: +SKIP
    """
    own = lock is None
    lock = lock or RunDirLock(run_dir)
    cfg_path = run_dir / "config.yaml"
    if resume:
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"--resume {run_dir}: that is a file, not a run directory")
        if not cfg_path.exists():
            raise ConfigError(f"--resume {run_dir}: no config.yaml there — not a run directory, or a run killed "
                              f"before it started: start it again with `multiteacher run CONFIG --run-dir {run_dir}`")
        lock.acquire(new=False)
    else:
        lock.acquire(new=True)
        try:
            atomic_write_text(cfg_path, config_yaml(cfg))
        except BaseException:
            lock.remove_if_failed()
            raise
    if own:
        lock.release()


def resume_dirs(run_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None,
                cache_dir: str | os.PathLike[str] | None) -> tuple[Path, Path]:
    """The data and cache directories of a resumed run: the given ones, else the ones it started with.

    Why: a resume must read the same data as the start, whatever `$MULTITEACHER_DATA` says now;
    a different explicit directory is then a difference the resume refuses (unless allowed).

    Args:
        run_dir: the run directory (its `run.json` holds the original directories).
        data_dir: an explicit data directory, or None.
        cache_dir: an explicit cache directory, or None.

    Returns:
        `(data_dir, cache_dir)`, resolved.

    Example:
        >>> resume_dirs("runs/demo", None, None)  # doctest: +SKIP
        (PosixPath('/data'), PosixPath('/cache'))
    """
    from multiteacher.data.registry import resolve_cache_dir, resolve_data_dir

    stored: dict[str, Any] = {}
    if (Path(run_dir) / "run.json").is_file():
        stored = read_run_info(run_dir).model_dump()
    data = resolve_data_dir(data_dir) if data_dir or not stored.get("data_dir") else Path(stored["data_dir"])
    if cache_dir or not stored.get("cache_dir"):
        cache = resolve_cache_dir(cache_dir)
    else:
        cache = Path(stored["cache_dir"])
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise disk_error(e, f"--resume {run_dir}: cannot create the run's cache dir {cache}",
                             "pass --cache-dir DIR --allow-changed") from None
    return data, cache


def resume_differences(old: dict[str, Any], cfg: RecipeConfig, now: dict[str, Any]) -> list[str]:
    """What differs between a run's `run.json` and a resume: config fields, data and cache directories, data.

    Args:
        old: the run's `run.json`.
        cfg: the config the resume would use (its saved `config.yaml` plus any `--set`).
        now: the resume's `config`, `data_dir`, `cache_dir` and `data_fingerprint` (as `run.json` stores them).

    Returns:
        One line per difference (empty: the resume continues the same run).

    Example:
        >>> resume_differences(read_run_info("runs/demo").model_dump(), cfg, now)  # doctest: +SKIP
        ["config field 'fit.lr' differs: 0.001 in the run, 0.01 now"]
    """
    out: list[str] = []
    if isinstance(old.get("config"), dict):
        a = {k: v for k, v in old["config"].items() if k != "tracking"}
        b = {k: v for k, v in now["config"].items() if k != "tracking"}
        out += config_differences(a, b)
    if not out and old.get("config_hash") and old["config_hash"] != config_hash(cfg):
        out.append(f"the config differs from the one the run started with (config hash {old['config_hash']} in "
                   f"the run, {config_hash(cfg)} now; config.yaml edited?)")
    for key, what in (("data_dir", "data dir"), ("cache_dir", "cache dir")):
        if old.get(key) and Path(old[key]) != Path(now[key]):
            out.append(f"{what} differs: {old[key]} in the run, {now[key]} now")
    fp_old, fp_new = old.get("data_fingerprint"), now["data_fingerprint"]
    if isinstance(fp_old, dict):
        for key in sorted(set(fp_old) | set(fp_new)):
            if key not in fp_new:
                out.append(f"data named by '{key}' is gone from {now['data_dir']}")
            elif fp_old.get(key) != fp_new[key]:
                named = "the recipe's data" if key == "recipe" else f"data named by '{key}'"
                out.append(f"{named} changed since the run started (files added, removed or modified)")
    return out


def unfinished_reason(run_dir: str | os.PathLike[str]) -> str | None:
    """Why a run directory is not a finished run, in one line (None: `results.json` is there).

    Why: `multiteacher eval` must not score a student from a checkpoint of a fit killed half-way
    (nor skip what was never trained) as if the run had finished.

    Args:
        run_dir: the run directory.

    Returns:
        None for a finished run, else e.g. `"no results.json; fit 'student_kd' stopped at step 120 of 200"`.

    Example:
        >>> unfinished_reason("runs/killed")  # doctest: +SKIP
        "no results.json; fit 'student_kd' stopped at step 120 of 200; finished fits: student_ce, teacher"
    """
    run_dir = Path(run_dir)
    if (run_dir / "results.json").is_file():
        return None
    parts = ["no results.json"]
    ck = run_dir / "checkpoints"
    killed, done = [], []
    if ck.is_dir():
        for last in sorted(ck.rglob("last.pt")):
            name = str(last.parent.relative_to(ck))
            try:
                state = torch.load(last, map_location="cpu", weights_only=False)
                total = (state.get("fit_config") or {}).get("max_steps")
                of = f" of {total}" if total else ""
                killed.append(f"fit '{name}' stopped at step {state['state']['step']}{of}")
            except Exception:  # a torn or foreign file still means "unfinished"
                killed.append(f"fit '{name}' stopped half-way")
        done = sorted(str(p.parent.relative_to(ck)) for p in ck.rglob("done.json"))
    parts += killed[:8] + ([f"{len(killed) - 8} more fits stopped"] if len(killed) > 8 else [])
    if done:
        parts.append(f"finished fits: {_some(done)}")
    if not killed and not done:
        parts.append("no finished fit under checkpoints/")
        stages = sorted(p.stem.replace("__", "/") for p in (run_dir / "stages").glob("*.json")
                        if TMP_MARK not in p.name)
        if stages:
            parts.append(f"finished stages: {_some(stages)}")
    return "; ".join(parts)


def _some(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> RecipeConfig:
    """The resolved config saved in a run directory (with optional `--set` overrides).

    Args:
        run_dir: a run directory (it holds `config.yaml`).
        overrides: `KEY=VALUE` strings applied on top.

    Returns:
        The recipe's validated `Config`.

    Raises:
        ConfigError: no config.yaml there, or it no longer validates.

    Example:
        >>> load_run_config(Path("results/example/s0")).seed  # doctest: +SKIP
        0
    """
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        raise ConfigError(f"{run_dir}: that is a file, not a run directory — pass a run directory made by "
                          "`multiteacher run`")
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise ConfigError(f"{run_dir}: no config.yaml — pass a run directory made by `multiteacher run`")
    return build_config(apply_overrides(load_yaml(path), overrides), source=str(path))


def execute_run(cfg: RecipeConfig, run_dir: Path, data_dir: Path, cache_dir: Path, resume: bool = False,
                fabric: Any = None, allow_changed: bool = False) -> dict[str, Any]:
    """Run a recipe end to end: run dir (claimed and locked), seeding, Fabric, recipe, results.json, report.

    A new run directory that fails with a user error (or a full / read-only disk) before writing
    any checkpoint is removed; one with checkpoints is kept for `--resume`.

    Args:
        cfg: a validated config (its `recipe` names the recipe module).
        run_dir: the run directory.
        data_dir: the data directory the recipe reads.
        cache_dir: where derived data (teacher outputs, renders) go.
        resume: continue a killed run in `run_dir` (its config, data and directories must be the
            same as at the start, see `resume_differences`).
        fabric: an already launched Fabric (default: built from `cfg.fabric`).
        allow_changed: with `resume`, continue although the config or data differ (recorded in `run.json`).

    Returns:
        The results dict written to `results.json` (follows `multiteacher.schema.RunResults`).

    Example:
        >>> res = execute_run(load_config("recipes/example-tiny.yaml"), Path("runs/t"), data, cache)  # doctest: +SKIP
    """
    recipe = load_recipe(cfg.recipe)
    ctx = RunContext._start(cfg, Path(run_dir), data_dir, cache_dir, resume, fabric, allow_changed, recipe)
    try:
        try:
            out = recipe.run(cfg, ctx)
        finally:
            ctx.close()
        if not isinstance(out, dict):
            raise ConfigError(f"recipe {cfg.recipe!r}: run() returned {type(out).__name__}, expected a dict with "
                              "'metrics' (and optionally 'rows', 'timings')")
        return ctx._write_results(out)
    except (UserError, OSError) as e:
        if isinstance(e, OSError) and not is_disk_error(e):
            raise
        removed = ctx._fail()
        if isinstance(e, OSError):
            then = "run it again" if removed else f"resume with `multiteacher run --resume {ctx.run_dir}`"
            raise disk_error(e, f"{e.filename or ctx.run_dir}", f"free space or fix permissions, then {then}") from None
        raise
    finally:
        ctx.release()


def run(
    config: str | os.PathLike[str] | RecipeConfig | None = None,
    run_dir: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    allow_changed: bool = False,
) -> RunResults:
    """Run a recipe config end to end — what `multiteacher run` does — and return its results.

    Why: scripts and notebooks run recipes (built-in or their own) without a shell, with the same
    run directory, resume and report as the CLI.

    Args:
        config: a recipe YAML path or a `RecipeConfig`; may be None with `resume` (the run's saved
            config is used; when given it must equal the saved one).
        run_dir: the run directory (default `default_run_dir(cfg, overrides)`: `runs/<name>`, or
            `runs/<name>-s<seed>` when the overrides set `seed`; required with `resume`).
        overrides: `KEY=VALUE` overrides like `--set` (`["fit.lr=1e-3", "seed=2"]`).
        data_dir: data directory (default: `$MULTITEACHER_DATA`, else a user cache dir; on resume the run's own).
        cache_dir: cache directory (default: `$MULTITEACHER_CACHE`, else a user cache dir; on resume the run's own).
        resume: continue the killed (or finished) run in `run_dir`; refused when its config, data
            or directories differ from the start's.
        allow_changed: with `resume`, continue anyway (what differs is recorded in `run.json`'s `changes`).

    Returns:
        The validated `results.json` (`RunResults`; `.metrics`, `.rows`, `.model_dump()`).

    Raises:
        ConfigError / DataError: a bad config, run directory or data, a run directory in use by
            another process, a resume that differs; a new run directory that failed this way
            before writing a checkpoint is removed.

    Example:
        >>> import multiteacher as mt
        >>> res = mt.run("recipes/example-tiny.yaml", run_dir="runs/demo", overrides=["seed=1"])  # doctest: +SKIP
        >>> res.metrics["student_kd/test_acc"]  # doctest: +SKIP
        0.9
    """
    from multiteacher.data.registry import resolve_cache_dir, resolve_data_dir

    overrides = list(overrides)
    given = _as_config(config, overrides) if config is not None else None
    if resume:
        if run_dir is None:
            raise ConfigError("run(resume=True) needs run_dir: the run directory to continue")
        path = Path(run_dir)
        cfg = load_run_config(path, overrides)
        if given is not None and config_hash(given) != config_hash(cfg):
            raise ConfigError(f"--resume {path}: {config if not isinstance(config, RecipeConfig) else 'the config'} "
                              "differs from the run's saved config.yaml — resume without CONFIG, or start a new run")
    else:
        if given is None:
            raise ConfigError("run: give a CONFIG file (e.g. recipes/example-tiny.yaml) or --resume RUN_DIR")
        cfg = given
        path = Path(run_dir) if run_dir is not None else default_run_dir(cfg, overrides)
    if resume:
        data, cache = resume_dirs(path, data_dir, cache_dir)
    else:
        data, cache = resolve_data_dir(data_dir), resolve_cache_dir(cache_dir)
    results = execute_run(cfg, path, data, cache, resume=resume, allow_changed=allow_changed)
    return RunResults.model_validate(results)


def default_run_dir(cfg: RecipeConfig, overrides: Sequence[str] = ()) -> Path:
    """`runs/<name>`, or `runs/<name>-s<seed>` when the overrides set the seed (`--set seed=N`).

    Why: repeats of one config over seeds are usually started side by side
    (`for s in 0 1 2; do multiteacher run C --set seed=$s & done`); each gets its own directory
    instead of all but one being refused, while a plain run keeps the documented `runs/<name>`.

    Args:
        cfg: the resolved config.
        overrides: the `KEY=VALUE` overrides given.

    Returns:
        The relative run directory.

    Example:
        >>> cfg = RecipeConfig(recipe="example", name="demo", seed=2)
        >>> str(default_run_dir(cfg)), str(default_run_dir(cfg, ["seed=2"]))
        ('runs/demo', 'runs/demo-s2')
    """
    seeded = any(o.split("=", 1)[0].strip() == "seed" for o in overrides)
    return Path("runs") / (f"{cfg.name}-s{cfg.seed}" if seeded else cfg.name)


def _as_config(config: str | os.PathLike[str] | RecipeConfig, overrides: list[str]) -> RecipeConfig:
    if isinstance(config, RecipeConfig):
        if not overrides:
            return config
        return build_config(apply_overrides(config_dict(config), overrides), source="config")
    return load_config(config, overrides)
