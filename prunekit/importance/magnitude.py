"""Criteria read from the weights alone: magnitude, the random control, geometric median, norm scales.

=============  ==========================================  ================================================
name           group form (per unit, per member)           single-weight form
=============  ==========================================  ================================================
l1             mean |w| over the unit's entries            |w|        (Han et al. 2015; Li et al. 2017)
l2             √(mean w²) over the unit's entries          w²         (ranks weights as |w| does)
random         U(0, 1) per unit                            U(0, 1) per weight (one seeded torch RNG)
fpgm           D_u = Σ_v ‖W_u − W_v‖₂ (He et al. 2019)     |w| · D_o / mean D of the output channel o
bn_scale       |γ_u| of the unit's norm layer (Liu 2017)   —
bn_folded      —                                           |w|·|γ_o|/√(σ²_o+ε): the BN-folded magnitude
=============  ==========================================  ================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import torch

from prunekit.errors import ConfigError
from prunekit.graph import Group
from prunekit.importance._channels import channel_index, is_norm_scale, norms_after, owner, scaled
from prunekit.importance.base import Importance, MemberScores, ScoreInputs, WeightInputs, slices

__all__ = ["CRITERIA", "shared_reductions"]

_SHARED: dict[tuple[str, str], torch.Tensor] | None = None


@contextmanager
def shared_reductions() -> Iterator[None]:
    """Inside the block, each weight is mapped and summed over its kernel once for every group reading it.

    A conv weight belongs to two groups (its filters and its input channels); both magnitude scores
    start from the same (out, in) matrix of kernel sums. Weights must not change inside the block.
    """
    global _SHARED
    outer, _SHARED = _SHARED, {} if _SHARED is None else _SHARED
    try:
        yield
    finally:
        _SHARED = outer


_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"abs": torch.abs, "square": torch.square}


def _sum_except(t: torch.Tensor, d: int, kind: str, name: str) -> torch.Tensor:
    """Sum of ``|t|`` (``kind="abs"``) or ``t**2`` (``"square"``) over every dim but ``d``."""
    t = t.detach().float()
    if t.ndim == 1:
        return _MAPS[kind](t)
    if d > 1:
        return _MAPS[kind](t).sum(tuple(i for i in range(t.ndim) if i != d))
    key = (name, kind)
    per = _SHARED.get(key) if _SHARED is not None else None
    if per is None:
        # kernel dims first (a contiguous reduction), then rows or columns of the small (out, in) matrix:
        # reducing a 3x3 conv weight over (0, 2, 3) directly is ~2x slower
        per = _MAPS[kind](t)
        if t.ndim > 2:
            per = per.reshape(t.shape[0], t.shape[1], -1)
            per = per.sum(2) if per.shape[2] > 1 else per[:, :, 0]
        if _SHARED is not None:
            _SHARED[key] = per
    return per.sum(1 - d)


def _mean_per_unit(inputs: ScoreInputs, group: Group, kind: str) -> MemberScores:
    out: MemberScores = {}
    for m in group.members:
        if m.name in inputs.graph.buffers:
            continue
        t = inputs.graph.tensors[m.name]
        per_pos = _sum_except(t, m.dim, kind, m.name).cpu().numpy().astype(np.float64)
        total = np.bincount(m.unit, weights=per_pos, minlength=group.size)
        count = np.bincount(m.unit, minlength=group.size) * (t.numel() // max(t.shape[m.dim], 1))
        out[(m.name, m.dim)] = total / np.maximum(count, 1)
    return out


def _l1_group(inputs: ScoreInputs, group: Group) -> MemberScores:
    return _mean_per_unit(inputs, group, "abs")


def _l2_group(inputs: ScoreInputs, group: Group) -> MemberScores:
    return {k: np.sqrt(v) for k, v in _mean_per_unit(inputs, group, "square").items()}


def _l1_weight(w: WeightInputs) -> dict[str, torch.Tensor]:
    return {n: p.detach().abs() for n, p in w.params().items()}


def _l2_weight(w: WeightInputs) -> dict[str, torch.Tensor]:
    return {n: p.detach().pow(2) for n, p in w.params().items()}


def _random_group(inputs: ScoreInputs, group: Group) -> np.ndarray:
    return torch.rand(group.size, generator=inputs.generator, dtype=torch.float64).numpy()


def _random_weight(w: WeightInputs) -> dict[str, torch.Tensor]:
    return {n: torch.rand(p.shape, generator=w.generator).to(p.device) for n, p in w.params().items()}


def _unit_vectors(rows: np.ndarray, unit: np.ndarray, size: int) -> np.ndarray:
    counts = np.bincount(unit, minlength=size)
    if counts.min() == counts.max():  # equal positions per unit: concatenate them
        order = np.argsort(unit, kind="stable")
        return rows[order].reshape(size, -1)
    out = np.zeros((size, rows.shape[1]))
    np.add.at(out, unit, rows)
    return out


def _fpgm_group(inputs: ScoreInputs, group: Group) -> MemberScores:
    out = {}
    for m in group.members:
        if m.name in inputs.graph.buffers:
            continue
        rows, _ = slices(m, inputs.graph.tensors[m.name])
        v = _unit_vectors(rows, m.unit, group.size)
        sq = (v ** 2).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * v @ v.T, 0.0)
        out[(m.name, m.dim)] = np.sqrt(d2).sum(1)
    return out


def _fpgm_weight(w: WeightInputs) -> dict[str, torch.Tensor]:
    factors = {}
    for n, p in w.params().items():
        t = p.detach().float()
        out_c, _ = channel_index(owner(w.model, n), t.shape)
        order = torch.argsort(out_c.reshape(-1), stable=True)
        filters = t.reshape(-1)[order.to(t.device)].reshape(int(out_c.max()) + 1, -1)  # equal entries per filter
        d = torch.cdist(filters[None], filters[None])[0].sum(1)
        factors[n] = (d / d.mean().clamp_min(1e-12)).cpu()
    return scaled(w.model, w.names, factors, 0)


def _bn_scale_group(inputs: ScoreInputs, group: Group) -> MemberScores:
    g = inputs.graph
    out = {}
    for m in group.members:
        if m.name not in g.buffers and any(is_norm_scale(mod, a) for mod, a in g.owners[m.name]):
            out[(m.name, m.dim)] = np.bincount(m.unit, weights=g.tensors[m.name].detach().abs().cpu().numpy()
                                               .astype(np.float64), minlength=group.size)
    if not out:
        raise ConfigError(f"group {group.name!r} has no normalisation layer, so 'bn_scale' cannot score it; "
                          f"exclude its layers or choose another criterion (l2, fpgm, taylor)")
    return out


def _norm_factor(norm: torch.nn.Module) -> torch.Tensor:
    gamma = norm.weight.detach().abs().float()
    var = getattr(norm, "running_var", None)
    if isinstance(norm, torch.nn.modules.batchnorm._BatchNorm) and var is not None:
        return gamma / torch.sqrt(var.detach().float() + norm.eps)
    return gamma


def _bn_folded_weight(w: WeightInputs) -> dict[str, torch.Tensor]:
    norms = norms_after(w.model, w.names, w.batch[0])
    if not norms:
        raise ConfigError("criterion 'bn_folded' found no norm layer reading any pruned layer's output; "
                          "choose another criterion (l1, taylor, fpgm)")
    factors = {}
    for n, p in w.params().items():
        size = int(channel_index(owner(w.model, n), p.shape)[0].max()) + 1
        norm = norms.get(n)
        factors[n] = _norm_factor(norm) if norm is not None and norm.weight.numel() == size else torch.ones(size)
    return scaled(w.model, w.names, factors, 0)


W = frozenset({"weights"})
CRITERIA = [
    Importance("l1", W, _l1_group, _l1_weight,
               "Magnitude: group mean |w| over the unit's entries (Li et al. 2017, 'Pruning Filters for Efficient "
               "ConvNets'); weight |w| (Han et al. 2015, 'Learning both weights and connections')."),
    Importance("l2", W, _l2_group, _l2_weight,
               "Root-mean-square magnitude: group √(mean w²) over the unit's entries; weight w² (ranks single "
               "weights as l1 does)."),
    Importance("random", frozenset(), _random_group, _random_weight,
               "Uniform random scores from one torch.Generator seeded by the config's seed: the control every "
               "criterion must beat."),
    Importance("fpgm", W, _fpgm_group, _fpgm_weight,
               "Filter pruning via geometric median (He et al. 2019): group D_u = Σ_v ‖W_u − W_v‖₂ over the "
               "member's units; weight |w|·D_o/mean D of its output channel o."),
    Importance("bn_scale", W, _bn_scale_group, None,
               "Network slimming (Liu et al. 2017): group |γ_u|, the scale of the unit's normalisation layer "
               "(group form only; the single-weight BN-folded magnitude is 'bn_folded')."),
    Importance("bn_folded", frozenset({"weights", "example_inputs"}), None, _bn_folded_weight,
               "BN-folded magnitude |w|·|γ_o|/√(σ²_o+ε) of the norm layer reading the weight's output channel o "
               "(|w|·|γ_o| for other norms, |w| when none reads it); single-weight form only."),
]
