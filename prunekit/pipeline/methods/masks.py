"""Mask methods on a schedule: ``one_shot``, ``iterative`` and ``gradual`` prune → fine-tune loops.

- ``one_shot``: prune to the target, then fine-tune once.
- ``iterative``: ``steps`` rounds of prune (an equal fraction of what is left, Han et al. 2015) → fine-tune.
- ``gradual``: one fine-tuning run during which Zhu & Gupta's (2017) cubic schedule raises the sparsity every
  Δt optimiser steps between ``start`` and ``end`` (fractions of the run).

Each recorded step holds the sparsity reached and the validation and test accuracy after it. With
``recalibrate_bn`` the one_shot and iterative loops re-estimate the BatchNorm statistics after every
pruning step, before fine-tuning (:func:`prunekit.recovery.bn.reestimate_bn`). :class:`MaskOptions` holds the
keys every mask method shares (also used by ``lottery`` and ``at_init``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from prunekit.data import DataSplits
from prunekit.errors import ConfigError
from prunekit.importance import Calibration
from prunekit.pipeline.methods._engine import (
    MASK_ALLOCATIONS,
    check_importance,
    importance_needs_data,
    mask_pruner,
    scores_at_init,
)
from prunekit.pipeline.methods.base import PRUNE_METHODS, PruneContext, PruneMethod, PruneOutcome, PrunePlan
from prunekit.pruners.granularity import GRANULARITIES, check_nm, nm_sparsity
from prunekit.pruners.regularizers import RegularizerConfig, regularized_loss
from prunekit.pruners.schedules import cubic_sparsity, iterative_sparsity
from prunekit.pruners.unstructured import UnstructuredPruner, check_sparsity
from prunekit.recovery import recovery_loss
from prunekit.recovery.bn import reestimate_bn
from prunekit.training import TrainConfig, evaluate, train
from prunekit.training.phase import StepHook

__all__ = ["MaskOptions", "Regularize", "OneShotOptions", "IterativeOptions", "GradualOptions", "ScheduleSpec",
           "run_schedule", "record", "prepare_masks", "DEFAULT_CALIBRATION_SAMPLES"]

DEFAULT_CALIBRATION_SAMPLES = 512
_PENALTIES = ("l1", "group_lasso")


@dataclass(frozen=True)
class Regularize:
    """A sparsity penalty added to the dense-training loss: ``l1`` (λ‖θ‖₁) or ``group_lasso``
    (λΣ√|g|‖W_g‖₂ over filters, Wen et al. 2016); BN-L1 is the ``slimming`` method."""

    kind: str = "l1"
    strength: float = 1e-4

    def __post_init__(self) -> None:
        if self.kind == "bn_l1":
            raise ConfigError("regularize.kind 'bn_l1' is network slimming: use prune.method: slimming (its "
                              "strength is prune.strength)")
        if self.kind not in _PENALTIES:
            raise ConfigError(f"unknown regularizer {self.kind!r}; choose one of: {', '.join(_PENALTIES)}")
        if not 0 <= self.strength <= 1:
            raise ConfigError(f"regularize.strength (λ) must be in [0, 1], got {self.strength}")


@dataclass(frozen=True)
class MaskOptions:
    """What every mask method reads.

    Attributes:
        importance: the criterion scoring single weights (``l1``, ``l2``, ``taylor``, …; ``snip``/``synflow``
            need method ``at_init``).
        sparsity: the fraction of the prunable weights removed at the end, in [0, 1).
        allocation: how the target spreads over layers: ``global`` (one ranking), ``uniform`` (each layer the
            same), ``ratios`` (``ratios``: name pattern → sparsity) or ``threshold`` (``threshold``; one_shot).
        granularity: mask shape: ``element``, ``vector``, ``kernel``, ``filter`` or ``nm`` (``nm``: [N, M]).
        exclude: parameter/module-name patterns left dense.
        include_bias: also prune biases.
        calibration_samples: training examples a data-driven criterion scores with (default 512).
        remove_channels: report the MACs after removing the channels filter masks left dead.
        regularize: a sparsity penalty on the dense training (``{kind: l1|group_lasso, strength}``).
    """

    importance: str = "l1"
    sparsity: float = 0.9
    allocation: str = "global"
    ratios: dict[str, float] = field(default_factory=dict)
    threshold: float | None = None
    granularity: str = "element"
    nm: list[int] | None = None
    exclude: list[str] = field(default_factory=list)
    include_bias: bool = False
    calibration_samples: int | None = None
    remove_channels: bool = False
    regularize: Regularize | None = None

    #: whether this method may use ``allocation: threshold`` (a fixed score cut is reached in one step)
    threshold_ok = False
    #: whether this method scores at initialisation (snip, synflow)
    at_init = False

    def __post_init__(self) -> None:
        check_importance(self.importance, "weight")
        if self.allocation not in MASK_ALLOCATIONS:
            raise ConfigError(f"unknown allocation {self.allocation!r}; choose one of: "
                              f"{', '.join(sorted(MASK_ALLOCATIONS))}")
        GRANULARITIES.get(self.granularity)
        check_sparsity(self.sparsity, "sparsity")
        for name, r in self.ratios.items():
            check_sparsity(r, f"ratios[{name!r}]")
        self._check_allocation()
        self._check_granularity()
        if scores_at_init(self.importance) and not self.at_init:
            raise ConfigError(f"importance {self.importance!r} scores weights at initialisation: set method: at_init")
        if self.calibration_samples is not None:
            if not importance_needs_data(self.importance, "weight"):
                raise ConfigError(f"calibration_samples is read only by criteria that score with data; importance "
                                  f"{self.importance!r} does not: remove calibration_samples")
            if self.calibration_samples < 1:
                raise ConfigError(f"calibration_samples must be ≥ 1, got {self.calibration_samples}")

    def _check_allocation(self) -> None:
        if self.ratios and self.allocation != "ratios":
            raise ConfigError(f"ratios are read by allocation: ratios only (here {self.allocation!r}): set "
                              "allocation: ratios or remove ratios")
        if self.allocation == "ratios" and not self.ratios:
            raise ConfigError("allocation 'ratios' needs ratios: {name pattern: sparsity}, e.g. {'fc.*': 0.5}")
        if self.threshold is not None and self.allocation != "threshold":
            raise ConfigError(f"threshold is read by allocation: threshold only (here {self.allocation!r}): set "
                              "allocation: threshold or remove threshold")
        if self.allocation == "threshold":
            if self.threshold is None or not self.threshold >= 0:
                raise ConfigError(f"allocation 'threshold' needs threshold: a score ≥ 0 below which weights go, got "
                                  f"{self.threshold!r}")
            if not self.threshold_ok:
                raise ConfigError("allocation 'threshold' cuts at a fixed score in one step: use method: one_shot")

    def _check_granularity(self) -> None:
        if self.nm is not None and self.granularity != "nm":
            raise ConfigError(f"nm is read by granularity: nm only (here {self.granularity!r}): set granularity: nm "
                              "or remove nm")
        if self.granularity == "nm":
            nm = self.nm_pattern()
            if len(nm) != 2:
                raise ConfigError(f"nm must be [N, M], got {nm}")
            check_nm("nm", (1, nm[1]), tuple(nm))
            want = nm_sparsity(tuple(nm))
            if abs(self.sparsity - want) > 1e-9:
                raise ConfigError(f"granularity 'nm' with nm {nm} fixes the sparsity at 1 − N/M = {want:g}, but "
                                  f"sparsity is {self.sparsity}; set sparsity: {want:g}")
        if self.remove_channels and self.granularity != "filter":
            raise ConfigError("remove_channels removes the channels that filter masks left dead: set granularity: "
                              f"filter (got {self.granularity!r})")

    def nm_pattern(self) -> list[int]:
        return list(self.nm) if self.nm is not None else [2, 4]


@dataclass(frozen=True)
class OneShotOptions(MaskOptions):
    """``recalibrate_bn``: training examples on which BatchNorm statistics are re-estimated after pruning (0: off)."""

    recalibrate_bn: int = 0
    threshold_ok = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.recalibrate_bn < 0:
            raise ConfigError(f"recalibrate_bn must be ≥ 0 training examples (0: off), got {self.recalibrate_bn}")


@dataclass(frozen=True)
class IterativeOptions(OneShotOptions):
    """``steps``: prune → fine-tune rounds, each removing the same fraction of what is left."""

    steps: int = 5
    threshold_ok = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1:
            raise ConfigError(f"steps must be ≥ 1, got {self.steps}")


@dataclass(frozen=True)
class GradualOptions(MaskOptions):
    """``steps`` pruning events of the cubic schedule between ``start`` and ``end`` of the fine-tuning run."""

    steps: int = 5
    start: float = 0.0
    end: float = 0.75

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1:
            raise ConfigError(f"steps must be ≥ 1, got {self.steps}")
        if not 0.0 <= self.start < self.end <= 1.0:
            raise ConfigError(f"need 0 ≤ start < end ≤ 1 (fractions of the fine-tuning run), got {self.start} and "
                              f"{self.end}")


@dataclass(frozen=True)
class ScheduleSpec:
    target: float
    schedule: str = "iterative"
    steps: int = 5
    gradual_start: float = 0.0
    gradual_end: float = 0.75


def record(model: nn.Module, data: DataSplits, sparsity: float, step: int, before: float | None) -> dict:
    """One trajectory record: the sparsity reached and the accuracies after the step."""
    return {"step": step, "sparsity": sparsity, "val_accuracy_pruned": before,
            "val_accuracy": evaluate(model, data.x_val, data.y_val).accuracy,
            "test_accuracy": evaluate(model, data.x_test, data.y_test).accuracy}


def run_schedule(model: nn.Module, data: DataSplits, pruner: UnstructuredPruner, spec: ScheduleSpec,
                 finetune: TrainConfig, seed: int = 0, progress: bool = True, loss_fn: Callable | None = None,
                 recalibration: torch.Tensor | None = None) -> list[dict]:
    """Prunes ``model`` to ``spec.target`` on the schedule, fine-tuning as it goes.

    ``loss_fn`` is the fine-tuning loss (``None``: cross-entropy). ``recalibration``: training inputs on which
    the BatchNorm statistics are re-estimated after every pruning step (one_shot and iterative).

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
            train(model, data, finetune, seed=seed + k, progress=progress, desc=f"fine-tune {k}/{n}", loss_fn=loss_fn)
        steps.append(record(model, data, pruner.sparsity(), k, before))
    return steps


