"""What :func:`prunekit.prune_` returns: plain data about what was removed, no model inside."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["PruneResult"]


@dataclass
class PruneResult:
    """What one :func:`prunekit.prune_` call did, measured on the model before and after.

    Attributes:
        kind: ``"unstructured"`` (masks) or ``"structured"`` (units removed, the model is smaller).
        sparsity: fraction removed: of the prunable weights (unstructured) or of the prunable units
            of all groups (structured).
        removed: per pruned parameter, weights zeroed (unstructured); per group, units removed (structured).
        layer_sparsity: per pruned parameter / per group, the fraction removed.
        params_before, params_after: parameter counts; unstructured: non-zero parameters after.
        macs_before, macs_after: MACs of one forward on ``example_inputs`` (None without inputs);
            unstructured: MACs left after skipping zero weights.
        masks: unstructured: the 0/1 mask of every pruned parameter (CPU tensors); empty for structured.
        skipped: structured: groups left out because removing them broke a module's code.
        allocation: structured with a budget: the allocation's summary (:meth:`Allocation.to_dict`).
        seconds: wall time of the pruning itself (scoring, selection, removal), not the measurements.
    """

    kind: str
    sparsity: float
    removed: dict[str, int] = field(default_factory=dict)
    layer_sparsity: dict[str, float] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    macs_before: int | None = None
    macs_after: int | None = None
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    allocation: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def params_kept(self) -> float:
        """params_after / params_before."""
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def macs_kept(self) -> float | None:
        """macs_after / macs_before (None without example inputs)."""
        if self.macs_before is None or self.macs_after is None or not self.macs_before:
            return None
        return self.macs_after / self.macs_before

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (masks as their sparsity only)."""
        out = {k: getattr(self, k) for k in ("kind", "sparsity", "removed", "layer_sparsity", "params_before",
                                             "params_after", "macs_before", "macs_after", "skipped", "allocation",
                                             "seconds")}
        out["params_kept"], out["macs_kept"] = self.params_kept, self.macs_kept
        return out
