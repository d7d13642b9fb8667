"""Pruning at initialisation: choose the mask before any training, then train the sparse network.

- SNIP (Lee et al. 2019): one shot, S = |θ₀ ⊙ ∂L/∂θ₀| on a calibration batch.
- SynFlow (Tanaka et al. 2020): ``iterations`` rounds (100 in the paper) on the exponential schedule
  s_k = 1 − (1 − s_f)^{k/n}, rescoring the data-free synaptic flow |θ ⊙ ∂R/∂θ| after each round, which
  avoids layer collapse.

Example:
    >>> pruner = UnstructuredPruner(model, UnstructuredConfig(importance="synflow"), calibration=(x, y))
    >>> prune_at_init(pruner, target=0.9, iterations=100)
    >>> train(model, data, cfg)          # masks keep the pruned weights at zero
"""

from __future__ import annotations

from prunekit.errors import ConfigError
from prunekit.pruners.schedules import iterative_sparsity
from prunekit.pruners.unstructured import UnstructuredPruner

__all__ = ["prune_at_init", "DEFAULT_ITERATIONS"]

#: Scoring rounds per criterion when none are given: SNIP is single-shot, SynFlow iterative.
DEFAULT_ITERATIONS = {"snip": 1, "synflow": 100}


def prune_at_init(pruner: UnstructuredPruner, target: float, iterations: int | None = None) -> float:
    """Prunes the (untrained) model of ``pruner`` to ``target`` in ``iterations`` scoring rounds.

    Returns:
        The sparsity reached.
    """
    n = iterations if iterations is not None else DEFAULT_ITERATIONS.get(pruner.criterion.name, 1)
    if n < 1:
        raise ConfigError(f"iterations must be ≥ 1, got {n}")
    start = pruner.sparsity()
    for k in range(1, n + 1):
        pruner.prune_to(target, lambda s, k=k: iterative_sparsity(s, k, n, start))
    return pruner.sparsity()
