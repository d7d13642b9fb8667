"""The measured criterion: how much the calibration loss rises when a unit is removed.

S_u = L(model with unit u zeroed) − L(model), on the calibration set (Mozer & Smolensky 1989,
"Skeletonization"; the oracle of Molchanov et al. 2017/2019). Exact (one evaluation per unit) for
groups of at most ``max_units`` units; for larger groups the units are zeroed in random chunks of
``chunk`` units over ``rounds`` rounds and each unit scores the mean loss rise of its chunks (a
sampled estimate that costs ``rounds · size / chunk`` evaluations).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from prunekit.graph import Group
from prunekit.importance.calibration import Calibration
from prunekit.importance.criteria import IMPORTANCE, Importance, ScoreInputs
from prunekit.importance.masking import zeroed

__all__ = ["calibration_loss", "loss_change"]


@torch.no_grad()
def calibration_loss(model: torch.nn.Module, calibration: Calibration) -> float:
    """Mean cross-entropy of ``model`` (eval mode) on the calibration set."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    total = 0.0
    try:
        for xb, yb in calibration.batches():
            total += float(F.cross_entropy(model(xb.to(device)), yb.to(device), reduction="sum"))
    finally:
        model.train(was)
    return total / len(calibration.x)


def loss_change(inputs: ScoreInputs, group: Group) -> np.ndarray:
    """Measured loss change when one unit is removed (see the module docstring)."""
    graph, cal = inputs.graph, inputs.calibration
    base = inputs.options.get("_base_loss")
    if base is None:
        base = inputs.options["_base_loss"] = calibration_loss(graph.model, cal)
    max_units = int(inputs.options.get("max_units", 128))
    scores = np.zeros(group.size)
    if group.size <= max_units:
        for u in range(group.size):
            with zeroed(graph, {group.name: [u]}):
                scores[u] = calibration_loss(graph.model, cal) - base
        return scores
    chunk = int(inputs.options.get("chunk", 4))
    hits = np.zeros(group.size)
    for _ in range(int(inputs.options.get("rounds", 2))):
        perm = inputs.generator.permutation(group.size)
        for s in range(0, group.size, chunk):
            idx = perm[s:s + chunk]
            with zeroed(graph, {group.name: idx}):
                scores[idx] += calibration_loss(graph.model, cal) - base
            hits[idx] += 1
    return scores / np.maximum(hits, 1)


IMPORTANCE.register("loss_change")(Importance(
    "loss_change", loss_change, frozenset({"data", "labels"}), None, (loss_change.__doc__ or "") +
    " " + (__doc__ or "").split("\n\n")[1].strip()))