def _gradual(model, data, pruner, spec, finetune, seed, progress, loss_fn=None) -> list[dict]:
    if finetune.epochs < 1:
        raise ConfigError("the gradual schedule prunes during fine-tuning: set recover.epochs ≥ 1")
    steps_per_epoch = -(-len(data.x_train) // finetune.batch_size)
    total = steps_per_epoch * finetune.epochs
    t0 = int(spec.gradual_start * total)
    span = max(1, int(spec.gradual_end * total) - t0)
    dt = max(1, span // spec.steps)
    events = {t0 + i * dt for i in range(1, spec.steps + 1)}

    def on_step(step: int, _total: int, state: dict) -> None:
        if step in events:
            pruner.prune_to(spec.target, lambda s: cubic_sparsity(s, step, t0, spec.steps, dt))
            state["generator"] = pruner.generator.get_state()  # a random criterion draws from it
            state["masks"] = {n: m.detach().clone() for n, m in pruner.masks.masks().items()}
        if step % steps_per_epoch == 0:
            state["records"].append(record(model, data, pruner.sparsity(), step // steps_per_epoch, None))

    def on_load(state: dict) -> None:
        if "generator" in state:
            pruner.generator.set_state(state["generator"])
        for n, m in state.get("masks", {}).items():  # installed through the pruner, which then knows them
            pruner.masks.set(n, m)

    # the masks (installed at the first event), the trajectory and the generator are checkpointed in the hook
    hook = StepHook(on_step, {"records": []}, on_load)
    train(model, data, finetune, seed=seed + 1, on_step=hook, progress=progress, desc="gradual", loss_fn=loss_fn)
    records: list[dict] = hook.state["records"]
    if abs(pruner.sparsity() - spec.target) > 1e-3 and pruner.config.scope != "ratios":
        pruner.prune_to(spec.target)  # the last event fell after the run's final step
        records.append(record(model, data, pruner.sparsity(), len(records) + 1, None))
    return records


def prepare_masks(recipe, model: nn.Module, data: DataSplits) -> PrunePlan:
    """Builds the pruner on the untrained model (bad layers fail before training), its calibration batch and
    the dense-training penalty."""
    opts = recipe.prune.options
    pruner = mask_pruner(model, opts, recipe.seed)
    if importance_needs_data(opts.importance, "weight"):
        n = opts.calibration_samples or DEFAULT_CALIBRATION_SAMPLES
        cal = Calibration.from_data(data.x_train, data.y_train, n, recipe.seed)
        pruner.calibration = (cal.x, cal.y)
    plan = PrunePlan(pruner=pruner)
    if opts.regularize is not None:
        plan.train_loss = regularized_loss(model, RegularizerConfig(opts.regularize.kind, opts.regularize.strength),
                                           pruner.names)
    return plan


def _scheduled(schedule: str) -> Callable[[PruneContext], PruneOutcome]:
    def run(ctx: PruneContext) -> PruneOutcome:
        r, opts = ctx.recipe, ctx.recipe.prune.options
        spec = ScheduleSpec(opts.sparsity, schedule, getattr(opts, "steps", 1), getattr(opts, "start", 0.0),
                            getattr(opts, "end", 0.75))
        n_recal = getattr(opts, "recalibrate_bn", 0)
        recal = Calibration.from_data(ctx.data.x_train, None, n_recal, r.seed).x if n_recal else None
        rec = r.recover
        teacher = ctx.reference if rec.method == "distill" else None
        with recovery_loss(ctx.model, rec.recovery_config(), teacher) as loss_fn:
            steps = run_schedule(ctx.model, ctx.data, ctx.plan.pruner, spec, rec.train_config(), r.seed,
                                 ctx.progress, loss_fn, recal)
        return PruneOutcome(steps, recovered=True, sparsity=ctx.plan.pruner.sparsity(), masks=ctx.plan.pruner)

    return run


for _name, _opts, _summary in (
        ("one_shot", OneShotOptions, "prune to the target at once, then fine-tune"),
        ("iterative", IterativeOptions, "steps × (prune an equal fraction of what is left → fine-tune); Han et al. "
                                        "2015"),
        ("gradual", GradualOptions, "raise the sparsity on the cubic schedule during fine-tuning; Zhu & Gupta 2017")):
    PRUNE_METHODS.register(_name)(PruneMethod(_name, _opts, _scheduled(_name), prepare_masks, summary=_summary))
