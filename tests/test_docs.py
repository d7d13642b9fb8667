"""The documentation cannot rot: every Python example in README.md and docs/ runs, and the site builds.

Each page's ```python blocks run in order in one namespace (a later block may use an earlier one's
names), in a temporary working directory, on one thread. A block that fails names the page, the block's
line and the error. The site build is ``mkdocs build --strict``: a broken link, a missing page or an API
object that no longer exists fails it (so does ``make docs``, which CI runs).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# ```python at the start of a line, up to the closing fence; the fence's indentation is removed.
_BLOCK = re.compile(r"^(?P<indent>[ \t]*)```python[^\n]*\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every ```python block of a Markdown text."""
    blocks = []
    for m in _BLOCK.finditer(text):
        indent = m.group("indent")
        code = "".join(ln[len(indent):] if ln.startswith(indent) else ln
                       for ln in m.group("code").splitlines(keepends=True))
        blocks.append((text.count("\n", 0, m.start()) + 2, code))
    return blocks


def test_python_blocks_parser():
    text = "x\n```python\na = 1\n```\n\n- item\n\n  ```python\n  b = a + 1\n  ```\n```bash\nls\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n"), (9, "b = a + 1\n")]


def _pages_with_code() -> list[Path]:
    return [p for p in PAGES if python_blocks(p.read_text(encoding="utf-8"))]


def test_readme_has_examples():
    """The README's tour is Python; if the blocks vanished this test file would silently test nothing."""
    assert len(python_blocks((ROOT / "README.md").read_text(encoding="utf-8"))) >= 2


@pytest.mark.parametrize("page", _pages_with_code(), ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run(page, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__docs__"}
    blocks = python_blocks(page.read_text(encoding="utf-8"))
    assert blocks, f"{page} was collected for its Python examples but has none"
    for line, code in blocks:
        torch.manual_seed(0)
        where = f"{page.relative_to(ROOT)}:{line}"
        try:
            exec(compile(code, where, "exec"), namespace)  # noqa: S102 - the examples are ours
        except Exception as e:
            raise AssertionError(f"the example at {where} fails: {type(e).__name__}: {e}") from e


def test_every_page_is_in_the_nav():
    """A page written under docs/ but left out of mkdocs.yml's nav would be built but never found."""
    import yaml

    class _Loader(yaml.SafeLoader):  # mkdocs.yml may hold !tags (e.g. !ENV); they do not matter here
        pass

    _Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_Loader)

    def pages(item) -> list[str]:
        if isinstance(item, str):
            return [item]
        if isinstance(item, dict):
            return [p for v in item.values() for p in pages(v)]
        if isinstance(item, list):
            return [p for v in item for p in pages(v)]
        return []

    in_nav = set(pages(config["nav"]))
    written = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert written - in_nav == set(), "pages missing from mkdocs.yml's nav"


def test_readme_links_resolve():
    """The README's relative links (to docs/ pages, recipes, results) point to files that exist."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert targets, "the README links to no file"
    missing = [t for t in targets if t and not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


_YAML = re.compile(r"^```yaml[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)


@pytest.mark.parametrize("page", [p for p in PAGES if _YAML.search(p.read_text(encoding="utf-8"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_examples_validate(page):
    """Every YAML block that is a recipe (has a ``prune`` section) passes the recipe schema."""
    import yaml

    from prunekit.pipeline.schema import parse_recipe

    text = page.read_text(encoding="utf-8")
    checked = 0
    for m in _YAML.finditer(text):
        if m.group("code").lstrip().startswith("--8<--"):
            continue  # a shipped recipe file included verbatim: the pipeline's tests validate those
        raw = yaml.safe_load(m.group("code"))
        if isinstance(raw, dict) and "prune" in raw:
            line = text.count("\n", 0, m.start()) + 1
            try:
                parse_recipe(raw, f"{page.relative_to(ROOT)}:{line}", notice=None)
            except Exception as e:
                raise AssertionError(f"the recipe at {page.relative_to(ROOT)}:{line} is invalid: {e}") from e
            checked += 1
    if not checked:
        pytest.skip("no recipe among this page's YAML blocks")


_BASH = re.compile(r"^[ \t]*```bash[^\n]*\n(?P<code>.*?)^[ \t]*```[ \t]*$", re.M | re.S)


def _cli_examples() -> list:
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in _BASH.finditer(text):
            first = text.count("\n", 0, m.start("code")) + 1
            for i, line in enumerate(m.group("code").splitlines()):
                if line.strip().startswith("prunekit "):
                    where = f"{page.relative_to(ROOT)}:{first + i}"
                    out.append(pytest.param(where, line.strip(), id=where))
    return out


@pytest.mark.parametrize(("where", "line"), _cli_examples())
def test_cli_examples_parse(where, line):
    """Every ``prunekit ...`` command shown in README or docs is accepted by the CLI's parser (not run)."""
    import shlex

    from prunekit.cli.main import build_parser

    argv = shlex.split(line, comments=True)[1:]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        raise AssertionError(f"{where}: `{line}` is not a valid prunekit command line") from e
    assert not argv or argv[0].startswith("-") or vars(args).get("command") in (argv[0], None), (where, line)


def test_docs_build_strict(tmp_path):
    """``mkdocs build --strict`` succeeds: no broken link, no missing page, every ``:::`` object exists."""
    pytest.importorskip("mkdocs", reason="the docs extra is not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings_handlers.python", reason="the docs extra is not installed")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith(("WARNING", "ERROR"))]
    detail = "\n".join(warnings or proc.stderr.splitlines()[-30:])
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{detail}"
    assert (tmp_path / "site" / "api" / "index.html").is_file()
