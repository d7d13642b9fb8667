"""The importance criteria, in the :data:`IMPORTANCE` registry. Higher score = more important.

Every criterion scores the units of a dependency group *per member* (one parameter slice, or one
layer reading the group's channels); :func:`prunekit.importance.score_group` normalises each
member's scores (per-layer normalisation) and reduces them over the members. Where it makes sense
a criterion also scores single weights (``weight``) for unstructured pruning.

Notation: w a weight, g_b = ∂L_b/∂w on calibration batch b (B batches), a a channel's activation
(the input of the layer that reads the channel), s ranges over the weights of one unit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph, Group, Member
from prunekit.importance.calibration import Calibration, CalibrationStats, consumers
from prunekit.registry import Registry

__all__ = ["IMPORTANCE", "Importance", "ScoreInputs", "histogram_mi", "is_norm_scale"]

MemberScores = dict[tuple[str, int], np.ndarray]


@dataclass
class ScoreInputs:
    """Everything a criterion may look at; built once per scoring call."""

    graph: DependencyGraph
    stats: CalibrationStats | None = None
    calibration: Calibration | None = None
    p: float = 2.0
    generator: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Importance:
    """One criterion: group scores (per member or per unit), optional single-weight scores.

    ``needs`` ⊆ {"data", "labels", "gradients", "activations"}: checked before anything runs.
    """

    name: str
    group: Callable[[ScoreInputs, Group], MemberScores | np.ndarray]
    needs: frozenset[str] = frozenset()
    weight: Callable[[ScoreInputs, str, torch.Tensor], torch.Tensor] | None = None
    doc: str = ""


IMPORTANCE: Registry[Importance] = Registry("criterion")


def _register(name: str, needs: tuple[str, ...] = (), weight=None):
    def wrap(fn):
        IMPORTANCE.register(name)(Importance(name, fn, frozenset(needs), weight, (fn.__doc__ or "").strip()))
        return fn

    return wrap


def _slices(graph: DependencyGraph, m: Member, t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per position along ``m.dim``: the reduced values of ``t`` → per-unit sums and weight counts."""
    rows = t.detach().float().transpose(0, m.dim).reshape(t.shape[m.dim], -1)
    return rows.cpu().numpy().astype(np.float64), np.full(rows.shape[0], rows.shape[1])


def _per_member(inputs: ScoreInputs, group: Group, fn: Callable[[Member, torch.Tensor], torch.Tensor | None],
                mean: bool = True) -> MemberScores:
    """Applies ``fn(member, tensor) -> per-position-row values`` and sums rows into units."""
    out: MemberScores = {}
    for m in group.members:
        if m.name in inputs.graph.buffers:
            continue
        vals = fn(m, inputs.graph.tensors[m.name])
        if vals is None:
            continue
        rows, n = _slices(inputs.graph, m, vals)
        total = np.zeros(group.size)
        count = np.zeros(group.size)
        np.add.at(total, m.unit, rows.sum(1))
        np.add.at(count, m.unit, n)
        out[(m.name, m.dim)] = total / np.maximum(count, 1) if mean else total
    return out


# ----------------------------------------------------------------------------- magnitude, random
@_register("lp", weight=lambda i, n, w: w.detach().abs().pow(i.p))
def lp(inputs: ScoreInputs, group: Group) -> MemberScores:
    """Lp magnitude (Li et al. 2017, "Pruning Filters for Efficient ConvNets", p = 1):
    S_unit = (Σ_s |w_s|^p / n)^(1/p) per member; ``p`` is set by ImportanceConfig.p (default 2)."""
    p = inputs.p
    scores = _per_member(inputs, group, lambda m, t: t.detach().abs().pow(p))
    return {k: v ** (1.0 / p) for k, v in scores.items()}


@_register("random", weight=lambda i, n, w: torch.from_numpy(i.generator.random(tuple(w.shape))).float())
def random(inputs: ScoreInputs, group: Group) -> np.ndarray:
    """Uniform random scores: the control every criterion must beat (seeded by ImportanceConfig.seed)."""
    return inputs.generator.random(group.size)


