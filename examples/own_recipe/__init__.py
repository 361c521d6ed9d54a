"""Your own recipe, run from the CLI by its dotted module path (`recipe: own_recipe.recipe`).

See `recipe.py` (the recipe: a `Config` and a `run`) and `own-recipe.yaml` (its config). From the
repository root:

    PYTHONPATH=examples multiteacher run examples/own_recipe/own-recipe.yaml --run-dir runs/own-recipe
    PYTHONPATH=examples multiteacher run --resume runs/own-recipe      # continue a killed run
    multiteacher report runs/own-recipe                                # the results table

To use it by a short name instead (`recipe: own`), register the module in your package's
pyproject.toml:

    [project.entry-points."multiteacher.recipes"]
    own = "own_recipe.recipe"
"""
