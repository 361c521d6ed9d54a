"""Recipe discovery: a config's `recipe:` names a module that declares `Config` and `run`.

A recipe is any importable module with `Config` (a `RecipeConfig` subclass) and `run(cfg, ctx)`
(optionally `evaluate(cfg, ctx)`). It is found either by a registered name — the Python entry point
group `multiteacher.recipes` (name -> module; the built-in `example`, `ngc`, `mst`, `rerank` are
registered this way in pyproject.toml) — or by a dotted module path (`recipe: mypkg.my_recipe`).
The engine never imports recipes itself: this lookup is the only way in.

Register a recipe of your own package in its pyproject.toml:

    [project.entry-points."multiteacher.recipes"]
    my_recipe = "mypkg.my_recipe"
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points
from types import ModuleType

from multiteacher.config import RecipeConfig
from multiteacher.errors import ConfigError

ENTRY_POINT_GROUP = "multiteacher.recipes"


def registered_recipes() -> dict[str, str]:
    """Names registered in the `multiteacher.recipes` entry point group, each with its module path.

    Why: a recipe of another installed package is usable by name, exactly like the built-in ones.

    Returns:
        `{name: "package.module"}`, sorted by name.

    Example:
        >>> registered_recipes()["example"]
        'multiteacher.recipes.example'
    """
    found = {ep.name: ep.value.split(":")[0].strip() for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return dict(sorted(found.items()))


def load_recipe(name: str, source: str = "config") -> ModuleType:
    """Import the recipe module a config's `recipe:` field names, and check it is a recipe.

    Why: one place resolves registered names and dotted module paths, so the engine needs no list
    of recipes and a recipe outside this package runs like a built-in one.

    Args:
        name: a registered name (`example`) or a dotted module path (`mypkg.my_recipe`).
        source: the config file (or other origin) named in error messages.

    Returns:
        The imported module; it has `Config` (a `RecipeConfig` subclass) and a callable `run`.

    Raises:
        ConfigError: unknown name / unimportable module, or a module without `Config` and `run`.

    Example:
        >>> load_recipe("example").Config.__name__
        'Config'
    """
    registered = registered_recipes()
    module_path = registered.get(name, name)
    known = ", ".join(registered) or "none"
    unknown = (f"{source}: field 'recipe' is {name!r}; valid recipes: {known}, or a dotted module path that "
               "declares Config and run (e.g. mypkg.my_recipe)")
    try:
        module = importlib.import_module(module_path)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if module_path == missing or module_path.startswith(missing + "."):
            if name in registered:
                raise ConfigError(f"{source}: recipe {name!r} is registered, but its module {module_path!r} is not "
                                  "installed — reinstall the package that provides it") from None
            raise ConfigError(f"{unknown} — no module {module_path!r} is importable (is it on PYTHONPATH?)") from None
        raise
    except (ValueError, TypeError):  # e.g. an empty or relative module name
        raise ConfigError(unknown) from None
    check_recipe(module, name, source)
    return module


def check_recipe(module: ModuleType, name: str, source: str = "config") -> None:
    """Raise a one-line ConfigError unless `module` declares `Config` and `run(cfg, ctx)`.

    Args:
        module: the imported module.
        name: what the config called it (for the message).
        source: the config file named in the message.

    Returns:
        None.

    Example:
        >>> import multiteacher.recipes.example as m
        >>> check_recipe(m, "example")
    """
    cfg_cls = getattr(module, "Config", None)
    run = getattr(module, "run", None)
    problems = []
    if not (inspect.isclass(cfg_cls) and issubclass(cfg_cls, RecipeConfig)):
        problems.append("a `Config` class subclassing multiteacher.config.RecipeConfig")
    if not callable(run):
        problems.append("a `run(cfg, ctx)` function")
    if problems:
        raise ConfigError(f"{source}: recipe {name!r} (module {module.__name__}) is not a recipe: it lacks "
                          f"{' and '.join(problems)} — add them, or fix the field 'recipe'")
