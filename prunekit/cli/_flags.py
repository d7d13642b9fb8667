"""Shared flag helpers of the ``prunekit`` command: one word per idea, old spellings kept as hidden aliases.

The CLI says what the library says (issue 11): ``--sparsity`` (fraction removed), ``--importance`` (a criterion
of :func:`prunekit.list_criteria`), ``--allocation``, ``--budget``. An old spelling still works for now; it is
hidden from ``--help`` and prints one line on stderr naming the new flag.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["DEPRECATED_FLAGS", "add_deprecated_alias", "positive_int"]

#: every old spelling still read, old flag -> new flag (tests keep docs free of them)
DEPRECATED_FLAGS: dict[str, str] = {}


class _Deprecated(argparse.Action):
    """Stores like the new flag would (through ``type``), after a one-line notice on stderr."""

    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"prunekit: note: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs) -> None:
    """Adds ``old`` as a hidden alias of ``new`` (same ``dest``; pass the new flag's ``type``/``choices``)."""
    DEPRECATED_FLAGS[old] = new
    parser.add_argument(old, dest=dest, action=_Deprecated, new=new, help=argparse.SUPPRESS,
                        default=argparse.SUPPRESS, **kwargs)


def positive_int(flag: str):
    """An argparse ``type`` for a positive integer: ``flag`` is named in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive integer (≥ 1), got {value}")
        return value

    return parse
