"""The prune-method registry: what every method gives the pipeline, and what it gets back.

A method is one module that defines its options (a frozen dataclass: the keys ``prune:`` accepts
beside ``method``) and registers a :class:`PruneMethod` in :data:`PRUNE_METHODS`. The schema reads the
options class to validate a recipe; the pipeline calls ``prepare`` on the untrained model (so a bad
layer fails before training) and ``run`` on the trained one.

Example (a new method is one module and one entry)::

    @dataclass(frozen=True)
    class MyOptions:
        sparsity: float = 0.5

    PRUNE_METHODS.register("mine")(PruneMethod("mine", MyOptions, run=my_run, summary="..."))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.data import DataSplits
from prunekit.registry import Registry

__all__ = ["PRUNE_METHODS", "PruneMethod", "PrunePlan", "PruneContext", "PruneOutcome", "method_names"]


@dataclass
class PrunePlan:
    """What a method sets up on the untrained model, for the dense training that follows.

    Attributes:
        pruner: the mask holder (an :class:`~prunekit.pruners.UnstructuredPruner`), built early so a layer the
            method cannot prune fails before any training.
        train_loss: the dense-training loss (a sparsity penalty); ``None``: cross-entropy.
        on_train_step: called after every dense-training optimiser step (e.g. to store θ_k for rewinding).
        state: anything else the method carries from ``prepare`` to ``run``.
    """

    pruner: Any = None
    train_loss: Callable | None = None
    on_train_step: Callable[[int, int], None] | None = None
    state: dict = field(default_factory=dict)


@dataclass
class PruneContext:
    """What ``run`` may use. ``reference``: the trained dense model (eval mode; the distillation teacher);
    ``snapshot``: the weights stored before/during dense training (θ₀ or θ_k)."""

    recipe: Any
    model: nn.Module
    data: DataSplits
    plan: PrunePlan
    reference: nn.Module
    snapshot: Any = None
    progress: bool = True
    log: Callable[[str], None] = print


@dataclass
class PruneOutcome:
    """What ``run`` returns.

    Attributes:
        steps: the trajectory (one record per pruning step or fine-tuning epoch).
        recovered: the method fine-tuned as it pruned; the recover stage then adds nothing.
        sparsity: the fraction of the prunable weights removed (masks), or ``None`` (structured: from sizes).
        masks: the mask holder, made permanent by the pipeline before measuring.
        report: extra report.json keys (e.g. ``control``, ``allocation``).
        files: extra files for the output directory, name → JSON-ready object.
        accuracy_after_pruning: test accuracy before recovery, when measured.
    """

    steps: list[dict] = field(default_factory=list)
    recovered: bool = True
    sparsity: float | None = None
    masks: Any = None
    report: dict = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)
    accuracy_after_pruning: float | None = None


@dataclass(frozen=True)
class PruneMethod:
    """One prune method.

    Attributes:
        name: the ``prune.method`` value.
        options: the dataclass of its ``prune:`` keys.
        run: prunes the trained model; returns a :class:`PruneOutcome`.
        prepare: sets up the :class:`PrunePlan` on the untrained model (default: nothing).
        kind: ``masks`` (weights zeroed, shapes kept) or ``structured`` (units removed).
        reads_recover: the method fine-tunes with the ``recover`` section (lottery and at_init retrain with
            ``train`` instead and refuse a ``recover`` section).
        needs_dense_run: the method rewinds to weights stored during dense training (``train.epochs`` ≥ 1).
        text: the method prunes text models (``model: hf:PATH``; its context's data is a
            :class:`~prunekit.data.TextSplits` and ``plan.state["text"]`` the tokenised text,
            see :mod:`prunekit.pipeline.text`).
        summary: one line for ``--help`` and errors.
        verify: ``verify(recipe, outcome, directory) -> dict`` checks the saved model files against what the method
            promised (e.g. an N:M pattern) after the save stage; its dict goes into report.json.
    """

    name: str
    options: type
    run: Callable[[PruneContext], PruneOutcome]
    prepare: Callable[[Any, nn.Module, DataSplits], PrunePlan] | None = None
    kind: str = "masks"
    reads_recover: bool = True
    needs_dense_run: bool = False
    summary: str = ""
    text: bool = False
    verify: Callable[[Any, PruneOutcome, Path], dict] | None = None


#: Prune methods by ``prune.method`` name.
PRUNE_METHODS: Registry = Registry("prune method")


def method_names() -> list[str]:
    return PRUNE_METHODS.names()
