"""Method ``layerwise``: one-shot post-training pruning of every Linear layer on calibration data.

The recipe form of :class:`prunekit.LayerwiseConfig` (:mod:`prunekit.pruners.layerwise`): ``solver``
``magnitude``, ``wanda`` (Sun et al. 2023) or ``sparsegpt`` (Frantar & Alistarh 2023), each layer at
``sparsity`` or on an N:M pattern, block by block over the model's repeated blocks with the pruned
blocks' outputs fed forward. Calibration inputs are ``calibration_samples`` training inputs (labels are
not used). The ``recover`` section then fine-tunes as usual (``epochs: 0``: none, as in the papers).

Text models (``model: hf:PATH``): the calibration inputs are ``calibration_samples`` training texts, tokenised
by the model's tokenizer as the recipe says, padded per batch, with their attention mask, so the padded
positions count in neither Wanda's norms nor SparseGPT's Hessians. The classification head and the parts of the
encoder the text model does not read (BERT's pooler) stay dense, as do the embeddings (not Linear layers). The
saved model (``model/``) holds the masked weights as zeros; with ``granularity: nm`` the save stage checks the
pattern in the written weights (``saved_nm`` in report.json).

Example::

    prune: {method: layerwise, solver: sparsegpt, granularity: nm, nm: [2, 4], calibration_samples: 128}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from prunekit.data import DataSplits, TextSplits
from prunekit.errors import ConfigError, PruningError
from prunekit.importance import Calibration
from prunekit.models.hf import TextModel
from prunekit.pipeline.methods.base import PRUNE_METHODS, PruneContext, PruneMethod, PruneOutcome, PrunePlan
from prunekit.pipeline.methods.masks import record
from prunekit.pruners import LayerwiseConfig, prune_layerwise
from prunekit.pruners.granularity import check_nm, is_nm
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

    def config(self, exclude: tuple[str, ...] = ()) -> LayerwiseConfig:
        """The library config; ``exclude``: more Linear-name patterns left dense (the text model's own)."""
        sparsity = 0.5 if self.sparsity is None and self.granularity != "nm" else self.sparsity
        return LayerwiseConfig(
            solver=self.solver, sparsity=sparsity, granularity=self.granularity,
            nm=tuple(self.nm) if self.nm is not None else (2, 4), compare=self.compare, blocksize=self.blocksize,
            damp=self.damp, sequential=self.sequential, blocks=self.blocks, exclude=(*self.exclude, *exclude))


def text_exclusions(model: nn.Module) -> tuple[str, ...]:
    """The Linear layers of a text model that stay dense: its classification head (trained on the labels, a
    few thousand weights) and the encoder parts it does not read (BERT's pooler: it never sees the text model's
    pooled output, so its calibration would say nothing about the task)."""
    if not isinstance(model, TextModel):
        return ()
    return (*(("head",) if model.head is not None else ()), *(f"{n}.*" for n in model.kept_whole()))


def _prepare(recipe, model: nn.Module, data: DataSplits) -> PrunePlan:
    """Checks the layers on the untrained model: exclude patterns, tied weights, N:M input sizes."""
    cfg = recipe.prune.options.config(text_exclusions(model))
    layers = linear_layers(model, cfg.exclude)
    if cfg.granularity == "nm":
        for n, m in layers.items():
            check_nm(f"{n}.weight", m.weight.shape, cfg.nm)
    return PrunePlan()


def _text_calibration(ctx: PruneContext, samples: int, batch_size: int) -> Calibration:
    """``samples`` training texts (seeded), padded to the longest of them, with their attention mask."""
    enc = ctx.plan.state["text"].train
    idx = torch.randperm(len(enc), generator=torch.Generator().manual_seed(ctx.recipe.seed))[:samples].tolist()
    batch = enc.collate(idx)
    return Calibration(batch["input_ids"], None, batch_size, attention_mask=batch["attention_mask"],
                       token_type_ids=batch.get("token_type_ids"))  # sentence pairs tokenised together


def _run(ctx: PruneContext) -> PruneOutcome:
    r, opts = ctx.recipe, ctx.recipe.prune.options
    text = isinstance(ctx.data, TextSplits)
    if text:
        cal = _text_calibration(ctx, opts.calibration_samples, opts.batch_size)
    else:
        cal = Calibration.from_data(ctx.data.x_train, None, opts.calibration_samples, r.seed, opts.batch_size)
    excluded = text_exclusions(ctx.model)
    report = prune_layerwise(ctx.model, opts.config(excluded), cal)
    ctx.log(f"  layer-wise {opts.solver}: {len(report.layer_sparsity)} Linear layers"
            + (f", block by block over {report.blocks or 'the model'!r}" if report.blocks is not None else ""))
    steps = [] if text else [record(ctx.model, ctx.data, report.sparsity, 1, None)]
    facts = {"solver": opts.solver, "blocks": report.blocks, "calibration_samples": len(cal.x),
             "layer_sparsity": report.layer_sparsity}
    if text:
        facts.update(calibration_tokens=max(report.tokens.values(), default=0),
                     calibration_padded_tokens=int(cal.x.numel()), dense_layers=list(excluded))
    return PruneOutcome(steps, recovered=False, sparsity=report.sparsity, masks=report.masks,
                        report={"layerwise": facts})


def verify_saved(recipe, outcome: PruneOutcome, directory: Path) -> dict:
    """With ``granularity: nm``: reads every weights file written under ``directory`` back and checks that each
    layer the method pruned carries the N:M pattern there (``saved_nm`` in report.json).

    Raises:
        PruningError: a pruned layer is missing from the files or breaks the pattern (a bug: never reported as
            a success).
    """
    opts = recipe.prune.options
    if opts.granularity != "nm":
        return {}
    from safetensors.torch import load_file

    saved: dict[str, torch.Tensor] = {}
    files = sorted(directory.rglob("*.safetensors"))
    for f in files:
        saved.update(load_file(str(f)))
    nm = tuple(opts.nm or (2, 4))
    pruned = list(outcome.report["layerwise"]["layer_sparsity"])
    found = {}
    for name in pruned:  # the saved name is the model's, or its tail (a text model's encoder is saved alone)
        hits = [k for k in saved if name == k or name.endswith("." + k)]
        if not hits:
            raise PruningError(f"the pruned weight {name!r} is in none of the saved files "
                               f"({', '.join(str(f.relative_to(directory)) for f in files)})")
        found[name] = max(hits, key=len)
    broken = [k for k in found.values() if not is_nm(saved[k], nm)]
    if broken:
        raise PruningError(f"the saved weights {broken[:3]} do not carry the {nm[0]}:{nm[1]} pattern the method "
                           f"chose: the weights were changed after pruning")
    return {"saved_nm": {"nm": list(nm), "layers_checked": len(found), "layers_nm": len(found) - len(broken),
                         "files": [str(f.relative_to(directory)) for f in files]}}


PRUNE_METHODS.register("layerwise")(PruneMethod(
    "layerwise", LayerwiseOptions, _run, _prepare, text=True, verify=verify_saved,
    summary="one-shot, every Linear layer block by block on calibration inputs: magnitude, Wanda (Sun et al. 2023) "
            "or SparseGPT (Frantar & Alistarh 2023)"))
