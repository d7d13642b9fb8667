"""Recipes: one schema (a section per stage), named stages with typed inputs and outputs, one runner.

- :mod:`.schema`: the recipe (``load_recipe``/``parse_recipe``; version-1 recipes convert on load, see
  :mod:`.convert`).
- :mod:`.methods`: the prune methods, registered in :data:`PRUNE_METHODS`.
- :mod:`.stages`: data → model → train → prune → recover → measure → save → export → report, in :data:`STAGES`.
- :mod:`.runner`: :func:`run_recipe`.

Example:
    >>> report = run_recipe(load_recipe("recipes/demo.yaml"), "runs/demo")
"""

from prunekit.pipeline.convert import convert_file, convert_v1
from prunekit.pipeline.methods import PRUNE_METHODS, PruneMethod, method_names
from prunekit.pipeline.runner import run_recipe
from prunekit.pipeline.schema import EXPORTERS, RECIPE_VERSION, Recipe, load_recipe, parse_recipe, read_yaml
from prunekit.pipeline.stages import ORDER, STAGES

__all__ = ["EXPORTERS", "ORDER", "PRUNE_METHODS", "PruneMethod", "RECIPE_VERSION", "Recipe", "STAGES", "convert_file",
           "convert_v1", "load_recipe", "method_names", "parse_recipe", "read_yaml", "run_recipe"]
