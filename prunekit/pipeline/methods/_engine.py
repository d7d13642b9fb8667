"""The one place the pipeline calls the pruning library.

Every prune method builds its masks through :func:`mask_pruner` and removes structure through
:func:`structured_prune`; when the top-level verb ``prunekit.prune_`` replaces these internals, only this
module changes. Recipe vocabulary → library names: ``allocation: uniform`` is the pruner's scope ``layer``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from prunekit.criteria import get_criterion
from prunekit.errors import ConfigError
from prunekit.importance import IMPORTANCE
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner

__all__ = ["MASK_ALLOCATIONS", "check_importance", "importance_needs_data", "mask_pruner", "structured_prune",
           "budget_from"]

#: Per-layer spreading of a mask target (recipe word → the pruner's scope name).
MASK_ALLOCATIONS = {"uniform": "layer", "global": "global", "ratios": "ratios", "threshold": "threshold"}


def check_importance(name: str, kind: str) -> None:
    """Raises ConfigError unless ``name`` is a registered criterion of ``kind`` (``weight`` or ``group``)."""
    if kind == "group":
        IMPORTANCE.get(name)
    else:
        get_criterion(name)


def importance_needs_data(name: str, kind: str) -> bool:
    if kind == "group":
        return bool(IMPORTANCE.get(name).needs)
    c = get_criterion(name)
    return bool(c.needs & {"data", "input_shape"}) and not c.at_init


def scores_at_init(name: str) -> bool:
    return bool(get_criterion(name).at_init)


def mask_pruner(model: nn.Module, opts: Any, seed: int) -> UnstructuredPruner:
    """A mask holder for ``model`` configured from mask-method options (fails on layers it cannot prune)."""
    allocation = getattr(opts, "allocation", "global")
    if allocation not in MASK_ALLOCATIONS:
        raise ConfigError(f"unknown allocation {allocation!r}; choose one of: {', '.join(sorted(MASK_ALLOCATIONS))}")
    return UnstructuredPruner(model, UnstructuredConfig(
        criterion=opts.importance, scope=MASK_ALLOCATIONS[allocation], ratios=dict(opts.ratios),
        threshold=opts.threshold, exclude=tuple(opts.exclude), include_bias=opts.include_bias, seed=seed,
        granularity=opts.granularity, nm=tuple(opts.nm_pattern())))


def budget_from(budget: dict[str, Any]):
    """The allocation Budget of a recipe budget (``macs_kept``/``params_kept`` are fractions kept)."""
    from prunekit.allocation import Budget

    names = {"macs_kept": "macs", "params_kept": "params", "latency_ms": "latency_ms", "batch": "batch",
             "tolerance": "tolerance"}
    unknown = sorted(set(budget) - set(names))
    if unknown:
        raise ConfigError(f"unknown budget key(s) {unknown}; valid: {', '.join(names)} (e.g. {{macs_kept: 0.5}} keeps "
                          f"half the MACs)")
    d = {names[k]: (int(v) if k == "batch" else v) for k, v in budget.items()}
    try:
        return Budget(**d)
    except ConfigError as e:  # say it in the recipe's words
        msg = str(e).replace("macs=", "macs_kept=").replace("params=", "params_kept=")
        msg = msg.replace("one of macs, params,", "one of macs_kept, params_kept,")
        raise ConfigError(msg) from None


def structured_prune(model: nn.Module, example, budget, allocation, importance, calibration, sensitivity,
                     validation, exclude, latency_repeats: int, latency_table=None) -> dict:
    """Scores, allocates and removes units to meet ``budget``; returns the JSON-ready result."""
    from prunekit.allocation import prune_to_budget

    res = prune_to_budget(model, example, budget, allocation, importance, calibration, sensitivity, validation,
                          tuple(exclude), latency_repeats, latency_table=latency_table)
    return res.to_dict()
