"""``prunekit run RECIPE.yaml``: carry out a recipe (and ``prunekit convert-recipe OLD NEW``)."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from prunekit.allocation import STRATEGY_NAMES
from prunekit.api import list_criteria
from prunekit.cli._flags import add_deprecated_alias
from prunekit.errors import RecipeError, RunStopped
from prunekit.pipeline import load_recipe, parse_recipe, run_recipe
from prunekit.pipeline.methods.structured import LATENCY_ONLY, SENSITIVITY_ONLY
from prunekit.pruners import UNSTRUCTURED_ALLOCATIONS
from prunekit.training.journal import EVERY


def shipped_recipe(name: str) -> Path:
    """The path of a recipe shipped with prunekit, by file stem (e.g. ``demo``)."""
    return Path(str(resources.files("prunekit.recipes") / f"{name}.yaml"))


def shipped_recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("prunekit.recipes").iterdir() if p.name.endswith(".yaml"))


def add_run_options(p: argparse.ArgumentParser, default_out: str | None) -> None:
    p.add_argument("--out", default=default_out, required=default_out is None,
                   help="output directory (must be empty or absent unless --force)")
    p.add_argument("--force", action="store_true", help="replace an output directory that holds results")
    p.add_argument("--seed", type=int, help="override the recipe's seed")
    p.add_argument("--resume", action="store_true", help="continue the stopped or killed run into --out from its "
                   "last checkpoint (same recipe, flags and --nproc), to the same results")
    p.add_argument("--checkpoint", choices=EVERY, default="epoch", help="how often the run saves its state for "
                   "--resume: every epoch (and every training phase), every phase only, or off (default: epoch)")
    p.add_argument("--nproc", type=int, default=None, metavar="N", help="train on N processes on this machine "
                   "(torchrun, DistributedDataParallel: gloo on CPU, nccl on GPU); the recipe's batch_size is the "
                   "global batch, each process computes on its share; pruning decisions are checked equal on every "
                   "process")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


#: Flags that patch ``prune:`` (flag dest → prune key); the last three apply to method structured only.
PRUNE_FLAGS = {"importance": "importance", "allocation": "allocation", "budget": "budget",
               "allocation_cost": "allocation_cost", "latency_table": "latency_table"}
STRUCTURED_FLAGS = ("budget", "allocation_cost", "latency_table")


def execute(recipe_path: Path, args: argparse.Namespace) -> int:
    recipe = apply_flags(load_recipe(recipe_path), args)
    if args.nproc is not None:
        return launch(args.nproc)
    run_recipe(recipe, args.out, force=args.force, progress=not args.no_progress, resume=args.resume,
               checkpoint=args.checkpoint)
    return 0


def launch(nproc: int) -> int:
    """Runs this command again on ``nproc`` local processes under PyTorch's launcher (``torchrun --standalone``);
    returns the job's exit code. A rank that fails stops the others at once; one line says which and how."""
    import logging
    import os
    import signal
    import sys

    import torch
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from prunekit.measure.threads import available_cpus

    if os.environ.get("WORLD_SIZE"):
        raise RecipeError("--nproc: this process is already one of a torchrun job; drop --nproc")
    gpus = torch.cuda.device_count()
    room, what = (gpus, "GPUs") if gpus else (available_cpus(), "CPUs this process may use")
    if nproc < 1 or nproc > room:
        raise RecipeError(f"--nproc {nproc}: this machine has {room} {what}; choose --nproc between 1 and {room} "
                          "(for several machines start torchrun on each with --nnodes)")
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the ranks say what failed
    args = torchrun.parse_args(["--standalone", f"--nproc-per-node={nproc}", "--monitor-interval=0.2",
                                "-m", "prunekit", *_without_nproc(sys.argv[1:])])
    try:
        torchrun.run(args)
    except ChildFailedError as e:
        rank, failure = min(e.failures.items(), key=lambda kv: kv[1].timestamp)
        code = failure.exitcode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        print(f"prunekit: error: --nproc {nproc}: rank {rank} {how} (its own message, if any, is above); the other "
              "ranks were stopped", file=sys.stderr)
        return 128 - code if code < 0 else code
    except SignalException as e:
        raise RunStopped(signal.Signals(e.sigval).name) from None
    return 0


