"""Renders the report of a ``prunekit run`` kept under bench/results/ (``report.json`` → ``report.md``).

The Markdown is the one the CLI writes (the structured pipeline's renderer), plus the notes and the
provenance that bench/results pages carry.
"""

from __future__ import annotations

from _common import render_footer  # bench/ is sys.path[0] when run as a script

from prunekit.recipe.structured import _markdown


def render(report: dict) -> str:
    """report.md from its report.json."""
    return _markdown(report) + render_footer(report)
