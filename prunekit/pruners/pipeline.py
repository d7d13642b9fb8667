"""Prune → fine-tune loops, one per schedule, recording the trajectory.

- ``one_shot``: prune to the target, then fine-tune once.
- ``iterative``: ``steps`` rounds of prune (equal fraction of what is left) → fine-tune.
- ``gradual``: one fine-tuning run during which the cubic schedule raises sparsity every Δt
  optimiser steps between ``gradual_start`` and ``gradual_end`` of the run.

Each recorded step holds the sparsity reached and the validation and test accuracy after it. Given
``recalibration`` inputs, the one_shot and iterative loops re-estimate the BatchNorm statistics after
every pruning step, before the accuracy after pruning is recorded and fine-tuning starts
(:func:`prunekit.recovery.bn.reestimate_bn`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from prunekit.data import DataSplits
from prunekit.errors import ConfigError
from prunekit.pruners.schedules import cubic_sparsity, iterative_sparsity
from prunekit.pruners.unstructured import UnstructuredPruner
from prunekit.recovery.bn import reestimate_bn
from prunekit.training import TrainConfig, evaluate, train

__all__ = ["ScheduleSpec", "run_schedule"]


@dataclass(frozen=True)
class ScheduleSpec:
    target: float
    schedule: str = "iterative"
    steps: int = 5
    gradual_start: float = 0.0
    gradual_end: float = 0.75


def _record(model: nn.Module, data: DataSplits, pruner: UnstructuredPruner, step: int,
            before: float | None) -> dict:
    return {
        "step": step,
        "sparsity": pruner.sparsity(),
        "val_accuracy_pruned": before,
        "val_accuracy": evaluate(model, data.x_val, data.y_val).accuracy,
        "test_accuracy": evaluate(model, data.x_test, data.y_test).accuracy,
    }


def run_schedule(
    model: nn.Module,
    data: DataSplits,
    pruner: UnstructuredPruner,
    spec: ScheduleSpec,
    finetune: TrainConfig,
    seed: int = 0,
    progress: bool = True,
    loss_fn: Callable | None = None,
    recalibration: torch.Tensor | None = None,
) -> list[dict]:
    """Prunes ``model`` to ``spec.target`` on the schedule, fine-tuning as it goes.

    ``loss_fn`` is the fine-tuning loss (``None``: cross-entropy); distillation passes its own
    (see :func:`prunekit.recovery.recovery_loss`). ``recalibration``: training inputs on which the
    BatchNorm statistics are re-estimated after every pruning step (one_shot and iterative).

    Returns:
        The trajectory: one record per pruning step (gradual: one per fine-tuning epoch).
    """
    if spec.schedule == "gradual":
        return _gradual(model, data, pruner, spec, finetune, seed, progress, loss_fn)
    n = 1 if spec.schedule == "one_shot" else spec.steps
    start = pruner.sparsity()
    steps = []
    for k in range(1, n + 1):
        pruner.prune_to(spec.target, lambda s, k=k: iterative_sparsity(s, k, n, start))
        if recalibration is not None:
            reestimate_bn(model, recalibration)
        before = evaluate(model, data.x_val, data.y_val).accuracy
        if finetune.epochs:
            train(model, data, finetune, seed=seed + k, progress=progress, desc=f"fine-tune {k}/{n}",
                  loss_fn=loss_fn)
        steps.append(_record(model, data, pruner, k, before))
    return steps


def _gradual(model, data, pruner, spec, finetune, seed, progress, loss_fn=None) -> list[dict]:
    if finetune.epochs < 1:
        raise ConfigError("the gradual schedule prunes during fine-tuning: set finetune.epochs ≥ 1")
    steps_per_epoch = -(-len(data.x_train) // finetune.batch_size)
    total = steps_per_epoch * finetune.epochs
    t0 = int(spec.gradual_start * total)
    span = max(1, int(spec.gradual_end * total) - t0)
    dt = max(1, span // spec.steps)
    events = {t0 + i * dt for i in range(1, spec.steps + 1)}
    records: list[dict] = []

    def on_step(step: int, _total: int) -> None:
        if step in events:
            pruner.prune_to(spec.target, lambda s: cubic_sparsity(s, step, t0, spec.steps, dt))
        if step % steps_per_epoch == 0:
            records.append(_record(model, data, pruner, step // steps_per_epoch, None))

    train(model, data, finetune, seed=seed + 1, on_step=on_step, progress=progress, desc="gradual",
          loss_fn=loss_fn)
    if abs(pruner.sparsity() - spec.target) > 1e-3 and pruner.config.allocation != "ratios":
        pruner.prune_to(spec.target)  # the last event fell after the run's final step
        records.append(_record(model, data, pruner, len(records) + 1, None))
    return records
