"""``prunekit demo``: the main job, with no arguments needed."""

from __future__ import annotations

import argparse

from prunekit.cli.run import add_run_options, execute, shipped_recipe


def _demo(args: argparse.Namespace) -> int:
    return execute(shipped_recipe("demo"), args)


def register(sub) -> None:
    p = sub.add_parser("demo", help="prune LeNet-300-100 on built-in MNIST to ≥ 92%% sparsity",
                       description="Train LeNet-300-100 on the built-in MNIST subset, prune it "
                       "iteratively with fine-tuning to 92% sparsity, and write a report.")
    add_run_options(p, default_out="runs/demo")
    p.set_defaults(func=_demo)
