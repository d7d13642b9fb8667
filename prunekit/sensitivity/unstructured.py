"""Per-layer sparsities for unstructured pruning from per-layer sensitivity curves.

Greedy: starting dense, repeatedly raise the sparsity of the layer whose measured loss rise per
weight removed is smallest, by one ratio step of its curve, until the global sparsity reaches the
target; then the last layer moved is trimmed so the global sparsity is met exactly.
"""

from __future__ import annotations

import numpy as np

from prunekit.errors import ConfigError
from prunekit.sensitivity.analysis import Sensitivity

__all__ = ["allocate_sparsity"]


def allocate_sparsity(sens: Sensitivity, target: float, max_ratio: float | None = None) -> dict[str, float]:
    """``{parameter name: sparsity}`` meeting a global ``target`` sparsity over the analysed layers.

    Raises:
        ConfigError: the target exceeds what the curves reach (every layer at its largest ratio).
    """
    curves = sens.curves
    sizes = {n: c.size for n, c in curves.items()}
    total = sum(sizes.values())
    grid = {n: np.array([0.0, *[r for r in c.ratios if max_ratio is None or r <= max_ratio]])
            for n, c in curves.items()}
    reach = sum(sizes[n] * grid[n][-1] for n in curves) / total
    if not 0 <= target <= reach + 1e-9:
        raise ConfigError(f"sparsity target {target} is unreachable: the curves go up to {reach:.3f} overall "
                          f"(largest ratio per layer); ask for ≤ {reach:.3f} or analyse larger ratios")
    rise = {n: np.maximum.accumulate(np.maximum([0.0, *np.asarray(c.loss) - sens.dense_loss], 0.0))
            for n, c in curves.items()}
    step = {n: 0 for n in curves}
    removed = 0.0
    while removed / total < target - 1e-12:
        best, key = None, np.inf
        for n in curves:
            k = step[n]
            if k + 1 >= len(grid[n]):
                continue
            dn = (grid[n][k + 1] - grid[n][k]) * sizes[n]
            cost = (rise[n][k + 1] - rise[n][k]) / dn
            if cost < key:
                best, key = n, cost
        step[best] += 1
        removed += (grid[best][step[best]] - grid[best][step[best] - 1]) * sizes[best]
    out = {n: float(grid[n][step[n]]) for n in curves}
    if removed / total > target and best is not None:  # trim the last move to land on the target
        out[best] -= (removed - target * total) / sizes[best]
    return out
