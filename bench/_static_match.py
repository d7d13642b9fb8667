"""The static baseline of the dynamic benchmarks: a copy of the dense model pruned structurally (L2 channel groups,
global allocation) to a given share of its MACs, then fine-tuned when data is given."""

from __future__ import annotations

import copy

import torch

import prunekit as pk
from prunekit.training import TrainConfig, evaluate, train


def static_at_macs(dense: torch.nn.Module, example: torch.Tensor, macs_kept: float, data=None,
                   finetune: TrainConfig | None = None, seed: int = 0) -> tuple[torch.nn.Module | None, dict]:
    """``(model, facts)``; ``model`` is None (and ``facts["error"]`` says why) when pruning refuses the budget."""
    model = copy.deepcopy(dense)
    cfg = pk.StructuredConfig(budget=pk.Budget(macs_kept=macs_kept), importance="l2", allocation="global",
                              max_ratio=0.95)
    try:
        pk.prune_(model, cfg, example_inputs=example)
    except pk.PrunekitError as e:
        return None, {"error": str(e), "macs_kept": macs_kept}
    facts: dict = {"macs_kept": macs_kept}
    if data is not None and finetune is not None:
        facts["accuracy_before_finetune"] = evaluate(model, data.x_test, data.y_test).accuracy
        train(model, data, finetune, seed=seed + 1, progress=False)
    return model.eval(), facts
