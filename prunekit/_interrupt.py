"""Ctrl-C while the ``prunekit`` command starts, before its own handler is in place: one line, no traceback.

The command installs its signal handlers first thing in :func:`prunekit.cli.main.main`, but Python has to import
the package and the CLI before it gets there (tens of milliseconds, more under load), and a Ctrl-C in that window
would print a KeyboardInterrupt traceback from the middle of an import. So the package's first statement calls
:func:`install_if_command`, which, only in a process started as the command (``prunekit …``,
``python -m prunekit …`` or ``python -m prunekit.cli.main …``, whose SIGINT handler is still Python's default),
makes SIGINT end the process at once with the command's one-line message. Importing prunekit anywhere else (a
script, a notebook, the tests) leaves signals alone. Nothing is written before ``main()`` starts, so "nothing
was written" is true.
"""

import os
import signal
import sys

__all__ = ["install_if_command"]

_COMMAND_MODULES = ("prunekit", "prunekit.cli.main", "prunekit.__main__")


def _is_command() -> bool:
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) in ("prunekit", "prunekit.exe"):
        return True
    orig = list(getattr(sys, "orig_argv", []))
    return any(a == "-m" and i + 1 < len(orig) and orig[i + 1] in _COMMAND_MODULES for i, a in enumerate(orig))


def _stop(_signum, _frame) -> None:
    os.write(2, b"prunekit: stopped by SIGINT; nothing was written\n")
    os._exit(128 + signal.SIGINT.value)


def install_if_command() -> None:
    """Makes SIGINT end a starting ``prunekit`` command with one line (see the module docstring)."""
    if not _is_command() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return
    try:
        signal.signal(signal.SIGINT, _stop)
    except ValueError:  # not the main thread
        pass
