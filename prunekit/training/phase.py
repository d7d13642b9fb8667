"""One training phase, whatever it trains: the bookkeeping every training loop of prunekit shares.

A *training phase* is one call of a training loop — :func:`~prunekit.training.train` (tensors),
:func:`~prunekit.training.text.train_text` (tokenised text: fine-tuning, encoder distillation), the exit-head and
channel-gate training of :mod:`prunekit.dynamic`. Each loop describes its own steps (a :class:`PhaseLoop`: the
optimiser, the shuffling generator, one epoch); :func:`run_phase` does the rest the same way for all of them:

- under torchrun, checks that every rank holds rank 0's masks and architecture before and after, lets
  BatchNorm normalise with the whole global batch, and copies rank 0's state to every rank at the end
  (:mod:`~prunekit.training.distributed`);
- inside a run, numbers the phase in the run's journal, skips it when a resumed run finished it, continues it
  from its last epoch when it was cut off, and checkpoints every epoch and its end
  (:mod:`~prunekit.training.journal`).

Every loop takes its optimiser steps with :func:`optimizer_step` (the step's learning rate, the finite-loss check,
this rank's share of the gradient) and its learning rates from :func:`scheduled_lr`, a pure function of the step:
a resumed phase sets the very rates of an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from prunekit.errors import TrainingDivergedError
from prunekit.training import distributed, journal

__all__ = ["SCHEDULES", "PhaseLoop", "StepHook", "TrainHistory", "optimizer_step", "run_phase", "scheduled_lr",
           "stateful"]

#: Learning-rate schedules after the warm-up: ``cosine`` (to zero over the steps), ``constant``, ``step`` (×0.1 at
#: 50% of the steps, ×0.01 at 75%).
SCHEDULES = ("constant", "cosine", "step")


@dataclass
class TrainHistory:
    """Per epoch: the mean training loss and (when the loop measures it) the validation accuracy."""

    epoch_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)


class PhaseLoop(Protocol):
    """The state of one loop: what a checkpoint holds besides the model, and one epoch of steps."""

    opt: torch.optim.Optimizer
    gen: torch.Generator  # the shuffling generator (the same on every rank)
    step: int  # optimiser steps taken
    total: int  # optimiser steps of the whole phase (progress bar, learning-rate schedule)
    history: TrainHistory

    def epoch(self, bar: tqdm) -> None:
        """One pass over the data: steps, then ``history`` gains the epoch's figures."""


def scheduled_lr(peak: float, schedule: str, step: int, total: int, warmup: float = 0.0) -> float:
    """The learning rate of 0-based optimiser step ``step`` of ``total``: ``W = round(warmup · total)`` warm-up steps
    rising linearly (``peak·(step + 1)/W``) to ``peak``, then ``schedule`` (:data:`SCHEDULES`) over the other steps,
    e.g. cosine: ``peak · ½(1 + cos(π·(step - W)/(total - W)))``."""
    warm = round(warmup * total)
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(total - warm, 1)
    if schedule == "cosine":
        return peak * (0.5 * (1.0 + math.cos(math.pi * progress)))
    if schedule == "step":
        return peak * (0.01 if progress >= 0.75 else 0.1 if progress >= 0.5 else 1.0)
    return float(peak)


def optimizer_step(loop: PhaseLoop, loss: torch.Tensor, share: float, lr: float,
                   diverged: Callable[[float], Exception] | None = None) -> float:
    """One optimiser step of ``loop`` on this rank's ``loss``: sets the learning rate ``lr``, refuses a non-finite
    loss before it reaches the weights (``diverged(value)`` is the error, by default one naming the step and the
    rate), back-propagates the rank's ``share`` of the global batch's loss (under DDP the gradients of all ranks
    add up to the global batch's), steps and counts the step. Returns the loss's value."""
    for group in loop.opt.param_groups:
        group["lr"] = lr
    value = float(loss.detach())
    if not math.isfinite(value):
        raise (diverged or (lambda v: _diverged(loop, v, lr)))(value)
    loop.opt.zero_grad(set_to_none=True)
    (loss * share if share != 1.0 else loss).backward()
    loop.opt.step()
    loop.step += 1
    return value


