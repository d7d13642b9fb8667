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


# API reference: one generated page per public subpackage of prunekit, in the order of the layers
# (top first); a package not listed here goes after them. ``cli`` and the recipe files have none.
API_ORDER = ["pipeline", "api", "pruners", "allocation", "sensitivity", "importance", "structured", "graph",
             "measure", "masks", "recovery", "training", "data", "models", "io", "report", "export"]
API_SKIP = {"cli", "recipes"}
API_CORE = ["errors", "registry", "zoo"]  # top-level modules, on one page


def api_packages() -> list[str]:
    """The public subpackages of ``prunekit`` in this checkout, top layer first."""
    found = {p.parent.name for p in (ROOT / "prunekit").glob("*/__init__.py")
             if not p.parent.name.startswith("_") and p.parent.name not in API_SKIP}
    return [n for n in API_ORDER if n in found] + sorted(found - set(API_ORDER))


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


def on_config(config):
    """Appends the generated API pages to the nav's "API reference" section."""
    entries = [{f"prunekit.{name}": f"api/{name}.md"} for name in api_packages()]
    entries.append({"core (errors, registry, zoo)": "api/core.md"})
    for item in config["nav"]:
        if isinstance(item, dict) and isinstance(item.get("API reference"), list):
            item["API reference"] = item["API reference"] + entries
            return config
    raise ValueError("mkdocs.yml's nav has no 'API reference' section for the generated API pages")


def on_files(files, config):
    """Adds the generated API pages and every file under ``bench/results/`` (Markdown files become pages)."""
    for name in api_packages():
        files.append(File.generated(config, f"api/{name}.md",
                                    content=f"# `prunekit.{name}`\n\n::: prunekit.{name}\n"
                                            f"    options:\n      show_root_heading: false\n"))
    core = "".join(f"\n::: prunekit.{m}\n" for m in API_CORE if (ROOT / "prunekit" / f"{m}.py").is_file())
    files.append(File.generated(config, "api/core.md", content=f"# Core: errors, registry, zoo\n{core}"))
    for path in sorted(RESULTS.rglob("*")):
        if path.is_file():
            rel = path.relative_to(RESULTS).as_posix()
            files.append(File.generated(config, f"{RESULTS_URL}/{rel}", abs_src_path=str(path)))
    return files


def _api_index() -> str:
    """A table of the generated API pages with each package's one-line summary."""
    import importlib

    rows = ["| package | what it is |", "|---|---|"]
    for name in api_packages():
        doc = (importlib.import_module(f"prunekit.{name}").__doc__ or "").strip().split("\n\n")[0]
        rows.append(f"| [`prunekit.{name}`]({name}.md) | {_cell(' '.join(doc.split()))} |")
    rows.append("| [core](core.md) | errors, the registry, model zoos |")
    return "\n".join(rows)


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
    """One row per registered importance criterion: name, its needs, its forms, its docstring's summary."""
    from prunekit import importance

    registry = importance.IMPORTANCE
    rows = ["| criterion | needs | structured (groups) | unstructured (weights) | formula and paper |",
            "|---|---|---|---|---|"]
    for name in registry.names():
        crit = registry.get(name)
        needs = ", ".join(sorted(crit.needs)) or "nothing"
        forms = ["yes" if getattr(crit, form, None) is not None else "—" for form in ("group", "weight")]
        summary = " ".join((crit.doc or "").strip().split("\n\n")[0].split())
        rows.append(f"| `{name}` | {needs} | {forms[0]} | {forms[1]} | {_cell(summary)} |")
    return "\n".join(rows)


def _criteria_needs() -> str:
    """What each word of a criterion's ``needs`` means, from ``prunekit.importance.NEEDS``."""
    from prunekit.importance import NEEDS

    return "\n".join(["| need | meaning |", "|---|---|"] + [f"| `{k}` | {_cell(v)} |" for k, v in NEEDS.items()])


_TABLE = re.compile(r"<!-- results-table:start[^>]*-->\n(?P<table>.*?)<!-- results-table:end -->", re.S)


