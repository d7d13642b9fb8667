"""Lottery tickets: the rewinding of surviving weights (the loop and the control live in
:mod:`prunekit.pipeline.methods.lottery`).

Frankle & Carbin 2019 ("The lottery ticket hypothesis"): train θ₀ → θ_T, prune the smallest
weights (mask m), reset the survivors to their *initial* values θ₀ ⊙ m, and train again; repeat for
``rounds`` rounds, each removing the same fraction of what is left, s_k = 1 − (1 − s_f)^{k/n}.
Frankle et al. 2020 ("Linear mode connectivity and the lottery ticket hypothesis") rewind to an
early iterate θ_k (``rewind: iteration``, ``rewind_step`` = k optimiser steps) instead of θ₀.

The control trains the same mask from a fresh random initialisation θ'₀ ⊙ m: a ticket is only
"winning" if it beats that control.

Example:
    >>> init = WeightSnapshot.capture(model)                 # before any training
    >>> train(model, data, cfg)
    >>> pruner.prune_to(0.5)
    >>> init.restore(model)                                  # survivors back to θ₀, pruned weights stay 0
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.training.phase import StepHook

__all__ = ["WeightSnapshot", "REWINDS", "capture_at_step"]

#: Where the surviving weights go back to after each pruning round.
REWINDS = ("init", "iteration")


class WeightSnapshot:
    """A copy of a model's parameters and buffers at one moment (θ₀ or θ_k), keyed by name."""

    def __init__(self, tensors: dict[str, torch.Tensor], step: int = 0) -> None:
        self.tensors = tensors
        self.step = step

    @classmethod
    def capture(cls, model: nn.Module, step: int = 0) -> WeightSnapshot:
        state = {n: t.detach().clone() for n, t in model.state_dict().items() if not n.endswith("_mask")}
        return cls(state, step)

    @torch.no_grad()
    def restore(self, model: nn.Module) -> None:
        """Loads the snapshot into ``model``; mask buffers stay, so pruned weights stay zero."""
        state = model.state_dict()
        missing = [n for n in state if not n.endswith("_mask") and n not in self.tensors]
        if missing:
            raise ConfigError(f"the stored weights do not fit this model (no {missing[0]!r}); rewind needs "
                              "a snapshot captured from the same architecture")
        for n, t in self.tensors.items():
            state[n].copy_(t)
        for module in model.modules():  # W ← W ⊙ M for every masked parameter
            for name, buf in module.named_buffers(recurse=False):
                if name.endswith("_mask"):
                    getattr(module, name[: -len("_mask")]).mul_(buf)


def capture_at_step(step: int, model: nn.Module, box: dict) -> StepHook:
    """An ``on_step`` callback for :func:`train` that stores θ_step in ``box['snapshot']`` (checkpointed with the
    training phase, so a resumed run has it even when it continues after step ``step``)."""

    def on_step(s: int, _total: int, state: dict) -> None:
        if s == step:
            box["snapshot"] = WeightSnapshot.capture(model, step)
            state["snapshot"] = box["snapshot"].tensors

    def on_load(state: dict) -> None:
        if state.get("snapshot") is not None:
            box["snapshot"] = WeightSnapshot(state["snapshot"], step)

    return StepHook(on_step, {"snapshot": None}, on_load)
