"""MkDocs hooks: the parts of the site that are generated, so they cannot drift from the code.

- ``bench/results/`` is published under ``benchmarks/results/`` (the Markdown files as pages, the
  JSON and plots beside them), so the benchmark pages link to the committed results themselves.
- ``<!-- gen:NAME -->`` markers in a page are replaced by generated Markdown (see ``GENERATORS``):
  the CLI's ``--help`` texts, the criteria table read from the importance registry, the README's
  benchmark table and an index of the results files.

Every generator raises when what it reads is missing, which fails the (strict) build.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RESULTS_URL = "benchmarks/results"  # where bench/results/ lands in the site

# The site documents this checkout, not whatever prunekit the interpreter would find first.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def on_files(files, config):
    """Adds every file under ``bench/results/`` to the site (Markdown files become pages)."""
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file():
            rel = path.relative_to(RESULTS).as_posix()
            files.append(File.generated(config, f"{RESULTS_URL}/{rel}", abs_src_path=str(path)))
    return files


def _cli_help() -> str:
    """``prunekit --help`` and every subcommand's ``--help``, from the parser itself."""
    from prunekit.cli.main import build_parser

    parser = build_parser()
    out = ["```text", _plain_help(parser), "```"]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, subparser in sub.choices.items():
        out += ["", f"## `prunekit {name}`", "", "```text", _plain_help(subparser), "```"]
    return "\n".join(out)


def _plain_help(parser: argparse.ArgumentParser) -> str:
    parser.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=100)
    return parser.format_help().rstrip()


def _criteria_table() -> str:
    """One row per registered importance criterion: name, what it needs, forms, first docstring line."""
    from prunekit import importance

    registry = importance.IMPORTANCE
    rows = ["| criterion | needs | unstructured (single weights) | what it scores |", "|---|---|---|---|"]
    for name in registry.names():
        crit = registry.get(name)
        needs = ", ".join(sorted(crit.needs)) or "nothing (data-free)"
        weight = "yes" if getattr(crit, "weight", None) is not None else "no"
        summary = " ".join((crit.doc or "").strip().split("\n\n")[0].split())
        rows.append(f"| `{name}` | {needs} | {weight} | {summary.replace('|', '/')} |")
    return "\n".join(rows)


_TABLE_START = re.compile(r"^\| benchmark \|", re.M)


def _readme_benchmarks() -> str:
    """The README's benchmark table (generated there from the results JSON), with file names as links."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = _TABLE_START.search(text)
    if start is None:
        raise ValueError("README.md has no benchmark table (a line starting '| benchmark |')")
    lines = []
    for line in text[start.start():].splitlines():
        if not line.startswith("|"):
            break
        lines.append(line)
    return _link_results("\n".join(lines))


def _link_results(markdown: str) -> str:
    """`` `han.md` `` → a link to the published results page, where that file exists."""

    def link(m: re.Match) -> str:
        name = m.group(1)
        path = RESULTS / name
        return f"[`{name}`]({RESULTS_URL}/{name})" if path.is_file() else m.group(0)

    return re.sub(r"`([\w./-]+\.md)`", link, markdown)


def _results_index() -> str:
    """Every Markdown file under ``bench/results/``, with its first heading."""
    rows = ["| file | title |", "|---|---|"]
    for path in sorted(RESULTS.rglob("*.md")):
        rel = path.relative_to(RESULTS).as_posix()
        title = next((ln.lstrip("# ").strip() for ln in path.read_text(encoding="utf-8").splitlines()
                      if ln.startswith("#")), rel)
        rows.append(f"| [`{rel}`]({RESULTS_URL}/{rel}) | {title.replace('|', '/')} |")
    if len(rows) == 2:
        raise ValueError(f"no Markdown results under {RESULTS}")
    return "\n".join(rows)


def _shipped_recipes() -> str:
    """Every YAML file shipped in ``prunekit/recipes/``, with the first line of its header comment."""
    rows = ["| recipe | what it does |", "|---|---|"]
    for path in sorted((ROOT / "prunekit" / "recipes").glob("*.yaml")):
        comment = next((ln.lstrip("# ").strip() for ln in path.read_text(encoding="utf-8").splitlines()
                        if ln.startswith("#")), "")
        rows.append(f"| `{path.stem}` | {comment.replace('|', '/')} |")
    if len(rows) == 2:
        raise ValueError("no shipped recipes under prunekit/recipes/")
    return "\n".join(rows)


GENERATORS = {
    "cli-help": _cli_help,
    "criteria-table": _criteria_table,
    "readme-benchmarks": _readme_benchmarks,
    "results-index": _results_index,
    "shipped-recipes": _shipped_recipes,
}
_MARKER = re.compile(r"<!-- gen:([\w-]+) -->")


def on_page_markdown(markdown, page, config, files):
    """Replaces each ``<!-- gen:NAME -->`` marker with the output of ``GENERATORS[NAME]``."""

    def generate(m: re.Match) -> str:
        name = m.group(1)
        if name not in GENERATORS:
            raise ValueError(f"{page.file.src_path}: unknown generator {name!r}; known: {', '.join(GENERATORS)}")
        return GENERATORS[name]()

    return _MARKER.sub(generate, markdown)
