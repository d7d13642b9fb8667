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

# Subcommand modules, in the order --help lists them.
_COMMANDS = ["demo", "run", "export", "check", "sensitivity"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prunekit", description="Neural-network pruning for PyTorch.")
    parser.add_argument("--version", action="version", version=f"prunekit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an unexpected error "
                        "(anywhere on the command line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMANDS:
        try:
            module = importlib.import_module(f"prunekit.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"prunekit.cli.{name}":
                continue  # subcommand not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    try:
        return int(args.func(args) or 0)
    except PrunekitError as e:
        print(f"prunekit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunekit: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug or an unforeseen input: one line, the traceback with --debug
        if debug:
            raise
        where = getattr(e, "prunekit_stage", None)
        stage = f" in stage {where!r}" if where else ""
        first = (str(e).splitlines() or [""])[0]
        print(f"prunekit: error: {args.command}{stage}: unexpected {type(e).__name__}: {first} (run again with "
              "--debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
