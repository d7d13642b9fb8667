"""The measured criterion: how much the calibration loss rises when a unit (or a weight) is removed.

Group form: S_u = L(model with unit u zeroed) − L(model) on the calibration set (Mozer & Smolensky
1989, "Skeletonization"; the oracle of Molchanov et al. 2017/2019). Exact (one evaluation per unit)
for groups of at most ``max_units`` units; for larger groups the units are zeroed in random chunks of
``chunk`` units over ``rounds`` rounds and each unit scores the mean loss rise of its chunks.

Single-weight form: S = L(w ← 0) − L, exactly, one evaluation per weight, in layers of at most
``MAX_EVALUATIONS`` live weights. In larger layers it zeroes random chunks (``ROUNDS`` random
partitions into ``MAX_EVALUATIONS`` chunks), measures each chunk's rise ΔL_C and shares it among the
chunk's weights in proportion to w²: S = mean over the weight's chunks of ΔL_C · w² / Σ_{v∈C} v² — a
sampled estimate, far weaker than the exact one (bench/results/weight_criteria.md).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from prunekit.graph import Group
from prunekit.importance._channels import MINI
from prunekit.importance.base import Importance, ScoreInputs, WeightInputs
from prunekit.importance.calibration import Calibration
from prunekit.importance.masking import zeroed

__all__ = ["CRITERIA", "MAX_EVALUATIONS", "ROUNDS", "calibration_loss"]

#: single-weight form: exact per weight up to this many live weights per layer, at most this many chunks beyond
MAX_EVALUATIONS = 256
ROUNDS = 2


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


def _group(inputs: ScoreInputs, group: Group) -> np.ndarray:
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
        perm = torch.randperm(group.size, generator=inputs.generator).numpy()
        for s in range(0, group.size, chunk):
            idx = perm[s:s + chunk]
            with zeroed(graph, {group.name: idx}):
                scores[idx] += calibration_loss(graph.model, cal) - base
            hits[idx] += 1
    return scores / np.maximum(hits, 1)


def _loss_chunks(w: torch.Tensor, gen: torch.Generator) -> tuple[list[torch.Tensor], bool]:
    """Flat indices zeroed together: each live weight alone (exact) if there are at most
    ``MAX_EVALUATIONS``, else ``ROUNDS`` random partitions into ``MAX_EVALUATIONS`` chunks."""
    alive = torch.nonzero(w.reshape(-1).cpu() != 0).flatten()  # zeroing a pruned weight changes nothing
    if len(alive) <= MAX_EVALUATIONS:
        return list(alive.split(1)), True
    return [c for _ in range(ROUNDS)
            for c in alive[torch.randperm(len(alive), generator=gen)].tensor_split(MAX_EVALUATIONS)], False


@torch.no_grad()
def _weight(w: WeightInputs) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(w.seed)  # its own stream: the scores do not depend on earlier draws
    cal = Calibration(w.batch[0], w.batch[1], MINI)
    out = {}
    base = calibration_loss(w.model, cal)
    for n, p in w.params().items():
        flat = p.data.view(-1)
        scores = torch.zeros(flat.numel())
        chunks, exact = _loss_chunks(p.data, gen)
        for idx in chunks:
            on = idx.to(flat.device)
            saved = flat[on].clone()
            flat[on] = 0
            try:
                rise = calibration_loss(w.model, cal) - base
            finally:
                flat[on] = saved
            share = saved.float().cpu().pow(2)  # a chunk's rise shared in proportion to w²
            scores[idx] += rise if exact else rise * share / share.sum().clamp_min(1e-12) / ROUNDS
        out[n] = scores.reshape(p.shape)
    return out


CRITERIA = [
    Importance("loss_change", frozenset({"data", "labels", "loss"}), _group, _weight,
               "Measured loss rise when removed (Mozer & Smolensky 1989): group S_u = L(u zeroed) − L, exact up to "
               "max_units units, sampled in chunks beyond; weight L(w ← 0) − L, exact up to "
               f"{MAX_EVALUATIONS} live weights per layer, sampled beyond."),
]
