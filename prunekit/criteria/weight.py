"""Importance criteria for single weights (unstructured pruning). Higher score = more important.

Each criterion is a :class:`Criterion` in the ``WEIGHT_CRITERIA`` registry. It declares what it
needs (``needs``: e.g. ``{"gradients"}``), so a pruner can check the inputs before it starts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from prunekit.registry import Registry

__all__ = ["Criterion", "ScoreContext", "WEIGHT_CRITERIA"]


@dataclass
class ScoreContext:
    """What a criterion may look at for one parameter."""

    name: str
    param: torch.Tensor
    generator: torch.Generator
    #: what the criterion's model-level pass computed for this parameter (``MODEL_PASSES``), else None
    stat: torch.Tensor | None = None


@dataclass(frozen=True)
class Criterion:
    name: str
    score: Callable[[ScoreContext], torch.Tensor]
    needs: frozenset[str] = field(default_factory=frozenset)
    doc: str = ""
    #: scores only make sense before training (snip, synflow): recipes must use schedule ``at_init``.
    at_init: bool = False


WEIGHT_CRITERIA: Registry = Registry("criterion")


def _register(name: str, doc: str, needs: frozenset[str] = frozenset()):
    def wrap(fn: Callable[[ScoreContext], torch.Tensor]) -> Callable:
        WEIGHT_CRITERIA.register(name)(Criterion(name, fn, needs, doc))
        return fn

    return wrap


@_register("l1", "Magnitude |w| (Han et al. 2015, 'Learning both weights and connections').")
def _l1(ctx: ScoreContext) -> torch.Tensor:
    return ctx.param.detach().abs()


@_register("l2", "Squared magnitude w²; ranks single weights as L1 does, differs for groups.")
def _l2(ctx: ScoreContext) -> torch.Tensor:
    return ctx.param.detach().pow(2)


@_register("random", "Uniform random scores from the run's seed: the control every method must beat.")
def _random(ctx: ScoreContext) -> torch.Tensor:
    return torch.rand(ctx.param.shape, generator=ctx.generator).to(ctx.param.device)
