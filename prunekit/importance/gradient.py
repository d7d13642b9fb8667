"""Criteria from loss gradients on calibration data, and the saliencies of pruning at initialisation.

Notation: w a weight, g_b = ∂L_b/∂w on calibration mini-batch b (B mini-batches).

=============  ====================================================  ===============================================
name           group form (per unit, per member)                     single-weight form
=============  ====================================================  ===============================================
gradient       (1/B) Σ_b mean_{s∈u} |g_{b,s}|                         (1/B) Σ_b |g_b|   (seed 000; Mozer 1989)
taylor         (1/B) Σ_b (Σ_{s∈u} g_{b,s} w_s)²  (Molchanov 2019)    (1/B) Σ_b (g_b w)²  (the same, a unit of one)
mask_gradient  (1/B) Σ_b |Σ_{s∈u} g_{b,s} w_s|, readers (Michel)     (1/B) Σ_b |g_b w|
hessian        Σ_{s∈u} ½ F_s w_s², F = (1/B) Σ_b g_b²  (OBD, 1990)   ½ F w²
snip           —                                                     |w ⊙ ∂L/∂w| on one batch (Lee et al. 2019)
synflow        —                                                     |w ⊙ ∂R/∂w|, R = 1ᵀ∏|θ_l|1 (Tanaka et al. 2020)
=============  ====================================================  ===============================================

For a single weight ``taylor`` and ``hessian`` rank alike (both are proportional to w² · (1/B) Σ_b g_b²:
OBD with the empirical Fisher is the squared first-order term); for groups they differ.

The group forms read :class:`~prunekit.importance.CalibrationStats` (one pass over the
:class:`~prunekit.importance.Calibration`'s batches); the single-weight forms make their own pass over
the calibration batch in mini-batches of 128 (eval mode, BatchNorm statistics untouched). ``snip`` and
``synflow`` score an untrained model (``at_init``); SynFlow is data-free (only the input shape) and
meant to be applied iteratively (100 rounds, exponential schedule) to avoid layer collapse.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.graph import Group, Member
from prunekit.importance._channels import MINI
from prunekit.importance.base import Importance, MemberScores, ScoreInputs, WeightInputs, per_member
from prunekit.importance.calibration import consumers

__all__ = ["CRITERIA", "snip_gradients", "synflow_gradients"]

Batch = tuple[torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------- group forms
def _stat(inputs: ScoreInputs, name: str, table: str) -> torch.Tensor | None:
    assert inputs.stats is not None, "the scorer computes stats for criteria that need gradients"
    return getattr(inputs.stats, table).get(name)


def _gradient_group(inputs: ScoreInputs, group: Group) -> MemberScores:
    b = inputs.stats.batches

    def fn(m: Member, t: torch.Tensor):
        g = _stat(inputs, m.name, "grad_abs")
        return None if g is None else g / b

    return per_member(inputs, group, fn)


def _taylor_group(inputs: ScoreInputs, group: Group) -> MemberScores:
    b = inputs.stats.batches
    keys = {(m.name, m.dim) for m in group.members}
    return {k: v / b for k, v in inputs.stats.taylor.items() if k in keys}


def _mask_gradient_group(inputs: ScoreInputs, group: Group) -> MemberScores:
    """|∂L/∂ξ_u| of a mask ξ on each unit's output: the input columns of the layers reading the group
    (attention's output projection for a head, the FFN's second Linear for a neuron)."""
    b = inputs.stats.batches
    readers = {(m.name, m.dim) for m, _ in consumers(inputs.graph, list(group.members))}
    keys = readers or {(m.name, m.dim) for m in group.members}  # nothing reads it through a weight: its producers
    out = {k: v / b for k, v in inputs.stats.gate.items() if k in keys}
    # no gradient reached the group (a pooler the loss never reads): a mask on it cannot change the loss
    return out or np.zeros(group.size)


def _hessian_group(inputs: ScoreInputs, group: Group) -> MemberScores:
    b = inputs.stats.batches

    def fn(m: Member, t: torch.Tensor):
        g2 = _stat(inputs, m.name, "grad_sq")
        return None if g2 is None else 0.5 * g2 / b * t.detach().float().pow(2)

    return per_member(inputs, group, fn, mean=False)


# ----------------------------------------------------------------------------- single-weight forms
_TRANSFORMS = {"abs": torch.abs, "sq": torch.square}


def mean_gradient_stat(model: nn.Module, names: list[str], batch: Batch, stat: str) -> dict[str, torch.Tensor]:
    """Per weight, the mean of ``|g_b|`` (``abs``) or ``g_b²`` (``sq``) over the
    mini-batches of ``batch`` (eval mode; the model's gradients are not touched)."""
    x, y = batch
    transform = _TRANSFORMS[stat]
    params = dict(model.named_parameters())
    acc = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in names}
    was = model.training
    model.eval()
    b = 0
    try:
        device = params[names[0]].device
        for s in range(0, len(x), MINI):
            loss = F.cross_entropy(model(x[s:s + MINI].to(device)), y[s:s + MINI].to(device))
            for n, g in zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True):
                acc[n] += transform(g).float()
            b += 1
    finally:
        model.train(was)
    return {n: a / b for n, a in acc.items()}