# ----------------------------------------------------------------------------- gradient based
def _need_grad(inputs: ScoreInputs, name: str, table: str) -> torch.Tensor | None:
    stats = inputs.stats
    assert stats is not None, "the scorer computes stats for criteria that need gradients"
    return getattr(stats, table).get(name)


@_register("gradient", ("data", "labels", "gradients"),
           weight=lambda i, n, w: _need_grad(i, n, "grad_abs") / i.stats.batches)
def gradient(inputs: ScoreInputs, group: Group) -> MemberScores:
    """Accumulated gradient magnitude over the calibration set (the gradient-sensitivity criterion of
    "seed 000"; cf. Mozer & Smolensky 1989): S_unit = (1/B) Σ_b Σ_{s∈unit} |∂L_b/∂w_s| / n."""
    b = inputs.stats.batches

    def fn(m: Member, t: torch.Tensor):
        g = _need_grad(inputs, m.name, "grad_abs")
        return None if g is None else g / b

    return _per_member(inputs, group, fn)


@_register("taylor", ("data", "labels", "gradients"),
           weight=lambda i, n, w: (_need_grad(i, n, "grad_sum") / i.stats.batches * w.detach()).abs())
def taylor(inputs: ScoreInputs, group: Group) -> MemberScores:
    """First-order Taylor expansion of the loss change (Molchanov et al. 2019, "Importance Estimation
    for Neural Network Pruning"): S_unit = (1/B) Σ_b (Σ_{s∈unit} g_{b,s} w_s)²; for one weight |ḡ w|."""
    b = inputs.stats.batches
    return {k: v / b for k, v in inputs.stats.taylor.items()
            if any((m.name, m.dim) == k for m in group.members)}


@_register("hessian", ("data", "labels", "gradients"),
           weight=lambda i, n, w: 0.5 * _need_grad(i, n, "grad_sq") / i.stats.batches * w.detach().pow(2))
def hessian(inputs: ScoreInputs, group: Group) -> MemberScores:
    """Second-order diagonal term (Optimal Brain Damage, LeCun et al. 1990; Molchanov et al. 2019),
    the Hessian diagonal approximated by the empirical Fisher F_s = (1/B) Σ_b g_{b,s}²:
    S_unit = Σ_{s∈unit} ½ F_s w_s²."""
    b = inputs.stats.batches

    def fn(m: Member, t: torch.Tensor):
        g2 = _need_grad(inputs, m.name, "grad_sq")
        return None if g2 is None else 0.5 * g2 / b * t.detach().float().pow(2)

    return _per_member(inputs, group, fn, mean=False)


# ----------------------------------------------------------------------------- activation based
def _activation(inputs: ScoreInputs, group: Group, table: str) -> MemberScores:
    stats = inputs.stats
    out = {}
    for m, _ in consumers(inputs.graph, group.members):
        key = (m.name, m.dim)
        if key in getattr(stats, table) and stats.count.get(key):
            out[key] = getattr(stats, table)[key] / stats.count[key]
    if not out:
        raise ConfigError(f"group {group.name!r}: no layer reads its channels during the calibration pass, so "
                          f"activation criteria cannot score it; exclude it or use a weight criterion (lp, fpgm)")
    return out


@_register("apoz", ("data", "activations"))
def apoz(inputs: ScoreInputs, group: Group) -> MemberScores:
    """Average Percentage of Zeros (Hu et al. 2016, "Network Trimming"): APoZ_c = mean over samples and
    positions of 1[a_c = 0]; the score is 1 − APoZ (channels that are mostly zero go first)."""
    return {k: 1.0 - v for k, v in _activation(inputs, group, "zeros").items()}


@_register("mean_activation", ("data", "activations"))
def mean_activation(inputs: ScoreInputs, group: Group) -> MemberScores:
    """Mean activation (Molchanov et al. 2017, "Pruning CNNs for resource efficient inference", §2.2):
    S_c = mean over samples and positions of |a_c|."""
    return _activation(inputs, group, "mean_abs")


