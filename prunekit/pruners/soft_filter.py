"""Soft filter pruning (He et al. 2018, "Soft filter pruning for accelerating deep CNNs").

After every epoch, in each pruned layer the fraction ``ratio`` of filters with the smallest L2 norm
‖W_o‖₂ is set to zero — but not masked: the zeroed filters keep receiving gradients and may grow back
and be chosen again later. At the end the lowest-norm filters are zeroed a last time and masked for
good (hard), bias included, so they can be removed physically. The training loop is
:func:`prunekit.pipeline.methods.soft_filter.soft_filter_train`.

Only the filter weights are zeroed during training, not the biases: with a zero bias a ReLU unit
without BatchNorm outputs exactly 0 and has zero gradient, so it could never grow back and soft
pruning would degenerate into hard pruning (in the paper's BN networks the BN shift keeps it alive).

Hard filter pruning, the comparison: mask the same fraction of filters once (by ‖W_o‖₂) and
fine-tune with the mask fixed.

Example:
    >>> zero_lowest_filters(model, ["0.weight"], 0.5)   # after an epoch: half the filters zero, not masked
    >>> hard_filter_pruner(model, 0.5).layer_sparsity()  # the comparison: masked once
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.pruners.unstructured import UnstructuredConfig, UnstructuredPruner, check_sparsity

__all__ = ["SoftFilterConfig", "zero_lowest_filters", "hard_filter_pruner", "filter_pruner"]


@dataclass(frozen=True)
class SoftFilterConfig:
    """``ratio``: fraction of filters per layer zeroed each epoch (and removed at the end);
    ``exclude``: layer-name patterns left alone (e.g. the classifier)."""

    ratio: float = 0.5
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_sparsity(self.ratio, "soft_filter ratio")


def filter_pruner(model: nn.Module, ratio: float, exclude: tuple[str, ...]) -> UnstructuredPruner:
    cfg = UnstructuredConfig(importance="l2", allocation="uniform", granularity="filter", exclude=tuple(exclude))
    pruner = UnstructuredPruner(model, cfg)
    if ratio <= 0:
        raise ConfigError(f"filter ratio must be > 0, got {ratio}")
    return pruner


@torch.no_grad()
def zero_lowest_filters(model: nn.Module, names: list[str], ratio: float, biases: bool = False) -> int:
    """Sets the round(ratio·C_out) lowest-L2 filters of each weight in ``names`` to zero (their biases
    too if ``biases``).

    Returns:
        How many filters were zeroed in total.
    """
    params = dict(model.named_parameters())
    zeroed = 0
    for n in names:
        w = params[n]
        k = round(ratio * w.shape[0])  # as the layer scope counts, so the final mask fixes the same filters
        if k == 0:
            continue
        idx = torch.argsort(w.reshape(w.shape[0], -1).norm(dim=1), stable=True)[:k]
        w[idx] = 0
        bias = params.get(n.rsplit(".", 1)[0] + ".bias") if "." in n else params.get("bias")
        if biases and bias is not None:
            bias[idx] = 0
        zeroed += k
    return zeroed


def hard_filter_pruner(model: nn.Module, ratio: float, exclude: tuple[str, ...] = ()) -> UnstructuredPruner:
    """Masks the ``ratio`` lowest-L2 filters of every prunable layer once (Li et al. 2017)."""
    pruner = filter_pruner(model, ratio, exclude)
    pruner.prune_to(ratio)
    return pruner