def _gradient_weight(w: WeightInputs) -> dict[str, torch.Tensor]:
    return mean_gradient_stat(w.model, w.names, w.batch, "abs")


def _taylor_weight(w: WeightInputs) -> dict[str, torch.Tensor]:
    f = mean_gradient_stat(w.model, w.names, w.batch, "sq")
    return {n: f[n] * p.detach().pow(2) for n, p in w.params().items()}


def _mask_gradient_weight(w: WeightInputs) -> dict[str, torch.Tensor]:
    g = mean_gradient_stat(w.model, w.names, w.batch, "abs")
    return {n: g[n] * p.detach().abs() for n, p in w.params().items()}


def _hessian_weight(w: WeightInputs) -> dict[str, torch.Tensor]:
    f = mean_gradient_stat(w.model, w.names, w.batch, "sq")
    return {n: 0.5 * f[n] * p.detach().pow(2) for n, p in w.params().items()}


def snip_gradients(model: nn.Module, names: list[str], batch: Batch) -> dict[str, torch.Tensor]:
    """∂L/∂θ of the cross-entropy on ``batch`` (train mode, as at initialisation) for the parameters
    ``names``; the model is unchanged (BatchNorm statistics restored, no ``.grad`` left behind)."""
    x, y = batch
    params = dict(model.named_parameters())
    buffers = {n: b.clone() for n, b in model.named_buffers()}  # a train-mode forward moves BN statistics
    was = model.training
    model.train()
    try:
        device = params[names[0]].device
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        grads = torch.autograd.grad(loss, [params[n] for n in names])
    finally:
        model.train(was)
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
    return {n: g.detach() for n, g in zip(names, grads, strict=True)}


def synflow_gradients(model: nn.Module, names: list[str], batch: Batch) -> dict[str, torch.Tensor]:
    """∂R/∂θ of the synaptic-flow objective on a float64 copy with |θ| (the model is unchanged).

    Masked (zero) weights stay zero in the copy, so earlier pruning rounds are respected.
    """
    x, _ = batch
    twin = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in list(twin.parameters()) + list(twin.buffers()):
            if t.is_floating_point():
                t.abs_()
    params = dict(twin.named_parameters())
    ones = torch.ones((1, *x.shape[1:]), dtype=torch.float64, device=params[names[0]].device)
    out = twin(ones).sum()
    grads = torch.autograd.grad(out, [params[n] for n in names])
    return {n: g.detach().float() for n, g in zip(names, grads, strict=True)}


def _grad_times_weight(gradients):
    def weight(w: WeightInputs) -> dict[str, torch.Tensor]:
        g = gradients(w.model, w.names, w.batch)
        return {n: (g[n].detach() * p.detach()).abs() for n, p in w.params().items()}

    return weight


GRAD = frozenset({"weights", "data", "labels", "gradients"})
CRITERIA = [
    Importance("gradient", GRAD, _gradient_group, _gradient_weight,
               "Accumulated gradient magnitude over the calibration set (seed 000; cf. Mozer & Smolensky 1989): "
               "group (1/B) Σ_b mean_{s∈u} |∂L_b/∂w_s|; weight (1/B) Σ_b |∂L_b/∂w|."),
    Importance("taylor", GRAD, _taylor_group, _taylor_weight,
               "First-order Taylor expansion of the loss change, squared per mini-batch (Molchanov et al. 2019, "
               "'Importance Estimation for Neural Network Pruning'): group (1/B) Σ_b (Σ_{s∈u} g_{b,s} w_s)²; weight "
               "(1/B) Σ_b (g_b w)², the same formula for a unit of one weight."),
    Importance("mask_gradient", GRAD, _mask_gradient_group, _mask_gradient_weight,
               "Gradient of the loss w.r.t. a mask ξ_u on the unit's output, accumulated in absolute value over "
               "mini-batches (Michel et al. 2019, 'Are Sixteen Heads Really Better than One?', head importance "
               "E|∂L/∂ξ_h|): group (1/B) Σ_b |Σ_{s∈u} g_{b,s} w_s| over the input columns of the layers reading "
               "the unit (a head's output-projection columns, an FFN neuron's output weights); weight "
               "(1/B) Σ_b |g_b w|, the same for a unit of one weight."),
    Importance("hessian", GRAD, _hessian_group, _hessian_weight,
               "Optimal Brain Damage (LeCun et al. 1990) with the empirical-Fisher Hessian diagonal "
               "F = (1/B) Σ_b g_b²: group Σ_{s∈u} ½ F_s w_s²; weight ½ F w²."),
    Importance("snip", GRAD | {"at_init"}, None, _grad_times_weight(snip_gradients),
               "Connection sensitivity |θ ⊙ ∂L/∂θ| on a calibration batch, at initialisation (Lee et al. 2019, "
               "'SNIP: single-shot network pruning based on connection sensitivity')."),
    Importance("synflow", frozenset({"weights", "example_inputs", "at_init"}), None,
               _grad_times_weight(synflow_gradients),
               "Synaptic flow |θ ⊙ ∂R/∂θ|, R = 1ᵀ∏|θ_l|1 on an all-ones input, data-free, at initialisation "
               "(Tanaka et al. 2020)."),
]
