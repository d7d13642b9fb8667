"""Datasets: built-in offline ones and users' own, all behind one registry.

Example:
    >>> splits = load_dataset("digits")
    >>> splits.input_shape, splits.num_classes
    ((1, 8, 8), 10)
"""

from __future__ import annotations

from typing import Any

from prunekit.data import builtin as _builtin  # noqa: F401  (registers the built-in datasets)
from prunekit.data import user as _user  # noqa: F401  (registers imagefolder and tensors)
from prunekit.data.base import DATASETS, DataSplits, iterate_batches
from prunekit.errors import DataError

__all__ = ["DATASETS", "DataSplits", "iterate_batches", "load_dataset"]


def load_dataset(name: str, **options: Any) -> DataSplits:
    """Loads a registered dataset by name.

    ``"imagefolder:PATH"`` and ``"tensors:PATH"`` are shorthands for ``name="imagefolder",
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
