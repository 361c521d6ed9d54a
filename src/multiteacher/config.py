"""Typed recipe configs: YAML + `--set a.b=c` overrides -> a validated pydantic model.

Every section is a `StrictModel` (unknown keys rejected). A YAML file may say `defaults: base.yaml`
(relative to itself) to inherit and override another file — the `-tiny` twins use this. Errors are
one line naming the file, the dotted field and the fix (for unknown keys: the closest valid keys).
The resolved config is saved with each run, and its hash identifies the run's settings.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from multiteacher.errors import ConfigError

#: The largest integer a config field accepts unless it opts out (`json_schema_extra={"unbounded": True}`):
#: a count, size or step number above it cannot be meant and would only fail later (out of memory, overflow).
MAX_CONFIG_INT = 2**31 - 1

#: The longest piece of user input quoted in an error message (longer values are cut with "...").
MAX_QUOTED = 80


def quote(value: Any, limit: int = MAX_QUOTED) -> str:
    """`repr(value)` cut after `limit` characters, so an error that quotes its input stays one short line.

    Args:
        value: anything the user gave.
        limit: the most characters kept.

    Returns:
        The (possibly shortened) repr.

    Example:
        >>> quote("x" * 100, limit=10)
        "'xxxxxxxxx... (102 chars)"
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return text[:limit] + f"... ({len(text)} chars)"


def _too_big(value: Any) -> int | None:
    """The first int in `value` (a scalar, or nested in lists/tuples/dict values) beyond MAX_CONFIG_INT."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) > MAX_CONFIG_INT else None
    if isinstance(value, list | tuple | set):
        items: Any = value
    elif isinstance(value, dict):
        items = value.values()
    else:
        return None
    for item in items:
        found = _too_big(item)
        if found is not None:
            return found
    return None


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment.

    Two general guards hold for every field of every section, so a value that passes validation
    cannot blow up later: floats must be finite (`inf`/`nan` are refused; a field opts in with
    `Field(..., allow_inf_nan=True)`), and integers must lie within ±`MAX_CONFIG_INT` (a field opts
    out with `json_schema_extra={"unbounded": True}`); fields whose meaning demands a tighter range
    say so themselves (`le=`).

    Example:
        >>> class Section(StrictModel):
        ...     size: int = Field(3, gt=0, description="How many.")
        >>> Section(size=4).size
        4
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _bounded_ints(cls, v: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(str(info.field_name))
        extra = field.json_schema_extra if field is not None else None
        if isinstance(extra, dict) and extra.get("unbounded"):
            return v
        big = _too_big(v)
        if big is not None:
            raise ValueError(f"integer {quote(big, 30)} is out of range: at most {MAX_CONFIG_INT} "
                             "(a larger size, count or step cannot be meant)")
        return v


class FabricConfig(StrictModel):
    """Lightning Fabric settings: where and how the fit loop runs."""

    accelerator: Literal["auto", "cpu", "cuda", "gpu", "mps"] = Field(
        "cpu", description="Device type Fabric trains on ('cpu' keeps runs bit-exact and resumable everywhere).")
    devices: int | Literal["auto"] = Field(
        1, description="Number of devices (processes under DDP) per node, or 'auto'.")
    strategy: Literal["auto", "ddp", "ddp_spawn", "fsdp", "deepspeed"] = Field(
        "auto", description="Fabric distribution strategy; 'ddp' on CPU uses the gloo backend.")
    precision: Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"] = Field(
        "32-true", description="Fabric numeric precision of training.")
    num_nodes: int = Field(1, ge=1, description="Number of machines taking part in a DDP run.")
    deterministic: bool = Field(
        True, description="Use deterministic torch kernels (exact on CPU, best effort on GPU).")


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


class TrackingConfig(StrictModel):
    """Where metrics go besides `metrics.jsonl`: Fabric's experiment loggers, all off by default.

    Tracking never changes what a run computes, so it is left out of the config hash, and a
    config with every logger off saves no `tracking` section.
    """

    tensorboard: bool = Field(
        False, description="Also log metrics to TensorBoard event files under `<run dir>/tracking/tensorboard/` "
                            "(needs the `tensorboard` package).")
    csv: bool = Field(False, description="Also log metrics to `<run dir>/tracking/csv/version_N/metrics.csv` "
                                         "(Fabric's CSVLogger).")
    wandb: bool = Field(False, description="Also log metrics to Weights & Biases through Lightning's WandbLogger "
                                           "(needs the `wandb` and `lightning` packages).")
    mlflow: bool = Field(False, description="Also log metrics to MLflow through Lightning's MLFlowLogger "
                                            "(needs the `mlflow` and `lightning` packages).")

    @field_validator("tensorboard")
    @classmethod
    def _tensorboard_installed(cls, v: bool) -> bool:
        if v and not (_importable("tensorboard") or _importable("tensorboardX")):
            raise ValueError("needs the `tensorboard` package — `pip install tensorboard`, or set it to false")
        return v

    @field_validator("wandb", "mlflow")
    @classmethod
    def _lightning_logger_installed(cls, v: bool, info: ValidationInfo) -> bool:
        if v:
            missing = [m for m in (info.field_name, "lightning") if not _importable(str(m))]
            if missing:
                raise ValueError(f"needs the package(s) {' and '.join(missing)} — `pip install {' '.join(missing)}`, "
                                 "or set it to false")
        return v

    def any_on(self) -> bool:
        """True when at least one logger is switched on.

        Returns:
            Whether `RunContext.log` has loggers to feed.

        Example:
            >>> TrackingConfig(csv=True).any_on()
            True
        """
        return any((self.tensorboard, self.csv, self.wandb, self.mlflow))


class RecipeConfig(StrictModel):
    """Fields every recipe config has; recipes subclass it with their own sections.

    Example:
        >>> class Config(RecipeConfig):
        ...     recipe: str = "mypkg.my_recipe"
        ...     lr: float = Field(1e-3, gt=0, description="Learning rate.")
        >>> Config(name="demo").seed
        0
    """

    recipe: str = Field(..., description="Which recipe runs: a registered name (example, ngc, mst, rerank, or one "
                                         "registered in the `multiteacher.recipes` entry point group) or a dotted "
                                         "module path that declares `Config` and `run` (e.g. mypkg.my_recipe).")
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$",
                      description="Run name: the default run directory is `runs/<name>` "
                                  "(`runs/<name>-s<seed>` when `--set seed=` is given).")
    seed: int = Field(0, ge=0, le=2**32 - 1, json_schema_extra={"unbounded": True},  # its own bound: 32 bits
                      description="Seed for Python, NumPy and torch (0 to 2**32-1); runs differing only in it are "
                                  "aggregated as repeats.")
    fabric: FabricConfig = Field(FabricConfig(), description="Lightning Fabric settings (devices, strategy, "
                                                             "precision).")
    tracking: TrackingConfig = Field(TrackingConfig(), description="Experiment loggers that also receive the "
                                                                   "metrics (TensorBoard, CSV, W&B, MLflow).")

    #: Dotted config fields that `multiteacher report` may pool into one row even when runs differ in them
    #: (besides seed, name, folds and where a run ran): only fields that the pooled rows do not depend on.
    report_pooled: ClassVar[tuple[str, ...]] = ()


# --------------------------------------------------------------------------------------- loading


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, following `defaults:` chains (child keys override parent keys).

    Args:
        path: a YAML file; `defaults: other.yaml` inside it is read first (relative to the file).

    Returns:
        The merged mapping (not validated).

    Raises:
        ConfigError: missing file, invalid YAML, a non-mapping top level, or a `defaults` loop.

    Example:
        >>> load_yaml("recipes/example-tiny.yaml")["name"]  # doctest: +SKIP
        'example-tiny'
    """
    return _load_yaml(Path(path), seen=())


