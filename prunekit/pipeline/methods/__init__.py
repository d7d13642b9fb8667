"""Prune methods, one module each, registered by name in :data:`PRUNE_METHODS` (``prune.method`` of a recipe).

Mask methods (weights zeroed, shapes kept): ``one_shot``, ``iterative``, ``gradual`` (:mod:`.masks`),
``lottery`` (:mod:`.lottery`), ``at_init`` (:mod:`.at_init`), ``soft_filter`` (:mod:`.soft_filter`),
``slimming`` (:mod:`.slimming`), ``layerwise`` (:mod:`.layerwise`: one-shot magnitude / Wanda / SparseGPT on
calibration data, block by block). Structural removal to a budget: ``structured`` (:mod:`.structured`); heads
and FFN neurons of a text encoder: ``transformer`` (:mod:`.transformer`). No static pruning: ``none``
(:mod:`.none`).
"""

from prunekit.pipeline.methods import at_init as _at_init  # noqa: F401  (each module registers its method)
from prunekit.pipeline.methods import layerwise as _layerwise  # noqa: F401
from prunekit.pipeline.methods import lottery as _lottery  # noqa: F401
from prunekit.pipeline.methods import masks as _masks  # noqa: F401
from prunekit.pipeline.methods import none as _none  # noqa: F401
from prunekit.pipeline.methods import slimming as _slimming  # noqa: F401
from prunekit.pipeline.methods import soft_filter as _soft_filter  # noqa: F401
from prunekit.pipeline.methods import structured as _structured  # noqa: F401
from prunekit.pipeline.methods import transformer as _transformer  # noqa: F401
from prunekit.pipeline.methods.base import (
    PRUNE_METHODS,
    PruneContext,
    PruneMethod,
    PruneOutcome,
    PrunePlan,
    method_names,
)

__all__ = ["PRUNE_METHODS", "PruneContext", "PruneMethod", "PruneOutcome", "PrunePlan", "method_names"]
