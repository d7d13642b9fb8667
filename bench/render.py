"""Re-renders every results page and the README's benchmark table from the committed JSON.

Nothing is re-run. Each ``bench/results/**/NAME.md`` is rendered from ``NAME.json`` (``report.md`` from
``report.json``) by the ``render(result)`` function of the script that wrote it (the JSON's
``provenance.script``); the README's table between the ``results-table`` markers by :func:`readme_table`.

    python bench/render.py            # rewrite every page that differs
    python bench/render.py --check    # exit 1 and show a diff where a committed page is not its render
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import sys
from pathlib import Path

from _common import RESULTS  # bench/ is sys.path[0] when run as a script
from _readme import MARKERS, readme_table

README = RESULTS.parent.parent / "README.md"
#: Producers that are not a script in bench/: the module here that renders their JSON.
RENDERERS = {"prunekit run": "_recipe_report"}


def json_for(md: Path) -> Path:
    """The JSON a results page is rendered from."""
    return md.with_suffix(".json")


def render_page(md: Path) -> str:
    """The Markdown ``md`` must hold: its JSON rendered by the producing script's ``render``."""
    source = json_for(md)
    if not source.exists():
        raise SystemExit(f"{md}: no {source.name} beside it; every results page is rendered from its JSON")
    result = json.loads(source.read_text())
    script = (result.get("provenance") or {}).get("script")
    if not script:
        raise SystemExit(f"{source}: no provenance.script, so no renderer is known for {md.name}")
    module = importlib.import_module(RENDERERS.get(script, Path(script).stem))
    return module.render(result)


def render_readme(text: str) -> str:
    """``text`` (the README) with the part between the markers replaced by the rendered table."""
    start, end = MARKERS
    if start not in text or end not in text:
        raise SystemExit(f"README.md: markers {start!r} / {end!r} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{readme_table()}{end}{tail}"


def pages() -> list[Path]:
    return sorted(RESULTS.rglob("*.md"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page is not its render")
    ap.add_argument("--readme", type=Path, default=README, help="the README whose table to render (default: ours)")
    ap.add_argument("--no-readme", action="store_true", help="only the results pages")
    args = ap.parse_args(argv)
    targets = [(md, render_page(md)) for md in pages()]
    if not args.no_readme:
        targets.append((args.readme, render_readme(args.readme.read_text())))
    stale = [(path, text) for path, text in targets if path.read_text() != text]
    for path, text in stale:
        if args.check:
            sys.stdout.writelines(difflib.unified_diff(path.read_text().splitlines(True), text.splitlines(True),
                                                       f"{path} (committed)", f"{path} (rendered)", n=1))
        else:
            path.write_text(text)
            print(f"rendered {path}")
    if args.check and stale:
        print(f"\n{len(stale)} file(s) differ from their render: run `python bench/render.py` and commit, or "
              "change the JSON / the script's render(), never the Markdown itself", file=sys.stderr)
        return 1
    print(f"{len(targets)} files {'checked' if args.check else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
