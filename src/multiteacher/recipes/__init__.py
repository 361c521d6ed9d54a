"""Recipes: thin compositions of the engine. `REGISTRY` maps a config's `recipe` to its module."""

from __future__ import annotations

import importlib
from types import ModuleType

from multiteacher.errors import ConfigError

REGISTRY: dict[str, str] = {
    "example": "multiteacher.recipes.example",
    "ngc": "multiteacher.recipes.ngc",
    "mst": "multiteacher.recipes.mst",
    "rerank": "multiteacher.recipes.rerank",
}


def load_recipe(name: str, source: str = "config") -> ModuleType:
    """Import the recipe module for `name` (it exports `Config` and `run`)."""
    if name not in REGISTRY:
        raise ConfigError(f"{source}: field 'recipe' is {name!r}; valid recipes: {', '.join(sorted(REGISTRY))}")
    try:
        return importlib.import_module(REGISTRY[name])
    except ModuleNotFoundError as e:
        if e.name == REGISTRY[name]:
            raise ConfigError(f"{source}: recipe {name!r} is not available in this version") from None
        raise
