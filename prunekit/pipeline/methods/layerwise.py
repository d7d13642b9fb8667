"""Method ``layerwise``: one-shot post-training pruning of every Linear layer on calibration data.

The recipe form of :class:`prunekit.LayerwiseConfig` (:mod:`prunekit.pruners.layerwise`): ``solver``
``magnitude``, ``wanda`` (Sun et al. 2023) or ``sparsegpt`` (Frantar & Alistarh 2023), each layer at
``sparsity`` or on an N:M pattern, block by block over the model's repeated blocks with the pruned
blocks' outputs fed forward. Calibration inputs are ``calibration_samples`` training inputs (labels are
not used). The ``recover`` section then fine-tunes as usual (``epochs: 0``: none, as in the papers).

Example::

    prune: {method: layerwise, solver: sparsegpt, granularity: nm, nm: [2, 4], calibration_samples: 128}
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from prunekit.data import DataSplits
from prunekit.errors import ConfigError
from prunekit.importance import Calibration
from prunekit.pipeline.methods.base import PRUNE_METHODS, PruneContext, PruneMethod, PruneOutcome, PrunePlan
from prunekit.pipeline.methods.masks import record
from prunekit.pruners import LayerwiseConfig, prune_layerwise
from prunekit.pruners.granularity import check_nm
from prunekit.pruners.layerwise import linear_layers

__all__ = ["LayerwiseOptions"]

#: calibration inputs when the recipe does not say (SparseGPT and Wanda use 128 sequences)
DEFAULT_SAMPLES = 128


@dataclass(frozen=True)
class LayerwiseOptions:
    """The ``prune:`` keys of method ``layerwise`` (the fields of :class:`prunekit.LayerwiseConfig`).

    Attributes:
        solver: ``magnitude``, ``wanda`` or ``sparsegpt``.
        sparsity: fraction of each layer's weights removed (granularity ``element``; default 0.5); with
            granularity ``nm`` it is 1 − N/M and may be left out.
        granularity: ``element`` or ``nm`` (``nm``: [N, M], default [2, 4]).
        compare: ``layer``, ``row`` or ``block`` (sparsegpt); default: the solver's.
        calibration_samples: training inputs the layers are calibrated on (default 128).
        batch_size: calibration mini-batch size.
        blocksize, damp: sparsegpt's column block and Hessian damping.
        sequential: block by block on the pruned outputs (False: all layers from the dense model).
        blocks: dotted name of the list of blocks (default: found).
        exclude: Linear module-name patterns left dense.
    """

    solver: str = "sparsegpt"
    sparsity: float | None = None
    granularity: str = "element"
    nm: list[int] | None = None
    compare: str | None = None
    calibration_samples: int = DEFAULT_SAMPLES
    batch_size: int = 32
    blocksize: int = 128
    damp: float = 0.01
    sequential: bool = True
    blocks: str | None = None
    exclude: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.nm is not None and self.granularity != "nm":
            raise ConfigError(f"nm is read by granularity: nm only (here {self.granularity!r}): set granularity: nm "
                              "or remove nm")
        for what in ("calibration_samples", "batch_size"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"prune.{what} must be a positive integer, got {v!r}")
        self.config()  # validates the rest, naming the value and the fix

    def config(self) -> LayerwiseConfig:
        sparsity = 0.5 if self.sparsity is None and self.granularity != "nm" else self.sparsity
        return LayerwiseConfig(
            solver=self.solver, sparsity=sparsity, granularity=self.granularity,
            nm=tuple(self.nm) if self.nm is not None else (2, 4), compare=self.compare, blocksize=self.blocksize,
            damp=self.damp, sequential=self.sequential, blocks=self.blocks, exclude=tuple(self.exclude))


def _prepare(recipe, model: nn.Module, data: DataSplits) -> PrunePlan:
    """Checks the layers on the untrained model: exclude patterns, tied weights, N:M input sizes."""
    cfg = recipe.prune.options.config()
    layers = linear_layers(model, cfg.exclude)
    if cfg.granularity == "nm":
        for n, m in layers.items():
            check_nm(f"{n}.weight", m.weight.shape, cfg.nm)
    return PrunePlan()


def _run(ctx: PruneContext) -> PruneOutcome:
    r, opts = ctx.recipe, ctx.recipe.prune.options
    cal = Calibration.from_data(ctx.data.x_train, None, opts.calibration_samples, r.seed, opts.batch_size)
    report = prune_layerwise(ctx.model, opts.config(), cal)
    ctx.log(f"  layer-wise {opts.solver}: {len(report.layer_sparsity)} Linear layers"
            + (f", block by block over {report.blocks or 'the model'!r}" if report.blocks is not None else ""))
    step = record(ctx.model, ctx.data, report.sparsity, 1, None)
    return PruneOutcome([step], recovered=False, sparsity=report.sparsity, masks=report.masks,
                        report={"layerwise": {"solver": opts.solver, "blocks": report.blocks,
                                              "calibration_samples": len(cal.x),
                                              "layer_sparsity": report.layer_sparsity}})


PRUNE_METHODS.register("layerwise")(PruneMethod(
    "layerwise", LayerwiseOptions, _run, _prepare,
    summary="one-shot, every Linear layer block by block on calibration inputs: magnitude, Wanda (Sun et al. 2023) "
            "or SparseGPT (Frantar & Alistarh 2023)"))
