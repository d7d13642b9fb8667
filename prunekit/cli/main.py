"""The ``prunekit`` command: a thin layer over the library.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``, which
adds its parser and sets ``func`` (called with the parsed arguments, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from prunekit._version import __version__
from prunekit.errors import PrunekitError, RunStopped

# This module imports nothing heavy at its top (torch loads in main()), so that Ctrl-C in the first seconds,
# while torch loads, ends with one line like any other stop, not an import traceback.

# Subcommand modules, in the order --help lists them.
_COMMANDS = ["demo", "run", "export", "check", "sensitivity"]


class _Parser(argparse.ArgumentParser):
    """argparse's parser that remembers its last usage error (for a command's ``json_error`` hook)."""

    last_error: str | None = None

    def error(self, message: str):
        _Parser.last_error = f"{self.prog}: error: {message}"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="prunekit", description="Neural-network pruning for PyTorch.")
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
    for p in sub.choices.values():
        if any("--threads" in a.option_strings for a in p._actions):
            continue  # the subcommand defines its own (e.g. export: ONNX Runtime's threads, applied to torch too)
        p.add_argument("--threads", type=int, default=None, metavar="N",
                       help="intra-op CPU threads (default: OMP_NUM_THREADS, else 1 per process under "
                       "torchrun/pytest-xdist, else the CPUs not busy with other processes); recorded in reports")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    previous = _stop_on_signals()
    try:
        return _main(argv)
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM, wherever it came (even while torch loads)
        stop = e if isinstance(e, RunStopped) else RunStopped("SIGINT")
        print(f"prunekit: stopped by {stop.signal_name}; {_where(stop, argv)}", file=sys.stderr)
        return 128 + getattr(signal, stop.signal_name, signal.SIGINT).value
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_on_signals() -> dict:
    """SIGTERM (and SIGINT) raise :class:`RunStopped`, so a run stops at once and cleans up as for Ctrl-C."""
    def stop(signum, _frame):
        raise RunStopped(signal.Signals(signum).name)

    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread (e.g. called from a test's thread): leave signals alone
            pass
    return previous


def _where(stop: RunStopped, argv: list[str]) -> str:
    if stop.where is None:
        return "nothing was written"
    if "checkpoint" in stop.where and "--resume" not in argv:
        return f"{stop.where}; continue with: prunekit {' '.join(argv)} --resume"
    return stop.where


def _kept(e: BaseException, argv: list[str]) -> str:
    """Where a failed run kept its checkpoint, and the command that continues it."""
    where = getattr(e, "prunekit_where", None)
    if not where:
        return ""
    return f"; {where}" if "--resume" in argv else f"; {where}; continue with: prunekit {' '.join(argv)} --resume"


def _main(argv: list[str]) -> int:
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        _usage_error_hook(argv, e)
        raise
    from prunekit.measure import threads

    try:
        threads.configure(args.threads)
        return int(args.func(args) or 0)
    except PrunekitError as e:
        print(f"prunekit: error: {e}{_kept(e, argv)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug or an unforeseen input: one line, the traceback with --debug
        if debug:
            raise
        where = getattr(e, "prunekit_stage", None)
        stage = f" in stage {where!r}" if where else ""
        first = (str(e).splitlines() or [""])[0]
        print(f"prunekit: error: {args.command}{stage}: unexpected {type(e).__name__}: {first} (run again with "
              f"--debug for the traceback){_kept(e, argv)}", file=sys.stderr)
        return 1


def _usage_error_hook(argv: list[str], exit_: SystemExit) -> None:
    """A usage error of a command whose module has ``json_error(argv, message)`` (e.g. ``check --json``)."""
    if exit_.code in (0, None) or not argv or argv[0] not in _COMMANDS or _Parser.last_error is None:
        return
    hook = getattr(importlib.import_module(f"prunekit.cli.{argv[0]}"), "json_error", None)
    if hook is not None:
        hook(argv, _Parser.last_error)


if __name__ == "__main__":
    sys.exit(main())