def _readme_benchmarks() -> str:
    """The README's benchmark table (rendered there from the results JSON), with file names as links."""
    m = _TABLE.search((ROOT / "README.md").read_text(encoding="utf-8"))
    if m is None:
        raise ValueError("README.md has no benchmark table between <!-- results-table:start --> and "
                         "<!-- results-table:end --> (bench/render.py writes it)")
    return _link_results(m.group("table").strip())


def _link_results(markdown: str) -> str:
    """`` `han.json` `` / `` `han.md` `` → a link to the published results page (or file), where it exists."""

    def link(m: re.Match) -> str:
        name = m.group(1)
        page = RESULTS / (name.rsplit(".", 1)[0] + ".md")
        if page.is_file():
            return f"[`{name}`]({RESULTS_URL}/{page.relative_to(RESULTS).as_posix()})"
        if (RESULTS / name).is_file():
            return f"[`{name}`]({RESULTS_URL}/{name})"
        return m.group(0)

    return re.sub(r"`([\w./-]+\.(?:md|json))`", link, markdown)


def _results_index() -> str:
    """Every Markdown file under ``bench/results/``, with its first heading."""
    rows = ["| file | title |", "|---|---|"]
    for path in sorted(RESULTS.rglob("*.md")):
        rel = path.relative_to(RESULTS).as_posix()
        title = next((ln.lstrip("# ").strip() for ln in path.read_text(encoding="utf-8").splitlines()
                      if ln.startswith("#")), rel)
        rows.append(f"| [`{rel}`]({RESULTS_URL}/{rel}) | {_cell(title)} |")
    if len(rows) == 2:
        raise ValueError(f"no Markdown results under {RESULTS}")
    return "\n".join(rows)


def _shipped_recipes() -> str:
    """Every YAML file shipped in ``prunekit/recipes/``, with the first line of its header comment."""
    rows = ["| recipe | what it does |", "|---|---|"]
    for path in sorted((ROOT / "prunekit" / "recipes").glob("*.yaml")):
        comment = next((ln.lstrip("# ").strip() for ln in path.read_text(encoding="utf-8").splitlines()
                        if ln.startswith("#")), "")
        rows.append(f"| `{path.stem}` | {_cell(comment)} |")
    if len(rows) == 2:
        raise ValueError("no shipped recipes under prunekit/recipes/")
    return "\n".join(rows)


def _prune_methods() -> str:
    """The recipe's prune methods, from their registry: a table, then each method's keys and defaults."""
    from prunekit.pipeline.methods import PRUNE_METHODS

    rows = ["| `prune.method` | kind | what it does |", "|---|---|---|"]
    sections = []
    for name in PRUNE_METHODS.names():
        method = PRUNE_METHODS.get(name)
        rows.append(f"| [`{name}`](#method-{name}) | {method.kind} | {_cell(method.summary)} |")
        sections += [f"### `{name}` {{ #method-{name} }}", "", _options_table(method.options), ""]
    return "\n".join(rows + [""] + sections)


def _options_table(options: type) -> str:
    """A dataclass's docstring and a table of its fields (the ``prune:`` keys) with their defaults."""
    import dataclasses
    import inspect

    doc = inspect.getdoc(options) or ""
    rows = ["| key | default |", "|---|---|"]
    for f in dataclasses.fields(options):
        if f.default is not dataclasses.MISSING:
            default = f"`{f.default!r}`"
        elif f.default_factory is not dataclasses.MISSING:
            default = f"`{f.default_factory()!r}`"
        else:
            default = "required"
        rows.append(f"| `{f.name}` | {_cell(default)} |")
    return f"{doc}\n\n" + "\n".join(rows) + f"\n\n(`{options.__module__}.{options.__qualname__}`)"


GENERATORS = {
    "api-index": _api_index,
    "cli-help": _cli_help,
    "criteria-needs": _criteria_needs,
    "criteria-table": _criteria_table,
    "prune-methods": _prune_methods,
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


_SPHINX_ROLE = re.compile(r":(?:func|class|mod|data|meth|attr|exc|obj):(?=<code>)")


def on_page_content(html, page, config, files):
    """Docstrings use Sphinx roles (``:func:`name```); on the site the name alone reads better."""
    return _SPHINX_ROLE.sub("", html)
