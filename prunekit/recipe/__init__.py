"""Recipes: validated YAML descriptions of a pruning job, and the runner that carries them out."""

from prunekit.recipe.schema import (
    DataSpec,
    MeasureSpec,
    ModelSpec,
    PruneSpec,
    Recipe,
    load_recipe,
    parse_recipe,
)

__all__ = ["DataSpec", "MeasureSpec", "ModelSpec", "PruneSpec", "Recipe", "load_recipe", "parse_recipe"]
