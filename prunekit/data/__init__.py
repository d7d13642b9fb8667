"""Datasets: built-in offline ones and users' own, all behind one registry.

Example:
    >>> splits = load_dataset("digits")
    >>> splits.input_shape, splits.num_classes
    ((1, 8, 8), 10)
"""

from __future__ import annotations

from typing import Any

from prunekit.data import builtin as _builtin  # noqa: F401  (registers the built-in datasets)
from prunekit.data import text as _text  # noqa: F401  (registers rotten-tomatoes, lee-sts and text)
from prunekit.data import user as _user  # noqa: F401  (registers imagefolder and tensors)
from prunekit.data.base import DATASETS, DataSplits, iterate_batches
from prunekit.data.text import TEXT_DATASETS, TextSplit, TextSplits
from prunekit.errors import DataError

__all__ = ["DATASETS", "TEXT_DATASETS", "DataSplits", "TextSplit", "TextSplits", "iterate_batches", "load_dataset"]


def load_dataset(name: str, **options: Any) -> DataSplits | TextSplits:
    """Loads a registered dataset by name (text datasets return :class:`TextSplits`).

    ``"imagefolder:PATH"``, ``"tensors:PATH"`` and ``"text:PATH"`` are shorthands for ``name="imagefolder",
    path=PATH``.
    """
    if ":" in name:
        name, path = name.split(":", 1)
        options = {"path": path, **options}
    loader = DATASETS.get(name)
    try:
        return loader(**options)
    except TypeError as e:
        raise DataError(f"dataset {name!r}: bad options {sorted(options)}: {e}") from None
