"""Sensitivity analysis: how each group (or layer) reacts when pruned alone, at increasing ratios.

:func:`analyze` gives curves for dependency groups (structured), :func:`analyze_weights` for single
weights per layer (unstructured); :func:`allocate_sparsity` turns the latter into per-layer
sparsities for a global target; :func:`plot_sensitivity` draws the curves.
"""

from prunekit.sensitivity.analysis import (
    DEFAULT_RATIOS,
    Curve,
    Sensitivity,
    SensitivityConfig,
    analyze,
    analyze_weights,
)
from prunekit.sensitivity.plot import plot_sensitivity
from prunekit.sensitivity.unstructured import allocate_sparsity

__all__ = ["DEFAULT_RATIOS", "Curve", "Sensitivity", "SensitivityConfig", "allocate_sparsity", "analyze",
           "analyze_weights", "plot_sensitivity"]
