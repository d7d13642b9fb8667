"""The one place the pipeline calls the pruning library.

Every prune method builds its masks through :func:`mask_pruner` and removes structure through
:func:`structured_prune`. The recipe's words are the library's: ``importance`` (a criterion of the one registry,
:mod:`prunekit.importance`), ``allocation``, ``budget`` with ``macs_kept`` / ``params_kept``; a mask method's
options become the same validated :class:`~prunekit.UnstructuredConfig` that ``prunekit.prune_`` takes.

Why not ``prunekit.prune_`` itself: the verb prunes once (and refuses a model that already carries masks), while
the schedules move the masks step by step (iterative, gradual, lottery), so they drive the
:class:`~prunekit.pruners.UnstructuredPruner` the verb wraps. Its ``StructuredConfig`` has no latency-ranked
allocation (``allocation_cost``, ``latency_passes``, ``latency_weight``, a saved ``latency_table``),
``max_deviation``, BN re-estimation before sensitivity, or separate scoring and sensitivity data, all of which the
shipped structured recipes use; so :func:`structured_prune` calls :func:`~prunekit.allocation.prune_to_budget`,
which the verb's budget handler wraps too. When the verb gains those, only this module changes.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from prunekit.allocation import Budget, prune_to_budget
from prunekit.errors import ConfigError
from prunekit.importance import DATA_NEEDS, get
from prunekit.pruners import UNSTRUCTURED_ALLOCATIONS, UnstructuredConfig, UnstructuredPruner

__all__ = ["MASK_ALLOCATIONS", "check_importance", "importance_needs_data", "mask_pruner", "structured_prune",
           "budget_from"]

#: Per-layer spreading of a mask target.
MASK_ALLOCATIONS = {name: name for name in UNSTRUCTURED_ALLOCATIONS}


def check_importance(name: str, kind: str) -> None:
    """Raises ConfigError unless ``name`` is a registered criterion with a ``kind`` form (``weight`` or
    ``group``); the message lists the criteria that have one."""
    get(name, kind)


def importance_needs_data(name: str, kind: str) -> bool:
    """Whether the criterion scores on a calibration batch (a trained model's; at-init criteria bring
    their own). A single-weight form that only needs the input shape gets the batch too."""
    c = get(name, kind)
    if kind == "group":
        return c.needs_data
    return bool(c.needs & (DATA_NEEDS | {"example_inputs"})) and not c.at_init


def scores_at_init(name: str) -> bool:
    return get(name).at_init


def mask_pruner(model: nn.Module, opts: Any, seed: int) -> UnstructuredPruner:
    """A mask holder for ``model`` configured from mask-method options (fails on layers it cannot prune)."""
    allocation = getattr(opts, "allocation", "global")
    if allocation not in MASK_ALLOCATIONS:
        raise ConfigError(f"unknown allocation {allocation!r}; choose one of: {', '.join(sorted(MASK_ALLOCATIONS))}")
    return UnstructuredPruner(model, UnstructuredConfig(
        importance=opts.importance, allocation=MASK_ALLOCATIONS[allocation], ratios=dict(opts.ratios),
        threshold=opts.threshold, exclude=tuple(opts.exclude), include_bias=opts.include_bias, seed=seed,
        granularity=opts.granularity, nm=tuple(opts.nm_pattern())))


def budget_from(budget: dict[str, Any]):
    """The allocation Budget of a recipe budget (``macs_kept``/``params_kept`` are fractions kept)."""
    return Budget.from_dict(budget)


def structured_prune(model: nn.Module, example, budget, allocation, importance, calibration, sensitivity,
                     validation, exclude, latency_repeats: int, latency_table=None) -> dict:
    """Scores, allocates and removes units to meet ``budget``; returns the JSON-ready result."""
    res = prune_to_budget(model, example, budget, allocation, importance, calibration, sensitivity, validation,
                          tuple(exclude), latency_repeats, latency_table=latency_table)
    return res.to_dict()