def _diverged(loop: PhaseLoop, value: float, lr: float) -> TrainingDivergedError:
    return TrainingDivergedError(f"training diverged: the loss is {value} at step {loop.step + 1} of {loop.total} "
                                 f"with learning rate {lr:.4g}. Fix: lower the learning rate (lr), "
                                 "or check the data and the loss.")


class StepHook:
    """A per-step callback (``on_step(step, total)``) whose state a checkpoint keeps, so that a phase trained with it
    resumes from its last epoch like any other: ``fn(step, total, state)`` keeps everything it must remember in
    ``state`` (plain data and tensors: what ``torch.load(weights_only=True)`` reads back); ``on_load(state)``
    re-creates what the hook keeps elsewhere (a snapshot it handed to its caller, a generator's state, masks it
    installed: a resumed run loads the hook before the model, so that the model has the mask buffers its
    checkpointed state holds).

    Example (the gradual schedule's trajectory):
        >>> hook = StepHook(lambda step, total, state: state["records"].append(step), {"records": []})
    """

    def __init__(self, fn: Callable[[int, int, dict], None], state: dict,
                 on_load: Callable[[dict], None] | None = None) -> None:
        self.fn, self.state, self.on_load = fn, state, on_load

    def __call__(self, step: int, total: int) -> None:
        self.fn(step, total, self.state)

    def state_dict(self) -> dict:
        return self.state

    def load_state_dict(self, state: dict) -> None:
        self.state.clear()
        self.state.update(state)
        if self.on_load is not None:
            self.on_load(self.state)


def stateful(hook: object) -> bool:
    """Whether ``hook`` (an ``on_step`` callback) has a state a checkpoint can keep (``state_dict`` and
    ``load_state_dict``)."""
    return callable(getattr(hook, "state_dict", None)) and callable(getattr(hook, "load_state_dict", None))


def run_phase(model: nn.Module, make_loop: Callable[[], PhaseLoop], epochs: int, desc: str, progress: bool = True,
              replayable: bool = True, hook: StepHook | None = None) -> TrainHistory:
    """Trains ``model`` for ``epochs`` epochs of the loop ``make_loop()`` builds (only when the phase is trained:
    a resumed run that finished it loads its end state instead).

    Args:
        model: what the phase changes (its ``state_dict`` is what a checkpoint restores, masks included).
        replayable: the loop keeps no state outside the model, optimiser, generator and ``hook``, so a resumed
            run may skip or continue the phase; otherwise (a per-step callback without a state to keep) it is
            trained again from its start.
        hook: the loop's stateful per-step callback (:class:`StepHook`): its state is checkpointed with the
            model and restored with it.
    """
    log = journal.active()
    start = log.start_phase(model, replayable, hook) if log is not None else None
    distributed.check_same(model, f"before training phase '{desc}'")
    if start is not None and start.mode == "skip":
        return TrainHistory(**start.history)
    loop = make_loop()
    first = 0
    if start is not None and start.mode == "continue":
        log.restore_epoch(model, loop.opt, loop.gen, hook)
        loop.step, loop.history, first = start.step, TrainHistory(**start.history), start.epoch
    bar = tqdm(total=loop.total, initial=loop.step, desc=desc, disable=not progress, leave=False, unit="step")
    model.train()
    try:
        with distributed.global_batchnorm(model):
            for epoch in range(first, epochs):
                loop.epoch(bar)
                if log is not None and epoch < epochs - 1:
                    log.epoch_end(model, loop.opt, loop.gen, epoch, loop.step, asdict(loop.history), replayable,
                                  hook)
    finally:
        bar.close()
    distributed.sync_state(model)
    distributed.check_same(model, f"after training phase '{desc}'")
    if log is not None:
        log.phase_end(model, asdict(loop.history), replayable, hook)
    return loop.history
