"""The ``prunekit`` command: a thin layer over the library.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` (called with the parsed arguments, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from prunekit._version import __version__
from prunekit.errors import PrunekitError
from prunekit.measure import threads

# Subcommand modules, in the order --help lists them.
_COMMANDS = ["demo", "run", "export", "check", "sensitivity"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunekit", description="Neural-network pruning for PyTorch.")
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"prunekit.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"prunekit.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.register(sub)
    for p in sub.choices.values():
        if any("--threads" in a.option_strings for a in p._actions):
            continue  # the subcommand defines its own (e.g. export: ONNX Runtime's threads, applied to torch too)
        p.add_argument("--threads", type=int, default=None, metavar="N",
                       help="intra-op CPU threads (default: OMP_NUM_THREADS, else 1 per process under "
                       "torchrun/pytest-xdist, else the CPUs not busy with other processes); recorded in reports")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        threads.configure(args.threads)
        return int(args.func(args) or 0)
    except PrunekitError as e:
        print(f"prunekit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunekit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