def _without_nproc(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def apply_flags(recipe, args: argparse.Namespace):
    """Overrides the recipe keys given as flags; the result is validated like a recipe file."""
    patch = {key: getattr(args, dest) for dest, key in PRUNE_FLAGS.items() if getattr(args, dest, None) is not None}
    seed = getattr(args, "seed", None)
    if not patch and seed is None:
        return recipe
    raw = recipe.to_dict()
    if seed is not None:
        raw["seed"] = seed
    if patch:
        if recipe.prune.method != "structured" and any(k in patch for k in STRUCTURED_FLAGS):
            raise RecipeError("--budget, --allocation-cost and --latency-table apply to prune.method: structured; this "
                              f"recipe's method is {recipe.prune.method!r}: edit its prune: section instead")
        prune = {**raw["prune"], **patch}
        if recipe.prune.method == "structured":
            prune = _drop_unread(prune, patch)
        raw["prune"] = prune
    return parse_recipe(raw, "command line")


def _drop_unread(prune: dict, patch: dict) -> dict:
    """A flag that changes the allocation or its cost drops the recipe's settings the new one does not read."""
    drop: tuple[str, ...] = ()
    if patch.get("allocation_cost") == "budget":
        drop += LATENCY_ONLY
    if "allocation" in patch and patch["allocation"] != "sensitivity":
        drop += SENSITIVITY_ONLY
    return {k: v for k, v in prune.items() if k not in drop or k in patch}


def _budget(text: str) -> dict[str, float]:
    """``macs_kept=0.5`` or ``latency_ms=20,batch=1`` → a budget mapping (``macs=``/``params=`` read as kept)."""
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        try:
            out[{"macs": "macs_kept", "params": "params_kept"}.get(key.strip(), key.strip())] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise argparse.ArgumentTypeError(f"--budget: expected KEY=VALUE[,KEY=VALUE] such as macs_kept=0.5 or "
                                             f"latency_ms=20,batch=1, got {text!r}")
    return out


def _run(args: argparse.Namespace) -> int:
    path = Path(args.recipe)
    if not path.exists() and args.recipe in shipped_recipe_names():
        path = shipped_recipe(args.recipe)
    return execute(path, args)


def register(sub) -> None:
    p = sub.add_parser("run", help="run a pruning recipe (YAML)",
                       description="Train, prune, recover and measure as a recipe says. RECIPE is a YAML file or a "
                       f"shipped recipe name ({', '.join(shipped_recipe_names())}).")
    p.add_argument("recipe", metavar="RECIPE")
    add_run_options(p, default_out=None)
    p.add_argument("--importance", dest="importance", metavar="NAME", help="prune.importance: the criterion "
                   f"(structured: {', '.join(list_criteria('group'))}; masks: {', '.join(list_criteria('weight'))})")
    p.add_argument("--allocation", dest="allocation", help="prune.allocation (structured: "
                   f"{', '.join(STRATEGY_NAMES)}; masks: {', '.join(UNSTRUCTURED_ALLOCATIONS)})")
    p.add_argument("--budget", dest="budget", type=_budget, help="structured: what to keep, e.g. "
                   "macs_kept=0.5, params_kept=0.25 or latency_ms=20,batch=1")
    add_deprecated_alias(p, "--criterion", "--importance", "importance")
    add_deprecated_alias(p, "--strategy", "--allocation", "allocation")
    add_deprecated_alias(p, "--target", "--budget", "budget", type=_budget)
    p.add_argument("--allocation-cost", help="structured, allocation sensitivity: rank steps by loss rise per budget "
                   "metric saved (budget; drops the recipe's latency-only settings) or per measured latency saved "
                   "(latency)")
    p.add_argument("--latency-table", metavar="JSON", help="structured, allocation cost latency: rank by this table "
                   "(latency_table.json of an earlier run) instead of measuring a new one")
    p.set_defaults(func=_run)
    c = sub.add_parser("convert-recipe", help="convert a version-1 recipe to version 2",
                       description="Write the version-2 form of a version-1 recipe (prune.method, importance, "
                       "sparsity, allocation, budget: {macs_kept}, recover). Leading comments are kept.")
    c.add_argument("old", metavar="OLD")
    c.add_argument("new", metavar="NEW")
    c.set_defaults(func=_convert)


def _convert(args: argparse.Namespace) -> int:
    from prunekit.pipeline import convert_file

    if Path(args.new).exists():
        raise RecipeError(f"{args.new} exists; choose another NEW path")
    convert_file(args.old, args.new)
    print(f"wrote {args.new}")
    return 0
