"""When to prune, one handler per ``prune.schedule``: each takes the dense-trained model and returns
the trajectory, the pruner holding the final masks, and any extra report keys.

The table ``REGIMES`` maps a schedule name to its handler; the runner looks the handler up and never
branches on the schedule itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from prunekit.data import DataSplits
from prunekit.errors import ConfigError
from prunekit.importance import Calibration
from prunekit.pruners.init_pruning import prune_at_init
from prunekit.pruners.lottery import LotteryConfig, WeightSnapshot, run_lottery
from prunekit.pruners.pipeline import ScheduleSpec, run_schedule
from prunekit.pruners.regularizers import bn_channel_masks
from prunekit.pruners.soft_filter import SoftFilterConfig, soft_filter_train
from prunekit.pruners.unstructured import UnstructuredPruner
from prunekit.registry import Registry
from prunekit.training import evaluate, train

__all__ = ["REGIMES", "RegimeContext", "RegimeResult"]


@dataclass
class RegimeContext:
    """What a regime handler may use. ``snapshot``: θ₀ (or θ_k) stored before/during dense training;
    ``loss_fn``: the recovery loss of the fine-tuning phase (``None``: cross-entropy)."""

    recipe: object
    model: nn.Module
    data: DataSplits
    pruner: UnstructuredPruner
    snapshot: WeightSnapshot | None
    factory: Callable[[], nn.Module]
    loss_fn: Callable | None = None
    progress: bool = True


@dataclass
class RegimeResult:
    steps: list[dict]
    pruner: UnstructuredPruner | None
    extra: dict = field(default_factory=dict)
    masks: object = None  # a MaskSet when the pruning is not held by an UnstructuredPruner


#: Regime handlers by schedule name.
REGIMES: Registry = Registry("schedule")


def _record(ctx: RegimeContext, step: int, sparsity: float) -> dict:
    d = ctx.data
    return {"step": step, "sparsity": sparsity, "val_accuracy_pruned": None,
            "val_accuracy": evaluate(ctx.model, d.x_val, d.y_val).accuracy,
            "test_accuracy": evaluate(ctx.model, d.x_test, d.y_test).accuracy}


def _masks_then_finetune(ctx: RegimeContext) -> RegimeResult:
    r, p = ctx.recipe, ctx.recipe.prune
    if r.regularize.kind == "bn_l1":  # network slimming: prune BN channels by |γ|
        masks = bn_channel_masks(ctx.model, p.target)
        if r.finetune.epochs:
            train(ctx.model, ctx.data, r.finetune, seed=r.seed + 1, progress=ctx.progress,
                  desc="fine-tune", loss_fn=ctx.loss_fn)
        return RegimeResult([_record(ctx, 1, masks.global_sparsity())], None, {}, masks)
    spec = ScheduleSpec(p.target, p.schedule, p.steps, p.gradual_start, p.gradual_end)
    recal = Calibration.from_data(ctx.data.x_train, None, p.recalibrate_bn, r.seed).x if p.recalibrate_bn else None
    steps = run_schedule(ctx.model, ctx.data, ctx.pruner, spec, r.finetune, r.seed, ctx.progress, ctx.loss_fn,
                         recal)
    return RegimeResult(steps, ctx.pruner)


for _name in ("one_shot", "iterative", "gradual"):
    REGIMES.register(_name)(_masks_then_finetune)


@REGIMES.register("lottery")
def _lottery(ctx: RegimeContext) -> RegimeResult:
    r, p = ctx.recipe, ctx.recipe.prune
    cfg = LotteryConfig(target=p.target, rounds=p.steps, rewind=p.lottery.rewind,
                        rewind_step=p.lottery.rewind_step, control=p.lottery.control, control_seed=r.seed + 10_000)
    res = run_lottery(ctx.model, ctx.data, ctx.pruner, r.train, cfg, ctx.snapshot, ctx.factory, r.seed, ctx.progress)
    extra = {"lottery": {"rewind": cfg.rewind, "rewind_step": cfg.rewind_step, "rounds": cfg.rounds}}
    if res.control is not None:
        extra["control"] = res.control
    return RegimeResult(res.steps, ctx.pruner, extra)


@REGIMES.register("at_init")
def _at_init(ctx: RegimeContext) -> RegimeResult:
    r, p = ctx.recipe, ctx.recipe.prune
    if ctx.snapshot is None:
        raise ConfigError("schedule 'at_init' needs the weights stored before training; set train.epochs ≥ 1")
    ctx.snapshot.restore(ctx.model)
    n = 2 * r.train.batch_size  # calibration batch: SNIP's loss, SynFlow's input shape
    ctx.pruner.calibration = (ctx.data.x_train[:n], ctx.data.y_train[:n])
    sparsity = prune_at_init(ctx.pruner, p.target, p.iterations)
    train(ctx.model, ctx.data, r.train, seed=r.seed, progress=ctx.progress, desc="sparse from scratch",
          loss_fn=ctx.loss_fn)
    return RegimeResult([_record(ctx, 1, sparsity)], ctx.pruner,
                        {"at_init": {"criterion": p.criterion, "iterations": p.iterations}})


@REGIMES.register("soft_filter")
def _soft_filter(ctx: RegimeContext) -> RegimeResult:
    r, p = ctx.recipe, ctx.recipe.prune
    pruner, steps = soft_filter_train(ctx.model, ctx.data, r.finetune, SoftFilterConfig(p.target, tuple(p.exclude)),
                                      r.seed + 1, ctx.progress, ctx.loss_fn)
    return RegimeResult(steps, pruner)
