"""The generated documentation: every config field described, reference pages complete and accurate.

The docs site itself is built by `make docs` (`mkdocs build --strict`, part of `make test`); these
tests check the generators in `docs/refgen.py` against the code they read.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def refgen():
    spec = importlib.util.spec_from_file_location("refgen", ROOT / "docs" / "refgen.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["refgen"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_every_config_field_has_a_description(refgen) -> None:
    """Lists every field of every recipe config (nested models included) that has no description."""
    missing = refgen.undocumented_fields()
    print("\n".join(missing))
    assert not missing, f"{len(missing)} config fields without a description:\n  " + "\n  ".join(missing)


def test_undocumented_fields_finds_them(refgen) -> None:
    class Inner(BaseModel):
        ok: int = Field(1, description="described")
        bare: int = 2

    class Outer(BaseModel):
        inner: Inner | None = None
        items: list[Inner] = []
        top: str = "x"

    assert refgen.undocumented_fields({"t": Outer}) == [
        f"Inner.bare ({__name__})", f"Outer.inner ({__name__})", f"Outer.items ({__name__})", f"Outer.top ({__name__})"]


def test_fields_table_types_and_defaults(refgen) -> None:
    from typing import Literal

    class M(BaseModel):
        a: int | None = Field(None, description="an int")
        b: Literal["x", "y"] = Field("x", description="a choice")
        c: list[str] = Field(default_factory=lambda: ["p"], description="a list")
        d: float = Field(description="needed")

    rows = refgen.fields_table(M).splitlines()[2:]
    assert rows == [
        "| `a` | `int \\| None` | `null` | an int |",
        "| `b` | `'x' \\| 'y'` | `'x'` | a choice |",
        "| `c` | `list[str]` | `['p']` | a list |",
        "| `d` | `float` | `required` | needed |",
    ]


def test_config_reference_lists_every_field_of_every_recipe(refgen) -> None:
    page = refgen.config_reference()
    configs = refgen.recipe_configs()
    assert set(configs) >= {"example", "ngc", "mst", "rerank"}
    for name, cfg in configs.items():
        assert f"## Recipe `{name}`" in page
        for _, model in refgen.walk_models(cfg):
            for field in model.model_fields:
                assert f"| `{field}` |" in page, f"{model.__name__}.{field} missing from the config reference"


def test_cli_reference_has_every_subcommand_and_option(refgen) -> None:
    page = refgen.cli_reference()
    parser = refgen._parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert set(subs) >= {"run", "eval", "report", "data"}
    for name, sub in subs.items():
        assert f"## `multiteacher {name}`" in page
        for action in sub._actions:
            for opt in action.option_strings:
                assert opt in page, f"{name} {opt} missing from the CLI reference"


def test_results_reference_has_every_schema_field(refgen) -> None:
    schema = pytest.importorskip("multiteacher.schema")
    page = refgen.results_reference()
    for model in (schema.RunResults, schema.RunInfo):
        for field in model.model_fields:
            assert f"| `{field}` |" in page


def test_api_index_lists_the_public_api(refgen) -> None:
    import multiteacher as mt

    page = refgen.api_index()
    listed = re.findall(r"^\| `mt\.(\w+)` \|", page, flags=re.M)
    assert listed == [n for n in mt.__all__ if n != "__version__"]
