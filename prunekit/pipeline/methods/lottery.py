"""Method ``lottery``: iterative magnitude pruning with rewinding, and the random re-initialisation control.

Frankle & Carbin 2019 ("The lottery ticket hypothesis"): train θ₀ → θ_T, prune the smallest weights
(mask m), reset the survivors to θ₀ ⊙ m, and train again with the ``train`` settings; ``steps`` rounds, each
removing the same fraction of what is left, s_k = 1 − (1 − s_f)^{k/n}. Frankle et al. 2020 rewind to θ_k
(``rewind: iteration``, ``rewind_step`` = k optimiser steps of the dense run) instead. The control trains the
same mask from a fresh random initialisation θ'₀ ⊙ m: a ticket is only "winning" if it beats it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from prunekit.data import DataSplits
from prunekit.errors import ConfigError
from prunekit.masks import MaskSet
from prunekit.pipeline.methods.base import PRUNE_METHODS, PruneContext, PruneMethod, PruneOutcome, PrunePlan
from prunekit.pipeline.methods.masks import MaskOptions, prepare_masks, record
from prunekit.pruners.lottery import REWINDS, WeightSnapshot, capture_at_step
from prunekit.pruners.schedules import iterative_sparsity
from prunekit.pruners.unstructured import UnstructuredPruner, check_sparsity
from prunekit.training import TrainConfig, evaluate, train

__all__ = ["LotteryOptions", "LotteryConfig", "LotteryResult", "run_lottery", "train_control"]


@dataclass(frozen=True)
class LotteryOptions(MaskOptions):
    """``steps``: prune → rewind → retrain rounds; ``rewind``: ``init`` (θ₀) or ``iteration`` (θ_k with
    ``rewind_step`` = k); ``control``: also train the final mask from a random re-initialisation."""

    steps: int = 5
    rewind: str = "init"
    rewind_step: int = 0
    control: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        LotteryConfig(self.sparsity, self.steps, self.rewind, self.rewind_step, self.control)
        if self.rewind == "init" and self.rewind_step:
            raise ConfigError(f"rewind_step is read by rewind: iteration only (here 'init'): set rewind: iteration "
                              f"or remove rewind_step {self.rewind_step}")


@dataclass(frozen=True)
class LotteryConfig:
    """Iterative magnitude pruning with rewinding (``target``: final sparsity; ``rounds``; ``rewind``;
    ``rewind_step``; ``control``; ``control_seed``: seed of the control's re-initialisation)."""

    target: float = 0.9
    rounds: int = 5
    rewind: str = "init"
    rewind_step: int = 0
    control: bool = True
    control_seed: int = 10_000

    def __post_init__(self) -> None:
        check_sparsity(self.target, "sparsity")
        if self.rounds < 1:
            raise ConfigError(f"lottery rounds (steps) must be ≥ 1, got {self.rounds}")
        if self.rewind not in REWINDS:
            raise ConfigError(f"unknown rewind {self.rewind!r}; choose one of: {', '.join(REWINDS)}")
        if self.rewind == "iteration" and self.rewind_step < 1:
            raise ConfigError(f"rewind 'iteration' needs rewind_step ≥ 1 (optimiser steps of the dense run to rewind "
                              f"to), got {self.rewind_step}; or use rewind: init")


@dataclass
class LotteryResult:
    steps: list[dict] = field(default_factory=list)
    control: dict | None = None


def run_lottery(model: nn.Module, data: DataSplits, pruner: UnstructuredPruner, train_cfg: TrainConfig,
                cfg: LotteryConfig, snapshot: WeightSnapshot | None,
                control_factory: Callable[[], nn.Module] | None = None, seed: int = 0,
                progress: bool = True) -> LotteryResult:
    """Runs the rounds on an already trained ``model``; leaves the trained ticket in ``model``.

    Args:
        snapshot: the weights to rewind to (θ₀ or θ_k), captured before/during the dense run.
        control_factory: builds a freshly initialised model of the same architecture (for the control).

    Raises:
        ConfigError: no snapshot to rewind to, or a control without a factory.
    """
    if snapshot is None:
        raise ConfigError("lottery rewinding needs the weights stored before training (θ₀) or at rewind_step: "
                          "capture WeightSnapshot.capture(model) before training, or use method 'iterative'")
    if cfg.control and control_factory is None:
        raise ConfigError("lottery control needs control_factory (a function that builds a fresh model), or set "
                          "control: false")
    out = LotteryResult()
    start = pruner.sparsity()
    for k in range(1, cfg.rounds + 1):
        pruner.prune_to(cfg.target, lambda s, k=k: iterative_sparsity(s, k, cfg.rounds, start))
        snapshot.restore(model)
        before = evaluate(model, data.x_val, data.y_val).accuracy
        train(model, data, train_cfg, seed=seed + k, progress=progress, desc=f"lottery round {k}/{cfg.rounds}")
        out.steps.append(record(model, data, pruner.sparsity(), k, before))
    if cfg.control:
        masks = {n: m.detach().clone() for n, m in pruner.masks.masks().items()}
        out.control = train_control(control_factory, masks, data, train_cfg, cfg.control_seed, seed + cfg.rounds,
                                    progress)
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
    out = {"accuracy": test.accuracy, "loss": test.loss,
           "val_accuracy": evaluate(control, data.x_val, data.y_val).accuracy,
           "sparsity": 1.0 - sum(float(m.sum()) for m in masks.values()) / total,
           "init_seed": init_seed, "init": "random re-initialisation, same mask, same training"}
    if test.accuracy < 2.0 / data.num_classes:  # a collapsed control proves nothing about the ticket
        out["warning"] = (f"the control did not train (test accuracy {test.accuracy:.1%}, chance "
                          f"{1 / data.num_classes:.0%}): a random initialisation under a sparse mask starts with much "
                          "weaker signals than the rewound ticket and needs more optimiser steps; raise train.epochs "
                          "(or train.lr) before reading the comparison")
    return out


def _prepare(recipe, model: nn.Module, data: DataSplits) -> PrunePlan:
    plan = prepare_masks(recipe, model, data)
    opts = recipe.prune.options
    if opts.rewind == "iteration":
        total = -(-len(data.x_train) // recipe.train.batch_size) * recipe.train.epochs
        if opts.rewind_step > total:
            raise ConfigError(f"prune.rewind_step {opts.rewind_step} is beyond the dense run ({total} optimiser "
                              "steps); choose a step within train.epochs × steps per epoch")
        plan.on_train_step = capture_at_step(opts.rewind_step, model, plan.state)
    return plan


def _run(ctx: PruneContext) -> PruneOutcome:
    from prunekit.models import build_model

    r, opts = ctx.recipe, ctx.recipe.prune.options
    snapshot = ctx.plan.state.get("snapshot", ctx.snapshot) if opts.rewind == "iteration" else ctx.snapshot
    cfg = LotteryConfig(opts.sparsity, opts.steps, opts.rewind, opts.rewind_step, opts.control, r.seed + 10_000)
    m, d = r.model, ctx.data
    # never the checkpoint: the control is a fresh initialisation
    factory = lambda: build_model(m.name, d.input_shape, d.num_classes, m.kwargs)  # noqa: E731
    res = run_lottery(ctx.model, d, ctx.plan.pruner, r.train, cfg, snapshot, factory, r.seed, ctx.progress)
    extra = {"lottery": {"rewind": cfg.rewind, "rewind_step": cfg.rewind_step, "rounds": cfg.rounds}}
    if res.control is not None:
        extra["control"] = res.control
    return PruneOutcome(res.steps, recovered=True, sparsity=ctx.plan.pruner.sparsity(), masks=ctx.plan.pruner,
                        report=extra)


PRUNE_METHODS.register("lottery")(PruneMethod(
    "lottery", LotteryOptions, _run, _prepare, reads_recover=False, needs_dense_run=True,
    summary="iterative magnitude pruning, rewinding the survivors to θ₀/θ_k and retraining; Frankle & Carbin 2019"))
