"""``prunekit.prune_(model, config)``: one in-place verb; the config's type picks the method.

In the style of torchao's ``quantize_(model, Int8WeightOnlyConfig())``: :data:`HANDLERS` maps each
config type to the function that carries it out, on top of the library's methods
(:class:`~prunekit.pruners.UnstructuredPruner`, :func:`~prunekit.pruners.select_units`,
:func:`~prunekit.allocation.prune_to_budget`). Everything a config or the call lacks is reported
before any work starts.

Example:
    >>> import prunekit as pk
    >>> r = pk.prune_(model, pk.UnstructuredConfig(sparsity=0.9, importance="l1"), example_inputs=x)
    >>> r.sparsity, r.params_after
    >>> r = pk.prune_(model, pk.StructuredConfig(budget=pk.Budget(macs_kept=0.5), importance="taylor"),
    ...               example_inputs=x, calibration=pk.Calibration(x_cal, y_cal))
    >>> r = pk.prune_(llm, pk.LayerwiseConfig(solver="sparsegpt", granularity="nm", nm=(2, 4)),
    ...               calibration=pk.Calibration(token_ids))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from prunekit.allocation import AllocationConfig, prune_to_budget
from prunekit.api.result import PruneResult
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph, raise_no_groups, split_inputs
from prunekit.importance import Calibration, check_needs, names, score_groups
from prunekit.measure import count_macs, count_params
from prunekit.pruners import LayerwiseConfig, StructuredConfig, UnstructuredConfig, UnstructuredPruner, prune_layerwise
from prunekit.pruners.selection import importance_config, select_units
from prunekit.sensitivity import SensitivityConfig, analyze
from prunekit.structured import prune_with_fallback
from prunekit.training import distributed

__all__ = ["HANDLERS", "list_criteria", "prune_"]

Handler = Callable[[nn.Module, Any, Any, "Calibration | None"], PruneResult]


def list_criteria(kind: str | None = None) -> list[str]:
    """Names of the importance criteria: all, or those with a ``"group"`` form (structured) or a
    ``"weight"`` form (unstructured). Formulas: ``prunekit.importance.get(name).doc``."""
    return names(kind)


def _macs(model: nn.Module, example_inputs: Any) -> tuple[int, int] | None:
    if example_inputs is None:
        return None
    args, kwargs = split_inputs(example_inputs)
    with torch.no_grad():
        c = count_macs(model, *args, **kwargs)
    return int(c.dense), int(c.nonzero)


def _batch(calibration: Calibration | None, example_inputs: Any):
    if calibration is not None:
        return calibration.x, calibration.y
    return (example_inputs, None) if isinstance(example_inputs, torch.Tensor) else None


def _check_unmasked(model: nn.Module) -> None:
    masked = [n for n, _ in model.named_buffers() if n.endswith("_mask")]
    if masked:
        raise ConfigError(f"the model already carries masks ({', '.join(masked[:3])}...) from an earlier prune_: "
                          f"prune it again with the same pruner, or prune_ with UnstructuredConfig(permanent=True) "
                          f"so the masks are folded in")


def _prune_unstructured(model: nn.Module, config: UnstructuredConfig, example_inputs: Any,
                        calibration: Calibration | None) -> PruneResult:
    if config.sparsity is None and config.allocation in ("uniform", "global", "row") and config.granularity != "nm":
        raise ConfigError(f"UnstructuredConfig(allocation={config.allocation!r}) needs sparsity= (the fraction "
                          f"removed, e.g. sparsity=0.9)")
    check_needs(config.importance, calibration, example_inputs, kind="weight")
    _check_unmasked(model)
    pruner = UnstructuredPruner(model, config, calibration=_batch(calibration, example_inputs))
    before = count_params(model).total, _macs(model, example_inputs)
    t0 = time.perf_counter()
    sparsity = pruner.prune_to()
    seconds = time.perf_counter() - t0
    masks = {n: m.detach().float().cpu().clone() for n, m in pruner.current_masks().items()}
    if config.permanent:
        pruner.make_permanent()
    after = _macs(model, example_inputs)
    return PruneResult(
        "unstructured", sparsity, {n: int(m.numel() - m.sum()) for n, m in masks.items()}, pruner.layer_sparsity(),
        before[0], count_params(model).nonzero, None if before[1] is None else before[1][0],
        None if after is None else after[1], masks, seconds=seconds)


def _check_structured(config: StructuredConfig, example_inputs: Any, calibration: Calibration | None) -> None:
    if example_inputs is None:
        raise ConfigError("structured pruning traces one forward pass: pass example_inputs= (e.g. one input batch)")
    check_needs(config.importance, calibration, example_inputs, kind="group")
    if config.allocation in ("sensitivity", "search") and (calibration is None or calibration.y is None):
        raise ConfigError(f"allocation {config.allocation!r} evaluates the pruned model on labelled data: pass "
                          f"calibration=Calibration(x, y) (held-out data is best), or use allocation 'uniform' / "
                          f"'global'")
    timed = config.budget is not None and config.budget.metric == "latency_ms"
    if (timed or config.allocation in ("sensitivity", "search")) and not isinstance(example_inputs, torch.Tensor):
        what = "a latency budget times batches of" if timed else f"allocation {config.allocation!r} evaluates"
        raise ConfigError(f"{what} one input tensor: example_inputs must be a tensor, not "
                          f"{type(example_inputs).__name__} (wrap the model so that one tensor goes in, e.g. token "
                          f"ids), or use a MACs/params budget with allocation 'global' or 'uniform'")


def _to_sparsity(model, config, example_inputs, calibration):
    graph = DependencyGraph.build(model, example_inputs, exclude=config.exclude)
    if not graph.prunable_groups(config.exact_only):
        raise_no_groups(graph, config.exact_only)
    sizes = {g.name: g.size for g in graph.prunable_groups(config.exact_only)}
    plan = distributed.agree(select_units(graph, config, calibration))  # under torchrun: rank 0's plan
    skipped = prune_with_fallback(graph, plan)
    return {k: len(v) for k, v in plan.items() if k not in skipped}, sizes, skipped, None


def _to_budget(model, config, example_inputs, calibration):
    sens = None
    if config.allocation == "sensitivity":
        graph = DependencyGraph.build(model, example_inputs[:1], exclude=config.exclude)
        scores = score_groups(graph, importance_config(config), calibration)
        # every calibration input, in order (max_samples = N): the evaluator pairs them with their attention mask
        sens = analyze(graph, calibration.x, calibration.y, scores,
                       SensitivityConfig(config.sensitivity_ratios, len(calibration.x), config.seed), config.importance,
                       evaluate=calibration.evaluate)
    alloc_config = AllocationConfig(config.allocation, config.min_channels, config.max_ratio, config.round_to,
                                    config.population, config.generations, config.seed)
    proxy = calibration if config.allocation == "search" else None  # scored with its attention mask
    res = prune_to_budget(model, example_inputs, config.budget, alloc_config, importance_config(config), calibration,
                          sens, proxy, config.exclude)
    a = res.allocation
    return {k: len(v) for k, v in a.plan.items() if len(v)}, a.sizes, [], res.to_dict()


def _prune_structured(model: nn.Module, config: StructuredConfig, example_inputs: Any,
                      calibration: Calibration | None) -> PruneResult:
    _check_structured(config, example_inputs, calibration)
    before = count_params(model).total, _macs(model, example_inputs)
    t0 = time.perf_counter()
    run = _to_sparsity if config.budget is None else _to_budget
    removed, sizes, skipped, allocation = run(model, config, example_inputs, calibration)
    seconds = time.perf_counter() - t0
    after = _macs(model, example_inputs)
    total = sum(sizes.values())
    return PruneResult(
        "structured", sum(removed.values()) / total if total else 0.0, removed,
        {g: removed.get(g, 0) / n for g, n in sizes.items()}, before[0], count_params(model).total,
        before[1][0], after[0], skipped=skipped, allocation=allocation, seconds=seconds)


def _prune_layerwise(model: nn.Module, config: LayerwiseConfig, example_inputs: Any,
                     calibration: Calibration | None) -> PruneResult:
    _check_unmasked(model)
    before = count_params(model).total, _macs(model, example_inputs)
    t0 = time.perf_counter()
    report = prune_layerwise(model, config, calibration)
    seconds = time.perf_counter() - t0
    masks = {n: m.detach().float().cpu().clone() for n, m in report.masks.masks().items()}
    after = _macs(model, example_inputs)
    return PruneResult(
        "unstructured", report.sparsity, dict(report.removed), dict(report.layer_sparsity), before[0],
        count_params(model).nonzero, None if before[1] is None else before[1][0], None if after is None else after[1],
        masks, seconds=seconds)


#: config type -> the function that carries it out
HANDLERS: dict[type, Handler] = {UnstructuredConfig: _prune_unstructured, StructuredConfig: _prune_structured,
                                 LayerwiseConfig: _prune_layerwise}


def prune_(model: nn.Module, config: UnstructuredConfig | StructuredConfig | LayerwiseConfig, *,
           example_inputs: Any = None,
           calibration: Calibration | None = None) -> PruneResult:
    """Prunes ``model`` in place as ``config`` says and returns what was removed.

    Args:
        model: the model; changed in place (masks installed, or channels removed).
        config: :class:`UnstructuredConfig` (masks), :class:`StructuredConfig` (smaller dense model) or
            :class:`LayerwiseConfig` (one-shot masks of every Linear, block by block on calibration data:
            magnitude, Wanda, SparseGPT).
        example_inputs: one input batch (a tensor, a tuple of positional inputs or a dict of keyword
            inputs): structured pruning traces it; MACs are counted on it.
        calibration: :class:`Calibration` data for criteria that need data (``prunekit.importance``
            ``needs``), for allocations ``sensitivity`` / ``search`` (evaluated on it) and for the layer-wise
            solvers ``wanda`` and ``sparsegpt`` (the model is called on ``calibration.x``).

    Raises:
        ConfigError: an unknown config type, or inputs the criterion or allocation needs and did not get
            (before any work).
    """
    handler = HANDLERS.get(type(config))
    if handler is None:
        raise ConfigError(f"prune_ takes one of {', '.join(t.__name__ for t in HANDLERS)}; got "
                          f"{type(config).__name__}: build e.g. prunekit.UnstructuredConfig(sparsity=0.9)")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"prune_ prunes a torch.nn.Module, got {type(model).__name__}")
    if calibration is not None and not isinstance(calibration, Calibration):
        raise ConfigError(f"calibration must be a prunekit.Calibration(x, y), got {type(calibration).__name__}")
    return handler(model, config, example_inputs, calibration)
