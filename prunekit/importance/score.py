"""Scoring groups and weights with a criterion: check its needs, calibrate once, aggregate members.

Example:
    >>> graph = DependencyGraph.build(model, x[:1])
    >>> cal = Calibration(x[:256], y[:256])
    >>> scores = score_groups(graph, ImportanceConfig("taylor"), cal)   # {group name: scores}

Aggregation over the members of a group (e.g. conv1.weight rows, bn1.weight, conv2.weight columns):
each member's per-unit scores are first normalised (``normalize``: none, mean, max or l2: divide by
the member's mean, max or L2 norm — per-layer normalisation, so a layer with large weights does not
dominate), then reduced over members (``reduction``: mean, sum, max or first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph, Group
from prunekit.importance.calibration import Calibration, collect_stats
from prunekit.importance.criteria import IMPORTANCE, Importance, ScoreInputs

__all__ = ["ImportanceConfig", "check_needs", "score_groups", "score_weights", "REDUCTIONS", "NORMALIZATIONS"]

REDUCTIONS = {"mean": lambda a: a.mean(0), "sum": lambda a: a.sum(0), "max": lambda a: a.max(0),
              "first": lambda a: a[0]}
NORMALIZATIONS = {"none": lambda v: 1.0, "mean": lambda v: np.abs(v).mean(), "max": lambda v: np.abs(v).max(),
                  "l2": lambda v: np.sqrt((v ** 2).sum())}
DATA_FREE_HINT = "lp, fpgm, bn_scale or random"


@dataclass(frozen=True)
class ImportanceConfig:
    """Which criterion and how member scores combine.

    Attributes:
        criterion: name in ``IMPORTANCE`` (lp, random, gradient, taylor, hessian, apoz, mean_activation,
            bn_scale, fpgm, mi, loss_change).
        reduction: how member scores combine into one score per unit (mean, sum, max, first).
        normalize: per-member (per-layer) normalisation before the reduction (none, mean, max, l2).
        p: the exponent of ``lp``.
        seed: seeds ``random`` and the sampling of ``loss_change``.
        options: criterion options (``mi``: bins; ``loss_change``: max_units, chunk, rounds).
    """

    criterion: str = "lp"
    reduction: str = "mean"
    normalize: str = "mean"
    p: float = 2.0
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        IMPORTANCE.get(self.criterion)
        for what, table, value in (("reduction", REDUCTIONS, self.reduction),
                                   ("normalize", NORMALIZATIONS, self.normalize)):
            if value not in table:
                raise ConfigError(f"unknown {what} {value!r}; choose one of: {', '.join(sorted(table))}")
        if not self.p > 0:
            raise ConfigError(f"p must be > 0, got {self.p!r}")

    @property
    def spec(self) -> Importance:
        return IMPORTANCE.get(self.criterion)


def check_needs(criterion: str | Importance, calibration: Calibration | None) -> None:
    """Raises before any work if ``criterion`` needs data or labels that ``calibration`` lacks."""
    spec = IMPORTANCE.get(criterion) if isinstance(criterion, str) else criterion
    if spec.needs and calibration is None:
        raise ConfigError(
            f"criterion {spec.name!r} needs calibration data ({', '.join(sorted(spec.needs))}); pass "
            f"calibration=Calibration(x, y) (in a recipe: structured.calibration_samples > 0), or choose a "
            f"data-free criterion: {DATA_FREE_HINT}")
    if "labels" in spec.needs and calibration is not None and calibration.y is None:
        raise ConfigError(f"criterion {spec.name!r} needs labels; pass Calibration(x, y) with y")


def _inputs(graph: DependencyGraph, config: ImportanceConfig, calibration: Calibration | None) -> ScoreInputs:
    spec = config.spec
    check_needs(spec, calibration)
    stats = None
    if spec.needs & {"gradients", "activations"}:
        stats = collect_stats(graph.model, graph, calibration, spec.needs)
    return ScoreInputs(graph, stats, calibration, config.p, np.random.default_rng(config.seed),
                       dict(config.options))


def _aggregate(raw: Any, config: ImportanceConfig, group: Group) -> np.ndarray:
    if isinstance(raw, np.ndarray):
        return raw.astype(np.float64)
    if not raw:
        raise ConfigError(f"criterion {config.criterion!r} found nothing to score in group {group.name!r}")
    rows = []
    for v in raw.values():
        scale = NORMALIZATIONS[config.normalize](v)
        rows.append(v / scale if scale > 0 else v)
    return REDUCTIONS[config.reduction](np.stack(rows)).astype(np.float64)


def score_groups(graph: DependencyGraph, config: ImportanceConfig | str = ImportanceConfig(),
                 calibration: Calibration | None = None, groups: list[Group] | None = None) -> dict[str, np.ndarray]:
    """Per-unit importance of every prunable group (``{group name: scores}``, higher = keep).

    Raises:
        ConfigError: the criterion needs calibration data or labels that were not given (checked
            before any forward pass), or cannot score one of the groups.
    """
    if isinstance(config, str):
        config = ImportanceConfig(config)
    inputs = _inputs(graph, config, calibration)
    groups = graph.prunable_groups() if groups is None else groups
    return {g.name: _aggregate(config.spec.group(inputs, g), config, g) for g in groups}


def score_weights(model: nn.Module, names: list[str], config: ImportanceConfig | str,
                  calibration: Calibration | None = None,
                  example_inputs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Single-weight scores (unstructured pruning) of the parameters ``names``.

    The channel criteria (apoz, mean_activation, mi, bn_scale, fpgm, loss_change) score single weights
    with the forms of :mod:`prunekit.criteria.channel` (Linear and Conv weights).

    Raises:
        ConfigError: the criterion needs calibration data that was not given.
    """
    if isinstance(config, str):
        config = ImportanceConfig(config)
    spec = config.spec
    check_needs(spec, calibration)
    if spec.weight is None:  # channel criteria: their single-weight forms live with the unstructured ones
        from prunekit.criteria import MODEL_PASSES, get_criterion

        batch = None if calibration is None else (calibration.x, calibration.y)
        if batch is None and example_inputs is not None:
            batch = (example_inputs, None)
        if batch is None and get_criterion(spec.name).needs & {"data", "input_shape"}:
            raise ConfigError(f"criterion {spec.name!r} needs example_inputs (or a calibration set) to run the model")
        return {n: s.detach().float().cpu() for n, s in MODEL_PASSES[spec.name](model, names, batch).items()}
    x = calibration.x[:1] if calibration is not None else example_inputs
    if x is None:
        raise ConfigError("score_weights needs example_inputs (or a calibration set) to trace the model")
    graph = DependencyGraph.build(model, x)
    inputs = _inputs(graph, config, calibration)
    params = dict(model.named_parameters())
    return {n: spec.weight(inputs, n, params[n]).detach().float().cpu() for n in names}
