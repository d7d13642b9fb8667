"""Method ``transformer``: remove attention heads and FFN neurons of a text encoder (``model: hf:PATH``).

The encoder loses the same fraction of units in every layer (``allocation: uniform``; ``sparsity: 0.5`` takes
BERT's 12 heads to 6 and its FFN neurons to half) or one ranking per kind of unit over all layers
(``global``). ``sparsity`` may give a fraction per kind (``{heads: 0.5, channels: 0.25}``) where the library
supports it; ``heads_kept: 6`` says the same as a head fraction, checked against the model before training.
The units are scored with a group criterion of :mod:`prunekit.importance` (data-driven ones on
``calibration_samples`` training texts) and removed physically through :func:`prunekit.prune_`; the recover stage
then fine-tunes or distils.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from prunekit.api import prune_
from prunekit.errors import ConfigError
from prunekit.importance import Calibration, get
from prunekit.pipeline.methods._engine import check_importance
from prunekit.pipeline.methods.base import PRUNE_METHODS, PruneContext, PruneMethod, PruneOutcome, PrunePlan
from prunekit.pruners import StructuredConfig

__all__ = ["TransformerOptions"]


@dataclass(frozen=True)
class TransformerOptions:
    """What to remove from a text encoder.

    Attributes:
        sparsity: the fraction of units REMOVED (heads and FFN neurons alike), or one per kind of unit.
        heads_kept: heads every attention layer keeps (e.g. 6 of 12), instead of a head fraction.
        importance: group criterion (``l2``, ``l1``, ``taylor``, …).
        allocation: ``uniform`` (every layer alike) or ``global`` (one ranking per kind over all layers).
        calibration_samples: training texts a data-driven criterion scores with.
    """

    sparsity: float | dict[str, float] = 0.5
    heads_kept: int | None = None
    importance: str = "l2"
    allocation: str = "uniform"
    calibration_samples: int = 256

    def __post_init__(self) -> None:
        check_importance(self.importance, "group")
        if self.allocation not in ("uniform", "global"):
            raise ConfigError(f"unknown allocation {self.allocation!r} for method transformer; choose one of: "
                              "global, uniform")
        if self.heads_kept is not None and self.heads_kept < 1:
            raise ConfigError(f"heads_kept must be ≥ 1 (an attention layer keeps at least one head), got "
                              f"{self.heads_kept}")
        if self.heads_kept is None:
            self.config(1)  # the fractions themselves (heads_kept is checked on the model, before training)

    def config(self, num_heads: int, exclude: tuple[str, ...] = ()) -> StructuredConfig:
        sparsity: Any = self.sparsity
        if self.heads_kept is not None:
            if self.heads_kept > num_heads:
                raise ConfigError(f"heads_kept {self.heads_kept} is more heads than a layer of this model has "
                                  f"({num_heads}): set prune.heads_kept ≤ {num_heads - 1}")
            heads = 1 - self.heads_kept / num_heads
            channels = sparsity if not isinstance(sparsity, dict) else sparsity.get("channels", 0.0)
            sparsity = heads if abs(heads - channels) < 1e-9 else {"heads": heads, "channels": channels}
        if isinstance(sparsity, (int, float)) and not 0 <= sparsity < 1:
            raise ConfigError(f"prune.sparsity must be a fraction in [0, 1) of the units removed, got {sparsity}")
        return StructuredConfig(sparsity=sparsity, importance=self.importance, allocation=self.allocation,
                                exclude=exclude)


def _num_heads(model: Any, uniform: bool = False) -> int:
    """Heads per attention layer, read from the layers (a model saved pruned and loaded back by prunekit has fewer
    heads than its config says, and maybe other counts per layer: then a head count to keep is refused)."""
    config = getattr(getattr(model, "encoder", model), "config", None)
    heads = getattr(config, "num_attention_heads", None)
    if not isinstance(heads, int):
        raise ConfigError("prune.method transformer needs a text encoder (model: hf:PATH) whose config names "
                          "num_attention_heads")
    layers = sorted({m.num_attention_heads for m in model.modules()
                     if isinstance(getattr(m, "num_attention_heads", None), int) and hasattr(m, "query")})
    if len(layers) > 1 and uniform:
        raise ConfigError(f"prune.heads_kept keeps the same number of heads in every layer, but this model's layers "
                          f"have {', '.join(map(str, layers))} heads: give prune.sparsity: {{heads: FRACTION}}")
    return layers[0] if len(layers) == 1 else heads


def _prepare(recipe: Any, model: Any, data: Any) -> PrunePlan:
    opts = recipe.prune.options
    opts.config(_num_heads(model, opts.heads_kept is not None))  # too many heads etc. fail before training
    return PrunePlan()


def _calibration(ctx: PruneContext, n: int) -> Calibration:
    state = ctx.plan.state["text"]
    gen = torch.Generator().manual_seed(ctx.recipe.seed)
    idx = torch.randperm(len(state.train), generator=gen)[:n].tolist()
    batch = state.train.collate(idx)
    labels = ctx.data.train.labels[idx] if ctx.data.kind == "classification" else None
    return Calibration(batch["input_ids"], labels, batch_size=32, attention_mask=batch["attention_mask"],
                       token_type_ids=batch.get("token_type_ids"))


def _run(ctx: PruneContext) -> PruneOutcome:
    opts: TransformerOptions = ctx.recipe.prune.options
    config = opts.config(_num_heads(ctx.model, opts.heads_kept is not None), ctx.model.kept_whole())
    state = ctx.plan.state["text"]
    example = state.example
    cal = None
    if get(opts.importance).needs_data:
        if ctx.model.head is None and "labels" in get(opts.importance).needs:
            raise ConfigError(f"criterion {opts.importance!r} needs labels, but text.task is embedding: choose a "
                              "data-free criterion (l1, l2)")
        cal = _calibration(ctx, opts.calibration_samples)
    ctx.model.eval()
    result = prune_(ctx.model, config, example_inputs=example, calibration=cal)
    report = {"allocation": {"removed": result.removed, "layer_sparsity": result.layer_sparsity,
                             "seconds": result.seconds}}
    return PruneOutcome(recovered=False, report=report)


PRUNE_METHODS.register("transformer")(PruneMethod(
    "transformer", TransformerOptions, _run, prepare=_prepare, kind="structured", text=True,
    summary="remove attention heads and FFN neurons of a text encoder (hf:PATH), uniformly or ranked globally"))
