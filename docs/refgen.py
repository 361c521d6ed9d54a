"""Reference pages generated from the code: config fields, results schema, CLI help, example outputs.

Pure functions returning markdown, used by `docs/gen_ref.py` (run by mkdocs-gen-files during
`mkdocs build`) and by `tests/test_docs.py` (fields without a description). Nothing here is committed
output: the pages are rebuilt from the pydantic models and the argparse parser on every build.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_OUTPUTS = ROOT / "build" / "example-outputs"


# ----------------------------------------------------------------------------------------- configs


def recipe_configs() -> dict[str, type[BaseModel]]:
    """Every registered recipe's `Config` class, by recipe name (the entry point group `multiteacher.recipes`)."""
    try:
        from multiteacher.recipe_registry import registered_recipes

        modules = registered_recipes()
    except ImportError:  # before the open registry: the built-in four
        modules = {n: f"multiteacher.recipes.{n}" for n in ("example", "mst", "ngc", "rerank")}
    out = {}
    for name, module in modules.items():
        cfg = getattr(importlib.import_module(module), "Config", None)
        if isinstance(cfg, type) and issubclass(cfg, BaseModel):
            out[name] = cfg
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Pydantic models mentioned in a field's annotation (`X`, `X | None`, `list[X]`, `dict[str, X]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += [m for m in _models_in(arg) if m not in found]
    return found


def type_name(annotation: Any) -> str:
    """A short, readable type: `int | None`, `list[str]`, `Literal['a', 'b']`, `FitConfig`."""
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_name(a) for a in args)}]" if args else name
    return re.sub(r"\b(typing|collections\.abc|pathlib)\.", "", str(annotation))


def _model_default(value: BaseModel) -> str:
    """A nested model's default: its class defaults, or the fields this default changes."""
    try:
        base = type(value)().model_dump()
    except Exception:  # the class has required fields: show the whole default
        base = {}
    changed = {k: v for k, v in value.model_dump().items() if k not in base or base[k] != v}
    if not changed:
        return "(its defaults)"
    return ", ".join(f"{k}={v!r}" for k, v in changed.items())


def default_repr(field: Any) -> str:
    """The field's default as YAML-ish text (`required` when it has none)."""
    if field.default is PydanticUndefined:
        if field.default_factory is not None:
            try:
                value = field.default_factory()
            except TypeError:
                return "(computed)"
            if isinstance(value, BaseModel):
                return _model_default(value)
            return repr(value)
        return "required"
    if isinstance(field.default, BaseModel):
        return _model_default(field.default)
    if field.default is None:
        return "null"
    if isinstance(field.default, bool):
        return str(field.default).lower()
    return repr(field.default)


def walk_models(root: type[BaseModel]) -> Iterator[tuple[str, type[BaseModel]]]:
    """`(dotted path, model)` for `root` and every nested model reachable from its fields, each once."""
    seen: set[type[BaseModel]] = set()
    todo: list[tuple[str, type[BaseModel]]] = [("", root)]
    while todo:
        path, model = todo.pop(0)
        if model in seen:
            continue
        seen.add(model)
        yield path, model
        for name, field in model.model_fields.items():
            for sub in _models_in(field.annotation):
                todo.append((f"{path}.{name}" if path else name, sub))


