"""The documented schema of a run directory's `results.json` and `run.json` (pydantic models).

Both files are validated when a run writes them and when `multiteacher report`, `write_run_report`
or `multiteacher eval` read them, so any run directory that follows the schema — made by the CLI,
by `multiteacher.runs.run`, or by a script through `RunContext.create(...).finish(...)` — can be
reported, and one that does not gets one line naming the file and every missing or invalid field.
Recipes put their own keys in `metrics`, `rows` and `timings` (and extra top-level keys are kept).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from multiteacher.errors import DataError

SCHEMA_DOCS = "see multiteacher.schema (the results schema page of the docs)"


class _FileModel(BaseModel):
    # extra="allow": a recipe (or a later version) may add top-level keys; they are kept as they are.
    model_config = ConfigDict(extra="allow")


class RunInfo(_FileModel):
    """`run.json`: what a run directory holds and how many sessions (start + resumes) it has had.

    A resume compares its config, data and directories with the ones stored here and refuses a
    difference unless `--allow-changed` is given (then recorded in `changes`).

    Example:
        >>> RunInfo(recipe="example", name="demo", config_hash="0123456789abcdef", sessions=1).sessions
        1
    """

    recipe: str = Field(..., description="The config's `recipe:` (registered name or dotted module path).")
    name: str = Field(..., description="The config's `name:`.")
    config_hash: str = Field(..., description="Short SHA-256 of the resolved config (`multiteacher.config."
                                              "config_hash`); a resume checks it.")
    sessions: int = Field(..., ge=0, description="Number of sessions that worked on this run (1 + resumes).")
    config: dict[str, Any] | None = Field(None, description="The resolved config the run started with (a resume "
                                          "names each field that differs from it).")
    data_dir: str | None = Field(None, description="The data directory the run reads; a resume without "
                                                    "`--data-dir` uses it again.")
    cache_dir: str | None = Field(None, description="The cache directory the run uses; a resume without "
                                                     "`--cache-dir` uses it again.")
    data_fingerprint: dict[str, str] | None = Field(None, description="Per data path the config names (and "
                                                    "`recipe` for a recipe's own `data_fingerprint`): a hash of "
                                                    "its files' names, sizes and times; a resume checks it.")
    changes: list[dict[str, Any]] = Field(default_factory=list, description="What `--resume --allow-changed` "
                                          "accepted: `{session, differences}` per such session.")


class RunResults(_FileModel):
    """`results.json`: a finished run's metrics, result rows and provenance.

    `rows` are what `multiteacher report` aggregates: non-numeric fields group rows (except `seed`
    and `fold`), numeric fields get mean ± std over runs. A run without rows is reported from its
    `metrics`.

    Example:
        >>> r = RunResults(recipe="script", name="demo", seed=0, config_hash="0123456789abcdef",
        ...                metrics={"acc": 0.9}, rows=[{"model": "student", "acc": 0.9}])
        >>> r.rows[0]["acc"]
        0.9
    """

    recipe: str = Field(..., description="The config's `recipe:` (registered name or dotted module path).")
    name: str = Field(..., description="The config's `name:`.")
    seed: int = Field(..., description="The config's `seed:`.")
    config_hash: str = Field(..., description="Short SHA-256 of the resolved config.")
    config_hash_without_seed: str = Field("", description="The same hash with `seed` left out: repeats of one "
                                                          "setting share it.")
    world_size: int = Field(1, ge=1, description="Number of processes the run trained with.")
    metrics: dict[str, Any] = Field(..., description="Headline metrics, `{name: value}` (recipe-specific names; "
                                                     "values are numbers or short strings).")
    rows: list[dict[str, Any]] = Field(default_factory=list, description="Result table rows (recipe-specific "
                                       "columns); the input of `multiteacher report`.")
    timings: dict[str, Any] = Field(default_factory=dict, description="Wall-clock measurements a recipe reports "
                                    "(ignored when comparing runs).")
    commit: str = Field("unknown", description="Git commit of the source (`+dirty` when modified), or 'unknown'.")
    sessions: int = Field(1, ge=1, description="Number of sessions that worked on the run (1 + resumes).")
    wall_time_s: float | None = Field(None, ge=0, description="Wall time of the last session in seconds.")
    cpu_time_s: float | None = Field(None, ge=0, description="CPU seconds of the last session's main process "
                                     "(all its threads; not data-loader workers): the run's own compute, which "
                                     "other jobs sharing the CPU do not inflate as they do wall time.")
    finished_at: str | None = Field(None, description="UTC time the results were written (ISO 8601).")
    versions: dict[str, str] = Field(default_factory=dict, description="Versions of multiteacher, torch and "
                                     "Python that made the run.")
    config: dict[str, Any] = Field(default_factory=dict, description="The resolved config (as in `config.yaml`).")


class EvalRecord(_FileModel):
    """`eval/eval-<tag>.json`: what `multiteacher eval` measured for a finished run.

    Example:
        >>> EvalRecord(data_dir="/data", overrides=[], metrics={"acc": 0.9}).metrics["acc"]
        0.9
    """

    data_dir: str = Field(..., description="The data directory the run was evaluated on.")
    overrides: list[str] = Field(default_factory=list, description="`--set` overrides given to `eval`.")
    metrics: dict[str, Any] = Field(..., description="The recipe's `evaluate()` metrics, `{name: value}`.")


def schema_error(path: Path | str, err: ValidationError) -> DataError:
    """One-line DataError naming the file and every missing or invalid field of a validation error.

    Args:
        path: the file that failed (`.../results.json`).
        err: pydantic's error.

    Returns:
        The DataError to raise.

    Example:
        >>> try:
        ...     RunInfo.model_validate({"name": "x"})
        ... except ValidationError as e:
        ...     print(schema_error("run.json", e))  # doctest: +ELLIPSIS
        run.json: missing field(s) 'recipe', 'config_hash', 'sessions' — ...
    """
    missing, invalid = [], []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "missing":
            missing.append(f"'{field}'")
        else:
            invalid.append(f"'{field}' ({e['msg']})")
    parts = []
    if missing:
        parts.append(f"missing field(s) {', '.join(missing)}")
    if invalid:
        parts.append(f"invalid field(s) {', '.join(invalid)}")
    return DataError(f"{path}: {'; '.join(parts)} — {SCHEMA_DOCS}")


def _read(path: Path, model: type[BaseModel], hint: str) -> Any:
    if not path.exists():
        raise DataError(f"{path}: not found — {hint}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: top level must be a JSON object — {SCHEMA_DOCS}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise schema_error(path, e) from None


def read_results(path: str | Path) -> RunResults:
    """Read and validate a `results.json` (a run directory stands for its `results.json`).

    Args:
        path: a run directory or a results.json file.

    Returns:
        The validated results.

    Raises:
        DataError: no file, invalid JSON, or a missing/invalid field (one line naming them).

    Example:
        >>> read_results("results/example/s0").name  # doctest: +SKIP
        'example-s0'
    """
    path = Path(path)
    f = path / "results.json" if path.is_dir() else path
    if not f.exists():
        raise DataError(f"{f}: no results.json — the run has not finished (resume it with --resume)")
    return _read(f, RunResults, "")


def read_run_info(run_dir: str | Path) -> RunInfo:
    """Read and validate a run directory's `run.json`.

    Args:
        run_dir: the run directory.

    Returns:
        The validated run info.

    Raises:
        DataError: no run.json, invalid JSON, or a missing/invalid field.

    Example:
        >>> read_run_info("results/example/s0").sessions  # doctest: +SKIP
        1
    """
    return _read(Path(run_dir) / "run.json", RunInfo, "not a run directory made by multiteacher")


def validated(model: type[BaseModel], data: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Validate `data` against `model` before it is written to `path`; return it unchanged.

    Why unchanged: what a run writes must be exactly what its recipe produced (no coercions), the
    check only guarantees that readers will accept it.

    Args:
        model: `RunResults` or `RunInfo`.
        data: the dict about to be written.
        path: the file it goes to (named in the error).

    Returns:
        `data` itself.

    Raises:
        DataError: the dict does not follow the schema (a bug in the writer).

    Example:
        >>> validated(RunInfo, {"recipe": "r", "name": "n", "config_hash": "h", "sessions": 1}, "run.json")["name"]
        'n'
    """
    try:
        model.model_validate(data)
    except ValidationError as e:
        raise schema_error(path, e) from None
    return data
