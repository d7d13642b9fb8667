"""Method ``soft_filter``: soft filter pruning during the fine-tuning run (He et al. 2018).

After every epoch the fraction ``sparsity`` of each layer's filters with the smallest L2 norm is zeroed but not
masked, so they may grow back; at the end the zero filters are masked for good (see
:mod:`prunekit.pruners.soft_filter` for the zeroing itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from prunekit.data import DataSplits
from prunekit.errors import ConfigError
from prunekit.pipeline.methods.base import PRUNE_METHODS, PruneContext, PruneMethod, PruneOutcome, PrunePlan
from prunekit.pruners.soft_filter import SoftFilterConfig, filter_pruner, zero_lowest_filters
from prunekit.pruners.unstructured import UnstructuredPruner, check_sparsity
from prunekit.recovery import recovery_loss
from prunekit.training import TrainConfig, evaluate, train
from prunekit.training.phase import StepHook

__all__ = ["SoftFilterOptions", "soft_filter_train"]


@dataclass(frozen=True)
class SoftFilterOptions:
    """``sparsity``: fraction of filters per layer zeroed each epoch and masked at the end; ``exclude``: layer
    patterns left alone; ``remove_channels``: report the MACs after removing the dead channels."""

    sparsity: float = 0.5
    exclude: list[str] = field(default_factory=list)
    remove_channels: bool = False

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity, "sparsity")
        if self.sparsity <= 0:
            raise ConfigError(f"soft_filter sparsity must be > 0, got {self.sparsity}")


def soft_filter_train(model: nn.Module, data: DataSplits, train_cfg: TrainConfig, cfg: SoftFilterConfig,
                      seed: int = 0, progress: bool = True,
                      loss_fn: Callable | None = None) -> tuple[UnstructuredPruner, list[dict]]:
    """Trains with soft filter pruning after every epoch, then masks the zero filters (hard).

    Returns:
        The pruner holding the final filter masks, and one record per epoch.
    """
    if train_cfg.epochs < 1:
        raise ConfigError("soft filter pruning zeroes filters after each epoch: set recover.epochs ≥ 1")
    pruner = filter_pruner(model, cfg.ratio, cfg.exclude)
    names = list(pruner.names)
    steps_per_epoch = -(-len(data.x_train) // train_cfg.batch_size)

    def on_step(step: int, _total: int, state: dict) -> None:
        if step % steps_per_epoch == 0:
            zero_lowest_filters(model, names, cfg.ratio)
            state["records"].append({"step": step // steps_per_epoch, "sparsity": cfg.ratio,
                                     "val_accuracy_pruned": None,
                                     "val_accuracy": evaluate(model, data.x_val, data.y_val).accuracy,
                                     "test_accuracy": evaluate(model, data.x_test, data.y_test).accuracy})

    zero_lowest_filters(model, names, cfg.ratio)
    hook = StepHook(on_step, {"records": []})  # the per-epoch records are checkpointed with the model
    train(model, data, train_cfg, seed=seed, on_step=hook, progress=progress, desc="soft filter", loss_fn=loss_fn)
    records: list[dict] = hook.state["records"]
    pruner.prune_to(cfg.ratio)  # the zero filters score lowest: the mask fixes exactly them
    return pruner, records


def _prepare(recipe, model: nn.Module, data: DataSplits) -> PrunePlan:
    opts = recipe.prune.options
    filter_pruner(model, opts.sparsity, tuple(opts.exclude))  # a layer it cannot prune fails before training
    return PrunePlan()


def _run(ctx: PruneContext) -> PruneOutcome:
    r, opts = ctx.recipe, ctx.recipe.prune.options
    rec = r.recover
    teacher = ctx.reference if rec.method == "distill" else None
    with recovery_loss(ctx.model, rec.recovery_config(), teacher) as loss_fn:
        pruner, steps = soft_filter_train(ctx.model, ctx.data, rec.train_config(),
                                          SoftFilterConfig(opts.sparsity, tuple(opts.exclude)), r.seed + 1,
                                          ctx.progress, loss_fn)
    return PruneOutcome(steps, recovered=True, sparsity=pruner.sparsity(), masks=pruner)


PRUNE_METHODS.register("soft_filter")(PruneMethod(
    "soft_filter", SoftFilterOptions, _run, _prepare,
    summary="zero the lowest-L2 filters after every fine-tuning epoch, mask them at the end; He et al. 2018"))
