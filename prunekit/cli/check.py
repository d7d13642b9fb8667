"""``prunekit check MODEL``: prune a zoo model structurally and prove the result."""

from __future__ import annotations

import argparse
import dataclasses
import json

from prunekit.cli._flags import add_deprecated_alias
from prunekit.errors import ConfigError
from prunekit.importance import names
from prunekit.inputs import DTYPES, InputSpec, call_inputs_fn, describe_inputs
from prunekit.measure import threads
from prunekit.pruners import StructuredConfig, check_model
from prunekit.pruners.check import CheckReport
from prunekit.zoo import load

#: criteria that fit: a group form that needs no calibration data (check has only example inputs)
CRITERIA = names(kind="group", data_free=True)
ALLOCATIONS = ("uniform", "global")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check",
        help="prune a model's channels/heads structurally and check forward, shapes and equivalence",
        description="MODEL is torchvision:NAME, timm:NAME, hf:MODEL_TYPE (a tiny random config), hf:DIR (a local "
        "Hugging Face directory) or "
        "package.module:factory. Removes the fraction SPARSITY of the units of every exactly-prunable group, then "
        "checks "
        "that the pruned model equals the unpruned one with the same structures zeroed.",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--sparsity", type=float, default=0.5, help="fraction of units removed per group, in [0, 1)")
    p.add_argument("--importance", default="l2", metavar="NAME",
                   help=f"group criterion that needs no calibration data: {', '.join(CRITERIA)}")
    add_deprecated_alias(p, "--ratio", "--sparsity", "sparsity", type=float)
    add_deprecated_alias(p, "--criterion", "--importance", "importance")
    add_deprecated_alias(p, "--scope", "--allocation", "allocation", choices=ALLOCATIONS)
    p.add_argument("--allocation", dest="allocation", default="uniform", choices=ALLOCATIONS,
                   help="uniform: the same fraction in every group; global: one ranking of all units")
    p.add_argument("--round-to", type=int, default=1, help="keep a multiple of this many units per group")
    p.add_argument("--exclude", nargs="*", default=[], help="module names whose parameters must not change")
    p.add_argument("--include-norm-groups", action="store_true",
                   help="also prune groups that pass through a LayerNorm/GroupNorm or a mean (a transformer's "
                        "hidden size, ConvNeXt's channels): outputs change even for zero weights, so only "
                        "forward and output shapes are checked, not equivalence")
    p.add_argument("--image-size", type=int, default=None, help="override the image size from the config (≥ 1)")
    p.add_argument("--small-images", action="store_true",
                   help="use the smallest image size the model accepts (fast coverage runs)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the example inputs (≥ 1)")
    p.add_argument("--input-shape", action="append", default=None, metavar="SHAPE",
                   help="an input of this shape instead of the zoo's default, e.g. 1,3,16,112,112 (a video clip); "
                        "repeat for several positional inputs; NAME=SHAPE for a keyword input")
    p.add_argument("--input-dtype", action="append", default=None, metavar="DTYPE",
                   help=f"dtype of the --input-shape inputs: one for all, one per input, or NAME=DTYPE "
                        f"({', '.join(DTYPES)}; integers are drawn below the smallest embedding size)")
    p.add_argument("--inputs", default=None, metavar="MODULE:FN",
                   help="package.module:function returning the inputs (a tensor, a tuple, a dict, (args, kwargs) "
                        "or prunekit.Inputs); it may take the model as its one argument")
    p.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    p.set_defaults(func=run)


def json_error(argv: list[str], message: str) -> None:
    """``--json`` and a usage error (bad flag value): the JSON line still comes, with ``ok: false``."""
    if "--json" in argv:
        model = next((a for a in argv[1:] if not a.startswith("-")), "")
        print(json.dumps(_failure(model, message)))


def _failure(model: str, error: str) -> dict:
    return {**CheckReport(model=model, ok=False, error=error).to_dict(), "sparsity": None, "ratio": None}


