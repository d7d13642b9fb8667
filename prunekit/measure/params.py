"""Parameter counts and sparsity.

Sparsity of a weight matrix W with mask M follows Han et al. (2015): S = 1 − ‖M‖₀ / (m·n), i.e.
the fraction of entries that are exactly zero. Tied (shared) parameters are counted once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ParamCount", "count_params", "layer_sparsity", "global_sparsity"]


@dataclass(frozen=True)
class ParamCount:
    total: int
    nonzero: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.total if self.total else 0.0

    @property
    def compression(self) -> float:
        """Dense / non-zero parameter count (Han et al.'s compression rate)."""
        return self.total / self.nonzero if self.nonzero else float("inf")


def _unique_params(model: nn.Module):
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            yield p


def count_params(model: nn.Module) -> ParamCount:
    """Counts all parameters of ``model`` and those that are non-zero."""
    total = nonzero = 0
    for p in _unique_params(model):
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    return ParamCount(total, nonzero)


def layer_sparsity(model: nn.Module, names: list[str] | None = None) -> dict[str, float]:
    """Sparsity of each named weight tensor (``module.weight``) with at least two dimensions.

    Args:
        model: the model.
        names: restrict to these parameter names; default all weights of rank ≥ 2.
    """
    out = {}
    for name, p in model.named_parameters():
        if (names is None and p.dim() >= 2) or (names is not None and name in names):
            out[name] = 1.0 - int(torch.count_nonzero(p.detach())) / p.numel()
    return out


def global_sparsity(model: nn.Module, names: list[str] | None = None) -> float:
    """Sparsity over the weights :func:`layer_sparsity` would report, weighted by size."""
    params = dict(model.named_parameters())
    chosen = [params[n] for n in (names or layer_sparsity(model))]
    total = sum(p.numel() for p in chosen)
    zeros = sum(p.numel() - int(torch.count_nonzero(p.detach())) for p in chosen)
    return zeros / total if total else 0.0
