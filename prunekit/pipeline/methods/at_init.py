"""Method ``at_init``: choose the mask before training (SNIP, Lee et al. 2019; SynFlow, Tanaka et al. 2020),
then train the sparse network from its initial weights with the ``train`` settings.

The dense run happens first (for the report's dense baseline); the pruned model is rewound to θ₀, scored
on a calibration batch of 2 × ``train.batch_size`` examples in ``iterations`` rounds, and trained from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

from prunekit.errors import ConfigError
from prunekit.pipeline.methods.base import PRUNE_METHODS, PruneContext, PruneMethod, PruneOutcome
from prunekit.pipeline.methods.masks import MaskOptions, prepare_masks, record
from prunekit.pruners.init_pruning import prune_at_init
from prunekit.training import train

__all__ = ["AtInitOptions"]


@dataclass(frozen=True)
class AtInitOptions(MaskOptions):
    """``importance``: ``snip`` or ``synflow`` (or a magnitude criterion as a baseline); ``iterations``: scoring
    rounds (default 1 for snip, 100 for synflow)."""

    importance: str = "snip"
    iterations: int | None = None
    at_init = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"iterations must be ≥ 1, got {self.iterations}")


def _run(ctx: PruneContext) -> PruneOutcome:
    r, opts = ctx.recipe, ctx.recipe.prune.options
    if ctx.snapshot is None:
        raise ConfigError("method 'at_init' needs the weights stored before training; set train.epochs ≥ 1")
    ctx.snapshot.restore(ctx.model)
    pruner = ctx.plan.pruner
    n = 2 * r.train.batch_size  # calibration batch: SNIP's loss, SynFlow's input shape
    pruner.calibration = (ctx.data.x_train[:n], ctx.data.y_train[:n])
    sparsity = prune_at_init(pruner, opts.sparsity, opts.iterations)
    train(ctx.model, ctx.data, r.train, seed=r.seed, progress=ctx.progress, desc="sparse from scratch")
    return PruneOutcome([record(ctx.model, ctx.data, sparsity, 1, None)], recovered=True, sparsity=pruner.sparsity(),
                        masks=pruner, report={"at_init": {"criterion": opts.importance, "iterations": opts.iterations}})


PRUNE_METHODS.register("at_init")(PruneMethod(
    "at_init", AtInitOptions, _run, prepare_masks, reads_recover=False, needs_dense_run=True,
    summary="score at initialisation (snip, synflow), then train the sparse net from scratch"))
