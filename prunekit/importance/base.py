"""What one criterion is: the inputs it needs, a group form and/or a single-weight form.

A criterion's **group form** scores the units of a dependency group (the channels a set of coupled
tensors share) per *member* (one tensor slice); :func:`prunekit.importance.score_groups` normalises and
reduces the member scores to one score per unit. Its **single-weight form** scores every entry of the
named Linear/Conv weights (unstructured pruning). Higher score = more important.

Where both forms exist they compute one formula: the weight form of a channel criterion is the
weight's magnitude times the score its channel gets from the group form — of the output channel it
writes (weight-structure criteria: ``fpgm``) or the input channel it reads (activation criteria:
``apoz``, ``mean_activation``, ``mi``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.graph import DependencyGraph, Group, Member
from prunekit.importance.calibration import Calibration, CalibrationStats

__all__ = ["DATA_NEEDS", "NEEDS", "Importance", "MemberScores", "ScoreInputs", "WeightInputs", "per_member", "slices"]

#: Everything a criterion may declare in ``needs``.
NEEDS = {
    "weights": "reads the weights",
    "gradients": "loss gradients on the calibration data",
    "activations": "layer inputs recorded on the calibration data",
    "labels": "labels of the calibration data",
    "data": "calibration data: pass calibration=Calibration(x, y)",
    "loss": "measures the calibration loss with units/weights removed",
    "example_inputs": "only the input shape: example_inputs or calibration",
    "at_init": "scores an untrained model (pruning at initialisation)",
}

#: needs that only calibration data can meet
DATA_NEEDS = frozenset({"data", "labels", "gradients", "activations", "loss"})

MemberScores = dict[tuple[str, int], np.ndarray]


@dataclass
class ScoreInputs:
    """What a group form may look at; built once per scoring call."""

    graph: DependencyGraph
    stats: CalibrationStats | None = None
    calibration: Calibration | None = None
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class WeightInputs:
    """What a single-weight form may look at.

    Attributes:
        model: the model; ``names`` are its Linear/Conv parameters to score.
        batch: ``(x, y)`` calibration batch (``y`` None when only inputs are known), or None.
        generator: the one seeded RNG of ``random`` and of sampling.
        keywords: keyword inputs of the whole batch (``attention_mask``: the model sees it and input statistics
            count real tokens only; ``token_type_ids``), as :class:`~prunekit.importance.Calibration` holds them.
    """

    model: nn.Module
    names: list[str]
    batch: tuple[torch.Tensor, torch.Tensor | None] | None = None
    generator: torch.Generator = field(default_factory=lambda: torch.Generator().manual_seed(0))
    seed: int = 0
    keywords: dict[str, torch.Tensor] = field(default_factory=dict)

    def params(self) -> dict[str, torch.Tensor]:
        every = dict(self.model.named_parameters())
        return {n: every[n] for n in self.names}


GroupForm = Callable[[ScoreInputs, Group], "MemberScores | np.ndarray"]
WeightForm = Callable[[WeightInputs], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class Importance:
    """One criterion of :data:`prunekit.importance.IMPORTANCE`.

    Attributes:
        name: registry name; one name is one formula everywhere.
        needs: a subset of :data:`NEEDS`, checked before any work.
        group: scores the units of a group (structured pruning, allocation, sensitivity), or None.
        weight: scores single weights (unstructured pruning), or None.
        doc: the formula and the paper, one or two lines.
    """

    name: str
    needs: frozenset[str]
    group: GroupForm | None = None
    weight: WeightForm | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        unknown = self.needs - set(NEEDS)
        assert not unknown, f"{self.name}: unknown needs {unknown}"
        assert self.group is not None or self.weight is not None, self.name

    @property
    def at_init(self) -> bool:
        return "at_init" in self.needs

    @property
    def needs_data(self) -> bool:
        """Whether only calibration data can meet its needs (:data:`DATA_NEEDS`)."""
        return bool(self.needs & DATA_NEEDS)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(k for k in ("group", "weight") if getattr(self, k) is not None)


def slices(m: Member, t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per position along ``m.dim``: the rows of ``t`` (float64) and the number of entries of each."""
    rows = t.detach().float().transpose(0, m.dim).reshape(t.shape[m.dim], -1)
    return rows.cpu().numpy().astype(np.float64), np.full(rows.shape[0], rows.shape[1])


def per_member(inputs: ScoreInputs, group: Group, fn: Callable[[Member, torch.Tensor], torch.Tensor | None],
               mean: bool = True) -> MemberScores:
    """Applies ``fn(member, tensor) -> values shaped like the tensor`` and sums (``mean``: averages)
    each unit's entries, per member."""
    out: MemberScores = {}
    for m in group.members:
        if m.name in inputs.graph.buffers:
            continue
        vals = fn(m, inputs.graph.tensors[m.name])
        if vals is None:
            continue
        rows, n = slices(m, vals)
        total = np.bincount(m.unit, weights=rows.sum(1), minlength=group.size)
        count = np.bincount(m.unit, weights=n, minlength=group.size)
        out[(m.name, m.dim)] = total / np.maximum(count, 1) if mean else total
    return out
