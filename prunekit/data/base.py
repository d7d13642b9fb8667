"""In-memory datasets: three tensor splits and the facts a model needs (input shape, classes)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from prunekit.errors import DataError
from prunekit.registry import Registry

__all__ = ["DataSplits", "DATASETS", "iterate_batches", "split_indices"]


@dataclass
class DataSplits:
    """Train/validation/test tensors of one dataset, already normalised.

    ``x_*`` are float tensors of shape (N, *input_shape); ``y_*`` int64 class labels.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if len(x) != len(y):
                raise DataError(f"{self.name}: {split} has {len(x)} inputs but {len(y)} labels")
            if len(x) == 0:
                raise DataError(f"{self.name}: the {split} split is empty")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}


#: Dataset loaders by name. Each is called with keyword options and returns :class:`DataSplits`.
DATASETS: Registry = Registry("dataset")


def split_indices(n: int, fractions: tuple[float, float, float], seed: int) -> list[torch.Tensor]:
    """A seeded random partition of ``range(n)`` into train/val/test by ``fractions``."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_train = round(n * fractions[0])
    n_val = round(n * fractions[1])
    return [perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]]


def iterate_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yields ``(x, y)`` mini-batches; a seeded ``generator`` makes the shuffle reproducible."""
    n = len(x)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]
