"""``prunekit check MODEL``: prune a zoo model structurally and prove the result."""

from __future__ import annotations

import argparse
import json

from prunekit.errors import ConfigError
from prunekit.importance import names
from prunekit.measure import threads
from prunekit.pruners import StructuredConfig, check_model
from prunekit.zoo import load

#: criteria that fit: a group form that needs no calibration data (check has only example inputs)
CRITERIA = names(kind="group", data_free=True)
ALLOCATIONS = ("uniform", "global")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "check",
        help="prune a model's channels/heads structurally and check forward, shapes and equivalence",
        description="MODEL is torchvision:NAME, timm:NAME, hf:MODEL_TYPE (a tiny random config) or "
        "package.module:factory. Prunes RATIO of the units of every exactly-prunable group, then checks "
        "that the pruned model equals the unpruned one with the same structures zeroed.",
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("--ratio", type=float, default=0.5, help="fraction of units removed per group, in [0, 1)")
    p.add_argument("--criterion", default="l2", choices=CRITERIA,
                   help="group criterion of prunekit.importance (those that need no calibration data)")
    p.add_argument("--allocation", "--scope", dest="allocation", default="uniform", choices=ALLOCATIONS,
                   help="uniform: the same fraction in every group; global: one ranking of all units")
    p.add_argument("--round-to", type=int, default=1, help="keep a multiple of this many units per group")
    p.add_argument("--exclude", nargs="*", default=[], help="module names whose parameters must not change")
    p.add_argument("--include-norm-groups", action="store_true",
                   help="also prune groups that pass through a LayerNorm/GroupNorm or a mean (a transformer's "
                        "hidden size, ConvNeXt's channels): outputs change even for zero weights, so only "
                        "forward and output shapes are checked, not equivalence")
    p.add_argument("--image-size", type=int, default=None, help="override the image size from the config")
    p.add_argument("--small-images", action="store_true",
                   help="use the smallest image size the model accepts (fast coverage runs)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the example inputs")
    p.add_argument("--no-latency", action="store_true", help="skip the CPU latency measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.ratio < 1:
        raise ConfigError(f"--ratio must be in [0, 1) (the fraction of units removed per group), got {args.ratio}")
    config = StructuredConfig(sparsity=args.ratio, importance=args.criterion, allocation=args.allocation,
                              round_to=args.round_to, exclude=tuple(args.exclude),
                              exact_only=not args.include_norm_groups)
    zm = load(args.model, image_size=args.image_size, batch=args.batch, small=args.small_images)
    rep = check_model(args.model, zm.model, zm.example_inputs, config, latency=not args.no_latency)
    _print_human(rep)
    if args.json:
        print(json.dumps({**rep.to_dict(), "threads": threads.current().to_dict()}))
    return 0 if rep.ok else 1


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
    print(f"equivalent {rep.equivalent}  (max relative difference {diff}{note})")
    print(f"seconds    {rep.seconds:.3f} (graph capture + pruning)")
    why = f": {'; '.join(rep.fallback_reasons[:2])}" if rep.fallback_reasons else ""
    print(f"fallbacks  {rep.shape_only_fallbacks} shape-only runs repeated as real forwards{why}")
    print(f"ok         {rep.ok}")
