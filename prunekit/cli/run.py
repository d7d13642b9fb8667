"""``prunekit run RECIPE.yaml``: carry out a recipe."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from prunekit.errors import ConfigError
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
        recipe = apply_structured_flags(recipe, args)
        run_structured_recipe(recipe, args.out, force=args.force, progress=not args.no_progress)
        return 0
    if any(getattr(args, k, None) is not None for k in STRUCTURED_FLAGS):
        raise ConfigError("--criterion, --strategy, --target, --allocation-cost and --latency-table apply to "
                          "structured recipes (a top-level 'structured:' key); this recipe is unstructured: edit its "
                          "prune: section instead")
    run_recipe(recipe, args.out, force=args.force, progress=not args.no_progress)
    return 0


STRUCTURED_FLAGS = ("criterion", "strategy", "target", "allocation_cost", "latency_table")  # structured.<name>
LATENCY_ONLY = ("allocation_latency_weight", "latency_passes", "latency_table")  # need allocation_cost: latency


def _target(text: str) -> dict[str, float]:
    """``macs_kept=0.5`` or ``latency_ms=20,batch=1`` → a budget mapping."""
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(f"--target: expected KEY=VALUE[,KEY=VALUE] such as macs_kept=0.5 or "
                                             f"latency_ms=20,batch=1, got {text!r}")
    return out


def apply_structured_flags(recipe, args: argparse.Namespace):
    """Overrides the structured fields given as flags; the result is validated like a recipe."""
    from prunekit.recipe.structured import parse_structured_recipe

    patch = {k: getattr(args, k) for k in STRUCTURED_FLAGS if getattr(args, k, None) is not None}
    if not patch:
        return recipe
    raw = recipe.to_dict()
    structured = {**raw["structured"], **patch}
    if patch.get("allocation_cost") == "budget":  # the recipe's latency-only settings no longer apply
        structured = {k: v for k, v in structured.items() if k not in LATENCY_ONLY}
    raw["structured"] = structured
    return parse_structured_recipe(raw, "command line")


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
    p.add_argument("--criterion", help="structured recipes: importance criterion (e.g. taylor, lp, fpgm)")
    p.add_argument("--strategy", help="structured recipes: allocation strategy (uniform, global, sensitivity, "
                   "search)")
    p.add_argument("--target", type=_target, help="structured recipes: budget, e.g. macs=0.5, params=0.25 or "
                   "latency_ms=20,batch=1")
    p.add_argument("--allocation-cost", help="structured recipes, strategy sensitivity: rank steps by loss rise per "
                   "budget metric saved (budget; drops the recipe's latency-only settings) or per measured latency "
                   "saved (latency)")
    p.add_argument("--latency-table", metavar="JSON", help="structured recipes, allocation cost latency: rank by "
                   "this table (latency_table.json of an earlier run) instead of measuring a new one")
    p.set_defaults(func=_run)