def histogram_mi(feature: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """I(A; Y) in nats of one feature with integer labels, A binned into ``bins`` equal-frequency bins."""
    edges = np.unique(np.quantile(feature, np.linspace(0, 1, bins + 1)[1:-1]))
    a = np.searchsorted(edges, feature, side="right")
    joint = np.zeros((len(edges) + 1, int(labels.max()) + 1))
    np.add.at(joint, (a, labels), 1.0)
    joint /= joint.sum()
    pa, py = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ py)[nz])).sum())


@_register("mi", ("data", "labels", "activations"))
def mutual_information(inputs: ScoreInputs, group: Group) -> MemberScores:
    """Mutual information between a channel's (spatially averaged) activation and the labels, estimated
    with equal-frequency histograms on the calibration set (cf. Ganesh et al. 2020, "MINT"):
    I(A_c; Y) = Σ_{a,y} p(a, y) log p(a, y) / (p(a) p(y)), ``bins`` = 8 by default."""
    stats = inputs.stats
    bins = int(inputs.options.get("bins", 8))
    out = {}
    for m, _ in consumers(inputs.graph, group.members):
        key = (m.name, m.dim)
        if key not in stats.samples:
            continue
        feats = np.concatenate(stats.samples[key])
        out[key] = np.array([histogram_mi(feats[:, u], stats.labels, bins) for u in range(group.size)])
    if not out:
        raise ConfigError(f"group {group.name!r}: no layer reads its channels, so 'mi' cannot score it")
    return out


# ----------------------------------------------------------------------------- weight structure
def is_norm_scale(module: nn.Module, attr: str) -> bool:
    """Whether ``module.attr`` is a normalisation layer's scale γ (the one per-op fact bn_scale needs)."""
    return attr == "weight" and isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))


@_register("bn_scale")
def bn_scale(inputs: ScoreInputs, group: Group) -> MemberScores:
    """Network slimming (Liu et al. 2017, "Learning Efficient Convolutional Networks through Network
    Slimming"): S_c = |γ_c|, the scale of the normalisation layer of channel c (best after training
    with an L1 penalty on γ)."""
    g = inputs.graph
    out = {}
    for m in group.members:
        if m.name not in g.buffers and any(is_norm_scale(mod, a) for mod, a in g.owners[m.name]):
            vals = np.zeros(group.size)
            np.add.at(vals, m.unit, g.tensors[m.name].detach().abs().cpu().numpy().astype(np.float64))
            out[(m.name, m.dim)] = vals
    if not out:
        raise ConfigError(f"group {group.name!r} has no normalisation layer, so 'bn_scale' cannot score it; "
                          f"exclude its layers or choose another criterion (lp, fpgm, taylor)")
    return out


def _unit_vectors(rows: np.ndarray, unit: np.ndarray, size: int) -> np.ndarray:
    counts = np.bincount(unit, minlength=size)
    if counts.min() == counts.max():  # equal positions per unit: concatenate them
        order = np.argsort(unit, kind="stable")
        return rows[order].reshape(size, -1)
    out = np.zeros((size, rows.shape[1]))
    np.add.at(out, unit, rows)
    return out


@_register("fpgm")
def fpgm(inputs: ScoreInputs, group: Group) -> MemberScores:
    """Filter pruning via geometric median (He et al. 2019, CVPR): units near the geometric median of
    their layer are replaceable by the others. S_i = Σ_j ‖W_i − W_j‖₂ over the units j of the member."""
    out = {}
    for m in group.members:
        if m.name in inputs.graph.buffers:
            continue
        rows, _ = _slices(inputs.graph, m, inputs.graph.tensors[m.name])
        v = _unit_vectors(rows, m.unit, group.size)
        sq = (v ** 2).sum(1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * v @ v.T, 0.0)
        out[(m.name, m.dim)] = np.sqrt(d2).sum(1)
    return out
