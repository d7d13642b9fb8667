"""``prunekit run RECIPE.yaml``: carry out a recipe."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from prunekit.recipe.runner import run_recipe


def shipped_recipe(name: str) -> Path:
    """The path of a recipe shipped with prunekit, by file stem (e.g. ``demo``)."""
    return Path(str(resources.files("prunekit.recipes") / f"{name}.yaml"))


def shipped_recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("prunekit.recipes").iterdir()
                  if p.name.endswith(".yaml"))


def add_run_options(p: argparse.ArgumentParser, default_out: str | None) -> None:
    p.add_argument("--out", default=default_out, required=default_out is None,
                   help="output directory (must be empty or absent unless --force)")
    p.add_argument("--force", action="store_true", help="replace an output directory that holds results")
    p.add_argument("--seed", type=int, help="override the recipe's seed")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def execute(recipe_path: Path, args: argparse.Namespace) -> int:
    from prunekit.recipe.structured import StructuredRecipe, load_any_recipe, run_structured_recipe

    recipe = load_any_recipe(recipe_path)  # a top-level ``structured:`` key selects the structured runner
    if args.seed is not None:
        from dataclasses import replace

        recipe = replace(recipe, seed=args.seed)
    if isinstance(recipe, StructuredRecipe):
        run_structured_recipe(recipe, args.out, force=args.force, progress=not args.no_progress)
        return 0
    run_recipe(recipe, args.out, force=args.force, progress=not args.no_progress)
    return 0


def _run(args: argparse.Namespace) -> int:
    path = Path(args.recipe)
    if not path.exists() and args.recipe in shipped_recipe_names():
        path = shipped_recipe(args.recipe)
    return execute(path, args)


def register(sub) -> None:
    p = sub.add_parser("run", help="run a pruning recipe (YAML)",
                       description="Train, prune, fine-tune and measure as a recipe says. RECIPE is a "
                       f"YAML file or a shipped recipe name ({', '.join(shipped_recipe_names())}).")
    p.add_argument("recipe", metavar="RECIPE")
    add_run_options(p, default_out=None)
    p.set_defaults(func=_run)
