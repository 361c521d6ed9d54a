"""Built-in recipes: thin compositions of the engine (example, ngc, mst, rerank).

Each subpackage declares `Config` and `run(cfg, ctx)` and is registered in the `multiteacher.recipes`
entry point group (see pyproject.toml); `multiteacher.recipe_registry` finds them, and any recipe
of your own, from a config's `recipe:` field. This package holds no registry of its own.
"""
