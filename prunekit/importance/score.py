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
from prunekit.importance.base import DATA_NEEDS, Importance, ScoreInputs, WeightInputs
from prunekit.importance.calibration import Calibration, collect_stats
from prunekit.importance.magnitude import shared_reductions
from prunekit.importance.registry import get, names

__all__ = ["ImportanceConfig", "check_needs", "score_groups", "score_weights", "REDUCTIONS", "NORMALIZATIONS"]

REDUCTIONS = {"mean": lambda a: a.mean(0), "sum": lambda a: a.sum(0), "max": lambda a: a.max(0),
              "first": lambda a: a[0]}
NORMALIZATIONS = {"none": lambda v: 1.0, "mean": lambda v: np.abs(v).mean(), "max": lambda v: np.abs(v).max(),
                  "l2": lambda v: np.sqrt((v ** 2).sum())}


@dataclass(frozen=True)
class ImportanceConfig:
    """Which criterion and how member scores combine.

    Attributes:
        criterion: a name in ``IMPORTANCE`` with a group form (``prunekit.importance.names("group")``).
        reduction: how member scores combine into one score per unit (mean, sum, max, first).
        normalize: per-member (per-layer) normalisation before the reduction (none, mean, max, l2).
        seed: seeds ``random`` and the sampling of ``loss_change``.
        options: criterion options (``mi``: bins; ``loss_change``: max_units, chunk, rounds).
    """

    criterion: str = "l2"
    reduction: str = "mean"
    normalize: str = "mean"
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        get(self.criterion, "group")
        for what, table, value in (("reduction", REDUCTIONS, self.reduction),
                                   ("normalize", NORMALIZATIONS, self.normalize)):
            if value not in table:
                raise ConfigError(f"unknown {what} {value!r}; choose one of: {', '.join(sorted(table))}")

    @property
    def spec(self) -> Importance:
        return get(self.criterion, "group")


def check_needs(criterion: str | Importance, calibration: Calibration | None,
                example_inputs: Any = None, kind: str | None = None) -> None:
    """Raises before any work if ``criterion`` needs data, labels or an input that was not given (or,
    with ``kind``, has no form of that kind); the message lists the criteria that would fit."""
    spec = get(criterion, kind) if isinstance(criterion, str) else criterion
    kind = kind or spec.kinds[0]
    if spec.needs & DATA_NEEDS and calibration is None:
        raise ConfigError(
            f"criterion {spec.name!r} needs calibration data ({', '.join(sorted(spec.needs & DATA_NEEDS))}); pass "
            f"calibration=Calibration(x, y) (in a recipe: calibration_samples > 0), or choose a data-free "
            f"{kind} criterion: {', '.join(names(kind, data_free=True))}")
    if "labels" in spec.needs and calibration is not None and calibration.y is None:
        raise ConfigError(f"criterion {spec.name!r} needs labels; pass Calibration(x, y) with y")
    if "example_inputs" in spec.needs and calibration is None and example_inputs is None:
        raise ConfigError(f"criterion {spec.name!r} runs the model once on an all-ones input: pass example_inputs "
                          f"(or a calibration set) so it knows the input shape")


def _inputs(graph: DependencyGraph, config: ImportanceConfig, calibration: Calibration | None) -> ScoreInputs:
    spec = config.spec
    check_needs(spec, calibration, True, "group")
    stats = None
    if spec.needs & {"gradients", "activations"}:
        stats = collect_stats(graph.model, graph, calibration, spec.needs)
    return ScoreInputs(graph, stats, calibration, torch.Generator().manual_seed(config.seed), dict(config.options))


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
        ConfigError: the criterion has no group form, or needs calibration data or labels that were not
            given (checked before any forward pass), or cannot score one of the groups.
    """
    if isinstance(config, str):
        config = ImportanceConfig(config)
    inputs = _inputs(graph, config, calibration)
    groups = graph.prunable_groups() if groups is None else groups
    with shared_reductions():
        return {g.name: _aggregate(config.spec.group(inputs, g), config, g) for g in groups}


def score_weights(model: nn.Module, names_: list[str], criterion: str,
                  calibration: Calibration | tuple | None = None, example_inputs: torch.Tensor | None = None,
                  generator: torch.Generator | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Single-weight scores (unstructured pruning) of the Linear/Conv parameters ``names_``.

    Args:
        calibration: a :class:`Calibration` (its attention mask and token types too) or an ``(x, y)`` batch, for
            criteria that need data.
        example_inputs: an input batch, for criteria that only need the input shape.
        generator: the RNG of ``random`` (default: a new one seeded with ``seed``).

    Raises:
        ConfigError: the criterion has no single-weight form or needs data that was not given.
    """
    spec = get(criterion, "weight")
    keywords: dict[str, torch.Tensor] = {}
    if isinstance(calibration, Calibration):
        calibration, keywords = (calibration.x, calibration.y), calibration.keyword_tensors()
    batch = calibration
    if batch is None and example_inputs is not None:
        batch = (example_inputs, None)
    cal = None if calibration is None else Calibration(calibration[0], calibration[1])
    check_needs(spec, cal, example_inputs, "weight")
    inputs = WeightInputs(model, list(names_), batch, generator or torch.Generator().manual_seed(seed), seed, keywords)
    scores = spec.weight(inputs)
    return {n: scores[n].detach().float().cpu() for n in names_}
