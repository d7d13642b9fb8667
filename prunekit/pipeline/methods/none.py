"""Method ``none``: no static pruning — the model goes on as trained (e.g. to a ``dynamic:`` section alone,
``recipes/early-exit-resnet-mnist.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass

from prunekit.pipeline.methods.base import PRUNE_METHODS, PruneContext, PruneMethod, PruneOutcome

__all__ = ["NoOptions"]


@dataclass(frozen=True)
class NoOptions:
    """Takes no keys."""


def _run(ctx: PruneContext) -> PruneOutcome:
    return PruneOutcome([], recovered=True)


PRUNE_METHODS.register("none")(PruneMethod(
    "none", NoOptions, _run, kind="structured", reads_recover=False,
    summary="no static pruning (the dense model, e.g. for a dynamic: section)"))
