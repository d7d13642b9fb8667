"""Method ``slimming``: network slimming (Liu et al. 2017).

Dense training adds λΣ|γ| over the BatchNorm scales (``strength`` = λ); then the fraction ``sparsity`` of all BN
channels with the smallest |γ| is masked (γ and β zeroed, one global ranking) and the model fine-tuned.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from prunekit.data import DataSplits
from prunekit.errors import ConfigError
from prunekit.pipeline.methods.base import PRUNE_METHODS, PruneContext, PruneMethod, PruneOutcome, PrunePlan
from prunekit.pipeline.methods.masks import record
from prunekit.pruners.regularizers import RegularizerConfig, bn_channel_masks, regularized_loss
from prunekit.pruners.unstructured import check_sparsity
from prunekit.recovery import recovery_loss
from prunekit.training import train

__all__ = ["SlimmingOptions"]


@dataclass(frozen=True)
class SlimmingOptions:
    """``sparsity``: fraction of BN channels masked; ``strength``: λ of the BN-L1 penalty on dense training."""

    sparsity: float = 0.5
    strength: float = 1e-4

    def __post_init__(self) -> None:
        check_sparsity(self.sparsity, "sparsity")
        if not 0 <= self.strength <= 1:
            raise ConfigError(f"strength (λ) must be in [0, 1], got {self.strength}")


def _prepare(recipe, model: nn.Module, data: DataSplits) -> PrunePlan:
    opts = recipe.prune.options
    return PrunePlan(train_loss=regularized_loss(model, RegularizerConfig("bn_l1", opts.strength), []))


def _run(ctx: PruneContext) -> PruneOutcome:
    r, opts = ctx.recipe, ctx.recipe.prune.options
    masks = bn_channel_masks(ctx.model, opts.sparsity)
    rec = r.recover
    if rec.epochs:
        teacher = ctx.reference if rec.method == "distill" else None
        with recovery_loss(ctx.model, rec.recovery_config(), teacher) as loss_fn:
            train(ctx.model, ctx.data, rec.train_config(), seed=r.seed + 1, progress=ctx.progress, desc="fine-tune",
                  loss_fn=loss_fn)
    sparsity = masks.global_sparsity()
    return PruneOutcome([record(ctx.model, ctx.data, sparsity, 1, None)], recovered=True, sparsity=sparsity,
                        masks=masks)


PRUNE_METHODS.register("slimming")(PruneMethod(
    "slimming", SlimmingOptions, _run, _prepare,
    summary="BN-L1 penalty on dense training, then mask the BN channels with the smallest |γ|; Liu et al. 2017"))