def _load_yaml(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'defaults' chain loops back to itself — remove the cycle")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} — pass a path to a recipe YAML (see recipes/)")
    text = read_utf8(path, ConfigError)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: line {e.line}: key {quote(e.key, 40)} appears twice in one mapping "
                          f"(first at line {e.first}) — keep one") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = str(getattr(e, "problem", None) or e)[:120]
        raise ConfigError(f"{path}:{where} is not valid YAML ({problem}) — fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys to values")
    if "defaults" not in data:
        return data
    parent = data.pop("defaults")
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(f"{path}: 'defaults' = {quote(parent, 40)}: must be one file path (e.g. `defaults: "
                          "base.yaml`, relative to this file)")
    base = _load_yaml(path.parent / parent, (*seen, path))
    return deep_merge(base, data)


def read_utf8(path: Path, error: type[Exception] = ConfigError) -> str:
    """Read a text file that must be UTF-8; other bytes are one clear error naming the file and offset.

    Args:
        path: the file.
        error: the `UserError` subclass to raise (ConfigError for configs, DataError for data).

    Returns:
        The decoded text.

    Raises:
        error: the file is not valid UTF-8.

    Example:
        >>> read_utf8(Path("recipes/example-tiny.yaml")).startswith("#")  # doctest: +SKIP
        True
    """
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise error(f"{path}: line {line}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}) — "
                    "save the file as UTF-8") from None


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line, self.first = key, line, first


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            try:
                hash(key)
            except TypeError:
                continue  # SafeLoader reports unhashable keys itself
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, line, seen[key])
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge `over` into a copy of `base` (mappings merge, everything else replaces).

    Args:
        base: the parent mapping (not modified).
        over: the child mapping whose keys win.

    Returns:
        A new merged mapping.

    Example:
        >>> deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}})
        {'a': {'b': 1, 'c': 3}}
    """
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def apply_overrides(data: dict[str, Any], overrides: list[str] | None, source: str = "--set",
                    model_cls: type[BaseModel] | None = None) -> dict[str, Any]:
    """Apply `a.b=c` overrides; values parse as YAML (`3`, `1e-3`, `true`, `[1,2]`, `null`).

    With `model_cls`, a section the file does not spell out is first filled with its default, so
    `--set nodes.depth.scale=2.0` changes one value of the default `nodes` instead of replacing the
    whole section by `{depth: {scale: 2.0}}`.

    Args:
        data: the raw config mapping (not modified).
        overrides: `KEY=VALUE` strings with dotted keys.
        source: what to call the overrides in errors.
        model_cls: the config class whose defaults fill sections missing from `data`.

    Returns:
        A new mapping with the overrides applied.

    Raises:
        ConfigError: an item without `=`.

    Example:
        >>> apply_overrides({"fit": {"lr": 0.1}}, ["fit.lr=0.001", "seed=2"])
        {'fit': {'lr': 0.001}, 'seed': 2}
    """
    out = copy.deepcopy(data)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{source} {quote(item)}: expected KEY=VALUE, e.g. --set fit.lr=1e-3")
        try:
            value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node: Any = out
        parts = key.strip().split(".")
        kind: Any = model_cls
        for i, p in enumerate(parts[:-1]):
            if isinstance(node, list):  # `members.0.lr`: an item of a list the config already has
                node = node[_list_index(node, p, ".".join(parts[:i]), source)]
                kind = None
                continue
            kind = _child_type(kind, p)
            if not isinstance(node.get(p), dict | list):
                node[p] = _default_mapping(kind) if p not in node else {}
            node = node[p]
        if isinstance(node, list):
            node[_list_index(node, parts[-1], ".".join(parts[:-1]), source)] = value
        else:
            node[parts[-1]] = value
    return out


def _list_index(items: list[Any], part: str, list_key: str, source: str) -> int:
    """The index `part` names in the list at `list_key`; anything else is a one-line error."""
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"{source} {_cut(list_key)}.{part[:20]}: {list_key!r} is a list of {len(items)} item(s), "
                          f"so use an index 0..{len(items) - 1}, or set the whole list ({_cut(list_key)}=[...])")
    return int(part)


def _child_type(kind: Any, key: str) -> Any:
    """The declared type under `key` of a model class or a `dict[str, X]` annotation (None when unknown)."""
    if kind is None:
        return None
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        field = kind.model_fields.get(key)
        if field is None:
            return None
        default = field.get_default(call_default_factory=True)
        return (field.annotation, default)
    annotation, _ = kind
    model = _model_in(annotation)
    if model is not None:
        return _child_type(model, key)
    args = getattr(annotation, "__args__", ()) or ()
    if getattr(annotation, "__origin__", None) is dict and len(args) == 2:
        value_model = _model_in(args[1])
        return (value_model, None) if value_model is not None else None
    return None


def _default_mapping(kind: Any) -> Any:
    """The default of a section absent from the file, as a plain mapping (`{}` when it has none)."""
    if not isinstance(kind, tuple):
        return {}
    _, default = kind
    if isinstance(default, BaseModel):
        return json.loads(default.model_dump_json())
    if isinstance(default, dict):
        return {k: json.loads(v.model_dump_json()) if isinstance(v, BaseModel) else copy.deepcopy(v)
                for k, v in default.items()}
    return {}


def build_config(
    data: dict[str, Any], source: str = "config", recipe_module: Any = None
) -> RecipeConfig:
    """Validate a raw mapping against its recipe's `Config`; raise one-line ConfigError on failure.

    The recipe is looked up from `data["recipe"]` (a registered name or a dotted module path, see
    `multiteacher.recipe_registry`) unless `recipe_module` is given.

    Args:
        data: the raw mapping (after `defaults:` and overrides).
        source: the file (or origin) named in error messages.
        recipe_module: a module with `Config` to validate against instead of the lookup.

    Returns:
        The recipe's validated `Config`.

    Raises:
        ConfigError: unknown recipe, unknown key (with the closest valid keys), wrong type or value.

    Example:
        >>> build_config({"recipe": "example", "name": "demo"}).name
        'demo'
    """
    if recipe_module is None:
        from multiteacher.recipe_registry import load_recipe

        if "recipe" not in data:
            raise ConfigError(f"{source}: missing field 'recipe' — add e.g. `recipe: example`")
        recipe_module = load_recipe(str(data["recipe"]), source)
    model_cls: type[RecipeConfig] = recipe_module.Config
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, model_cls, source)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RecipeConfig:
    """Load a recipe config: YAML (with `defaults:`), `--set`-style overrides, validation.

    Why: the one entry point for configs — the CLI, `multiteacher.runs.run` and scripts all use it,
    so a config means the same everywhere and errors are one line naming file, field and fix.

    Args:
        path: a recipe YAML file.
        overrides: `KEY=VALUE` strings (`["fit.lr=1e-3", "seed=2"]`).

    Returns:
        The recipe's validated `Config` (a `RecipeConfig` subclass).

    Raises:
        ConfigError: a missing or invalid file, unknown recipe, unknown key or bad value.

    Example:
        >>> cfg = load_config("recipes/example-tiny.yaml", ["seed=3"])  # doctest: +SKIP
        >>> cfg.seed, cfg.recipe  # doctest: +SKIP
        (3, 'example')
    """
    raw = load_yaml(path)
    model_cls = None
    if overrides:
        recipe = apply_overrides(raw, overrides).get("recipe")
        if isinstance(recipe, str):
            from multiteacher.recipe_registry import load_recipe

            try:
                model_cls = load_recipe(recipe, str(path)).Config
            except ConfigError:
                model_cls = None  # build_config names the unknown recipe
    data = apply_overrides(raw, overrides, model_cls=model_cls)
    return build_config(data, source=str(path))


def _format_validation_error(err: ValidationError, model_cls: type[BaseModel], source: str) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    dotted = ".".join(loc)
    more = f" (and {err.error_count() - 1} more problem(s))" if err.error_count() > 1 else ""
    if first["type"] == "extra_forbidden":
        valid = _fields_at(model_cls, loc[:-1])
        close = difflib.get_close_matches(loc[-1], valid, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        where = ".".join(loc[:-1]) or "top level"
        return (
            f"{source}: unknown key '{_cut(dotted)}' — {hint} valid keys at {where}: "
            f"{_cut(', '.join(valid), 160)}{more}"
        ).replace("—  valid", "— valid")
    if first["type"] == "missing":
        return f"{source}: missing required field '{_cut(dotted)}' — add it to the config{more}"
    if not loc:  # a whole-config validator: the message names the fields itself
        return f"{source}: {_cut(first['msg'].removeprefix('Value error, '), 240)}{more}"
    got = first.get("input")
    got_s = quote(got) if not isinstance(got, dict) else "a mapping"
    msg = first["msg"].removeprefix("Value error, ")
    if len(msg) > 200:
        msg = msg[:196] + " ..."
    return f"{source}: field '{_cut(dotted)}' = {got_s}: {msg}{more}"


def _cut(text: str, limit: int = MAX_QUOTED) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fields_at(model_cls: type[BaseModel], loc: list[str]) -> list[str]:
    """Names of the valid keys at a dotted location in the config schema (best effort)."""
    cls: Any = model_cls
    for part in loc:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        cls = _model_in(field.annotation)
        if cls is None:
            return []
    return sorted(getattr(cls, "model_fields", {}))


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------------------------- saving


def config_dict(cfg: BaseModel) -> dict[str, Any]:
    """Plain JSON-able dict of a config (what `config.yaml` and results.json's `config` hold).

    A `tracking` section with every logger off is left out: it does not change what a run
    computes, and leaving it out keeps saved configs of runs without tracking unchanged.

    Args:
        cfg: a validated config.

    Returns:
        The config as nested dicts, lists and JSON scalars.

    Example:
        >>> config_dict(FabricConfig())["accelerator"]
        'cpu'
    """
    d = json.loads(cfg.model_dump_json())
    tracking = getattr(cfg, "tracking", None)
    if isinstance(tracking, TrackingConfig) and not tracking.any_on():
        d.pop("tracking", None)
    return d


def config_hash(cfg: BaseModel, exclude_seed: bool = False) -> str:
    """Short SHA-256 of the canonical JSON of a resolved config (seed optionally excluded).

    The `tracking` section is never hashed: switching a logger on must not make a run "another
    run" (nor make `--resume` refuse it).

    Args:
        cfg: a validated config.
        exclude_seed: leave `seed` out (runs that are repeats of one setting share this hash).

    Returns:
        16 hex digits.

    Example:
        >>> len(config_hash(FabricConfig()))
        16
    """
    d = config_dict(cfg)
    d.pop("tracking", None)
    if exclude_seed:
        d.pop("seed", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def config_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML (what a run saves as `config.yaml`).

    Args:
        cfg: a validated config.

    Returns:
        YAML text, keys in field order.

    Example:
        >>> config_yaml(FabricConfig()).splitlines()[0]
        'accelerator: cpu'
    """
    return yaml.safe_dump(config_dict(cfg), sort_keys=False)