def _validate(args: argparse.Namespace) -> None:
    if not 0 <= args.sparsity < 1:
        raise ConfigError(f"--sparsity must be in [0, 1) (the fraction of units removed per group), "
                          f"got {args.sparsity}")
    if args.importance not in CRITERIA:
        raise ConfigError(f"--importance {args.importance!r} is not a group criterion that needs no calibration "
                          f"data; choose one of: {', '.join(CRITERIA)}")
    if args.batch < 1:
        raise ConfigError(f"--batch must be ≥ 1 (the batch size of the example inputs), got {args.batch}")
    if args.image_size is not None and args.image_size < 1:
        raise ConfigError(f"--image-size must be ≥ 1 pixels, got {args.image_size}")
    if args.inputs and args.input_shape:
        raise ConfigError("give either --inputs (a function) or --input-shape, not both")
    if (args.inputs or args.input_shape) and (args.batch != 1 or args.image_size is not None or args.small_images):
        raise ConfigError("--batch, --image-size and --small-images shape the zoo's default inputs; with "
                          "--input-shape or --inputs give the batch and sizes there instead")
    if args.input_dtype and not args.input_shape:
        raise ConfigError("--input-dtype applies to --input-shape inputs: add --input-shape")
    InputSpec.parse(args.input_shape, args.input_dtype)
    if args.round_to < 1:
        raise ConfigError(f"--round-to must be ≥ 1, got {args.round_to}")


def run(args: argparse.Namespace) -> int:
    try:
        _validate(args)
        rep = _check(args)
    except Exception as e:  # --json: the one JSON line comes on every failure too
        if args.json:
            print(json.dumps(_failure(args.model, f"{type(e).__name__}: {e}".splitlines()[0])))
        raise
    _print_human(rep)
    if args.json:
        print(json.dumps({**rep.to_dict(), "sparsity": rep.ratio, "threads": threads.current().to_dict()}))
    return 0 if rep.ok else 1


def _check(args: argparse.Namespace):
    config = StructuredConfig(sparsity=args.sparsity, importance=args.importance, allocation=args.allocation,
                              round_to=args.round_to, exclude=tuple(args.exclude),
                              exact_only=not args.include_norm_groups)
    zm = load(args.model, image_size=args.image_size, batch=args.batch, small=args.small_images)
    inputs, source = zm.example_inputs, f"{zm.kind} default from the zoo; override with --input-shape or --inputs"
    if args.input_shape:
        inputs, source = InputSpec.parse(args.input_shape, args.input_dtype).build(zm.model), "--input-shape"
    elif args.inputs:
        inputs, source = call_inputs_fn(args.inputs, zm.model), f"--inputs {args.inputs}"
    print(f"inputs     {describe_inputs(inputs)}  ({source})", flush=True)
    for module, why in zm.pinned.items():
        print(f"kept       {module}: {why}", flush=True)
    if zm.pinned:
        config = dataclasses.replace(config, exclude=tuple(config.exclude) + tuple(zm.pinned))
    rep = check_model(args.model, zm.model, inputs, config, latency=not args.no_latency,
                      compare_at=zm.compare_at if inputs is zm.example_inputs else ())
    rep.kept = dict(zm.pinned)
    return rep


def _ratio(a: float | None, b: float | None) -> str:
    return f"{b / a:.3f}x" if a and b is not None else "-"


def _print_human(rep) -> None:
    print(f"model      {rep.model}  (threads={threads.current().threads}, {threads.current().source})")
    if rep.error:
        print(f"error      {rep.error}")
    print(f"groups     {rep.groups} found, {rep.groups_pruned} pruned, {rep.units_removed} units removed")
    print(f"params     {rep.params_before:,} -> {rep.params_after:,}  ({_ratio(rep.params_before, rep.params_after)})")
    print(f"MACs       {rep.macs_before:,} -> {rep.macs_after:,}  ({_ratio(rep.macs_before, rep.macs_after)})")
    if rep.latency_before_ms is not None:
        after = f"{rep.latency_after_ms:.2f}" if rep.latency_after_ms is not None else "-"
        print(f"latency    {rep.latency_before_ms:.2f} ms -> {after} ms  "
              f"({_ratio(rep.latency_before_ms, rep.latency_after_ms)}, CPU)")
    diff = "-" if rep.max_rel_diff is None else f"{rep.max_rel_diff:.2e}"
    note = "" if rep.exact_only else "; not expected: norm groups pruned"
    at = f" at {rep.worst_output}" if rep.worst_output and rep.max_rel_diff else ""
    print(f"equivalent {rep.equivalent}  (max relative difference {diff}{at}{note})")
    print(f"seconds    {rep.seconds:.3f} (graph capture + pruning)")
    why = f": {'; '.join(rep.fallback_reasons[:2])}" if rep.fallback_reasons else ""
    print(f"fallbacks  {rep.shape_only_fallbacks} shape-only runs repeated as real forwards{why}")
    print(f"ok         {rep.ok}")