def undocumented_fields(models: dict[str, type[BaseModel]] | None = None) -> list[str]:
    """`Model.field (module)` for every config field without a description, over all recipe configs."""
    models = recipe_configs() if models is None else models
    out: list[str] = []
    seen: set[tuple[type[BaseModel], str]] = set()
    for root in models.values():
        for _, model in walk_models(root):
            for name, field in model.model_fields.items():
                if (model, name) in seen:
                    continue
                seen.add((model, name))
                if not (field.description or "").strip():
                    out.append(f"{model.__name__}.{name} ({model.__module__})")
    return sorted(set(out))


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def fields_table(model: type[BaseModel]) -> str:
    """A markdown table of `model`'s fields: name, type, default, description."""
    rows = ["| field | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        desc = field.description or "*(no description yet)*"
        rows.append(f"| `{name}` | `{_cell(type_name(field.annotation))}` | `{_cell(default_repr(field))}` | "
                    f"{_cell(desc)} |")
    return "\n".join(rows)


def _summary(model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    return doc.split("\n\n")[0].replace("\n", " ") if doc else ""


def model_section(title: str, root: type[BaseModel], level: int = 2) -> str:
    """Markdown for `root` and its nested models, one table each, in the order a YAML file nests them."""
    parts = []
    for path, model in walk_models(root):
        head = "#" * (level if not path else level + 1)
        label = title if not path else f"`{path}` — {model.__name__}"
        parts += [f"{head} {label}", "", _summary(model), "", fields_table(model), ""]
    return "\n".join(parts)


def config_reference() -> str:
    """The config reference page: every recipe's `Config`, every field with type, default and description."""
    configs = recipe_configs()
    lines = [
        "# Config reference",
        "",
        "Generated from the pydantic models at docs build time (`docs/refgen.py`), so it cannot drift",
        "from the code. A recipe YAML sets these fields; `defaults: other.yaml` inherits another file and",
        "`--set a.b=c` overrides one field. Unknown keys are refused with a did-you-mean message.",
        "",
        "Recipes: " + ", ".join(f"[`{n}`](#recipe-{n})" for n in configs),
        "",
    ]
    for name, cfg in configs.items():
        lines += [f"## Recipe `{name}` {{ #recipe-{name} }}", "", f"`recipe: {name}` — class `{cfg.__module__}."
                  f"{cfg.__qualname__}`.", "", model_section(f"`{name}` top level", cfg, level=3)]
    try:
        from multiteacher.engine.loop import FitConfig

        lines += ["## `FitConfig` (the fit loop)", "", "Used wherever a config has a `fit:` section, and by "
                  "scripts calling `mt.fit`.", "", fields_table(FitConfig), ""]
    except ImportError:
        pass
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- results


def results_reference() -> str:
    """The results schema page, from the pydantic models that validate `results.json` and `run.json`."""
    lines = [
        "# Results schema",
        "",
        "Every run directory holds `run.json` (written when a session starts) and `results.json`",
        "(written at the end). Both are validated against the pydantic models below on write and on",
        "read, so `multiteacher report` and `write_run_report` work on any run that follows the schema",
        "and name the missing field otherwise. Generated from `multiteacher.schema` at docs build time.",
        "",
    ]
    try:
        schema = importlib.import_module("multiteacher.schema")
    except ImportError:
        return "\n".join([*lines, "*(the schema module is not available in this build)*", ""])
    files = {"RunInfo": "run.json", "RunResults": "results.json", "EvalRecord": "eval record"}
    models = [(n, obj) for n, obj in vars(schema).items()
              if isinstance(obj, type) and issubclass(obj, BaseModel) and obj.__module__ == schema.__name__
              and not n.startswith("_")]
    for name, model in models:
        title = f"`{name}`" + (f" — `{files[name]}`" if name in files else "")
        lines += [model_section(title, model, level=2)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    cli = importlib.import_module("multiteacher.cli")
    for name in ("build_parser", "make_parser", "parser", "_parser"):
        fn = getattr(cli, name, None)
        if callable(fn):
            return fn()
    raise RuntimeError("multiteacher.cli has no parser factory (build_parser / _parser)")


def cli_reference() -> str:
    """The CLI page: `multiteacher --help` and each subcommand's `--help`, as argparse prints them."""
    os.environ["COLUMNS"] = "100"  # stable wrapping
    parser = _parser()
    lines = ["# Command line", "", "Generated from the argparse parser at docs build time.", "",
             "```text", parser.format_help().rstrip(), "```", ""]
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subs:
        for name, sub in action.choices.items():
            lines += [f"## `multiteacher {name}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- examples


def _newest_source_mtime() -> float:
    return max(p.stat().st_mtime for p in (ROOT / "src" / "multiteacher").rglob("*.py"))


def example_output(script: Path, args: list[str] | None = None, run: bool = True, timeout: int = 600) -> str | None:
    """What `script` prints: from `build/example-outputs/` when fresher than the script and the library
    (the example tests write it there), else by running it (and storing the output), else None."""
    stored = EXAMPLE_OUTPUTS / f"{script.stem}.txt"
    if stored.exists() and stored.stat().st_mtime >= max(script.stat().st_mtime, _newest_source_mtime()):
        return stored.read_text()
    if not run:
        return None
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run([sys.executable, str(script), *(args or [])], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"example {script.name} failed:\n{proc.stdout}\n{proc.stderr}")
    store_example_output(script, proc.stdout)
    return proc.stdout


def store_example_output(script: Path, stdout: str) -> None:
    """Keep an example's printed output for the docs (`build/example-outputs/<stem>.txt`)."""
    EXAMPLE_OUTPUTS.mkdir(parents=True, exist_ok=True)
    tmp = EXAMPLE_OUTPUTS / f".{script.stem}.tmp"
    tmp.write_text(stdout)
    tmp.replace(EXAMPLE_OUTPUTS / f"{script.stem}.txt")


# ----------------------------------------------------------------------------------------- public API

API_PAGES = {  # module prefix -> API page
    "multiteacher.teachers": "teachers.md", "multiteacher.consensus": "consensus.md",
    "multiteacher.routing": "routing.md", "multiteacher.losses": "losses.md",
    "multiteacher.metrics": "metrics.md", "multiteacher.engine": "engine.md", "multiteacher.runs": "runs.md",
    "multiteacher.config": "runs.md", "multiteacher.report": "runs.md", "multiteacher.schema": "runs.md",
    "multiteacher.recipe_registry": "runs.md", "multiteacher.stats": "runs.md", "multiteacher.data.ir": "data.md",
    "multiteacher.models": "models.md",
}


def api_index() -> str:
    """The API overview: every name in `multiteacher.__all__`, its one-line summary and where it is documented."""
    import inspect

    import multiteacher as mt

    lines = ["# Python API", "", "`import multiteacher as mt` exposes these names (`mt.__all__`), imported lazily",
             "on first use. Each links to its module's page.", "", "| name | what | defined in |", "|---|---|---|"]
    for name in mt.__all__:
        if name == "__version__":
            continue
        try:
            obj = getattr(mt, name)
        except AttributeError:
            lines.append(f"| `mt.{name}` | *(does not resolve in this build)* | |")
            continue
        module = getattr(obj, "__module__", "") or ""
        summary = (inspect.getdoc(obj) or "").split("\n")[0]
        page = next((p for prefix, p in API_PAGES.items() if module.startswith(prefix)), None)
        where = f"[`{module}`]({page}#{module}.{obj.__qualname__})" if page else f"`{module}`"
        lines.append(f"| `mt.{name}` | {_cell(summary)} | {where} |")
    return "\n".join(lines) + "\n"
