"""Lottery tickets: iterative magnitude pruning with rewinding, and the random re-initialisation control.

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
    >>> result = run_lottery(model, data, pruner, cfg, LotteryConfig(target=0.9, rounds=5), init,
    ...                      control_factory=lambda: build_model("lenet300", (1, 28, 28), 10))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from prunekit.data import DataSplits
from prunekit.errors import ConfigError
from prunekit.masks import MaskSet
from prunekit.pruners.schedules import iterative_sparsity
from prunekit.pruners.unstructured import UnstructuredPruner, check_sparsity
from prunekit.training import TrainConfig, evaluate, train

__all__ = ["LotteryConfig", "LotteryResult", "WeightSnapshot", "REWINDS", "run_lottery", "train_control"]

#: Where the surviving weights go back to after each pruning round.
REWINDS = ("init", "iteration")


@dataclass(frozen=True)
class LotteryConfig:
    """Iterative magnitude pruning with rewinding.

    Attributes:
        target: final sparsity of the prunable weights, in [0, 1).
        rounds: prune → rewind → retrain rounds.
        rewind: ``init`` (θ₀, Frankle & Carbin 2019) or ``iteration`` (θ_k, Frankle et al. 2020).
        rewind_step: k, the optimiser step of the dense run to rewind to (``iteration`` only).
        control: also train the final mask from a random re-initialisation.
        control_seed: seed of the control's re-initialisation.
    """

    target: float = 0.9
    rounds: int = 5
    rewind: str = "init"
    rewind_step: int = 0
    control: bool = True
    control_seed: int = 10_000

    def __post_init__(self) -> None:
        check_sparsity(self.target, "target")
        if self.rounds < 1:
            raise ConfigError(f"lottery rounds must be ≥ 1, got {self.rounds}")
        if self.rewind not in REWINDS:
            raise ConfigError(f"unknown rewind {self.rewind!r}; choose one of: {', '.join(REWINDS)}")
        if self.rewind == "iteration" and self.rewind_step < 1:
            raise ConfigError(f"rewind 'iteration' needs rewind_step ≥ 1 (optimiser steps of the dense run "
                              f"to rewind to), got {self.rewind_step}; or use rewind: init")


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


def capture_at_step(step: int, model: nn.Module, box: dict) -> Callable[[int, int], None]:
    """An ``on_step`` callback for :func:`train` that stores θ_step in ``box['snapshot']``."""

    def on_step(s: int, _total: int) -> None:
        if s == step:
            box["snapshot"] = WeightSnapshot.capture(model, step)

    return on_step


@dataclass
class LotteryResult:
    steps: list[dict] = field(default_factory=list)
    control: dict | None = None


def _record(model, data, pruner, k: int, before: float | None) -> dict:
    return {"step": k, "sparsity": pruner.sparsity(), "val_accuracy_pruned": before,
            "val_accuracy": evaluate(model, data.x_val, data.y_val).accuracy,
            "test_accuracy": evaluate(model, data.x_test, data.y_test).accuracy}


def run_lottery(
    model: nn.Module,
    data: DataSplits,
    pruner: UnstructuredPruner,
    train_cfg: TrainConfig,
    cfg: LotteryConfig,
    snapshot: WeightSnapshot | None,
    control_factory: Callable[[], nn.Module] | None = None,
    seed: int = 0,
    progress: bool = True,
) -> LotteryResult:
    """Runs the rounds on an already trained ``model``; leaves the trained ticket in ``model``.

    Args:
        snapshot: the weights to rewind to (θ₀ or θ_k), captured before/during the dense run.
        control_factory: builds a freshly initialised model of the same architecture (for the control).

    Raises:
        ConfigError: no snapshot to rewind to, or a control without a factory.
    """
    if snapshot is None:
        raise ConfigError("lottery rewinding needs the weights stored before training (θ₀) or at "
                          "rewind_step: capture WeightSnapshot.capture(model) before training, or use "
                          "schedule 'iterative' (no rewinding)")
    if cfg.control and control_factory is None:
        raise ConfigError("lottery control needs control_factory (a function that builds a fresh model), "
                          "or set control: false")
    out = LotteryResult()
    start = pruner.sparsity()
    for k in range(1, cfg.rounds + 1):
        pruner.prune_to(cfg.target, lambda s, k=k: iterative_sparsity(s, k, cfg.rounds, start))
        snapshot.restore(model)
        before = evaluate(model, data.x_val, data.y_val).accuracy
        train(model, data, train_cfg, seed=seed + k, progress=progress, desc=f"lottery round {k}/{cfg.rounds}")
        out.steps.append(_record(model, data, pruner, k, before))
    if cfg.control:
        masks = {n: m.detach().clone() for n, m in pruner.masks.masks().items()}
        out.control = train_control(control_factory, masks, data, train_cfg, cfg.control_seed,
                                    seed + cfg.rounds, progress)
    return out


def train_control(factory: Callable[[], nn.Module], masks: dict[str, torch.Tensor], data: DataSplits,
                  train_cfg: TrainConfig, init_seed: int, seed: int, progress: bool = True) -> dict:
    """Trains ``masks`` on a fresh model initialised with ``init_seed``; returns its accuracies."""
    torch.manual_seed(init_seed)
    device = next(iter(masks.values())).device
    control = factory().to(device)
    ms = MaskSet(control)
    for n, m in masks.items():
        ms.set(n, m)
    train(control, data, train_cfg, seed=seed, progress=progress, desc="lottery control")
    ms.make_permanent()
    test = evaluate(control, data.x_test, data.y_test)
    total = sum(m.numel() for m in masks.values())
    return {"accuracy": test.accuracy, "loss": test.loss,
            "val_accuracy": evaluate(control, data.x_val, data.y_val).accuracy,
            "sparsity": 1.0 - sum(float(m.sum()) for m in masks.values()) / total,
            "init_seed": init_seed, "init": "random re-initialisation, same mask, same training"}
