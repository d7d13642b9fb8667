"""Criteria that need the model, not only the weight: saliency at initialisation (below), gradient
statistics of a trained model, and the single-weight forms of the channel criteria
(:mod:`prunekit.criteria.channel`).

At initialisation, ``snip`` and ``synflow`` both score a weight by |θ ⊙ ∂R/∂θ| but differ in the objective R:

- ``snip`` (Lee et al. 2019, "SNIP: single-shot network pruning based on connection sensitivity"):
  R = the loss on a calibration batch, so S(θ) = |θ ⊙ ∂L/∂θ| (normalisation by ΣS does not change the
  ranking). Needs labelled data.
- ``synflow`` (Tanaka et al. 2020, "Pruning neural networks without any data by iteratively
  conserving synaptic flow"): R = 1ᵀ(∏_l |θ_l|)1, the network's output summed for an all-ones input
  with every parameter replaced by its absolute value (computed in float64, eval mode), so
  S(θ) = |θ ⊙ ∂R/∂θ|. Data-free (only the input shape), and meant to be applied iteratively
  (100 rounds with an exponential schedule) to avoid layer collapse.

Each criterion is a :class:`~prunekit.criteria.Criterion` in ``SALIENCY_CRITERIA`` whose
``gradients`` computes ∂R/∂θ for the pruned parameters; the pruner then calls ``score`` with the
gradient in the :class:`~prunekit.criteria.ScoreContext`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.criteria.channel import CHANNEL_SCORES, MAX_EVALUATIONS
from prunekit.criteria.weight import WEIGHT_CRITERIA, Criterion, ScoreContext
from prunekit.errors import ConfigError
from prunekit.registry import Registry

__all__ = ["MODEL_PASSES", "SALIENCY_CRITERIA", "get_criterion", "criterion_names", "snip_gradients",
           "synflow_gradients"]

SALIENCY_CRITERIA: Registry = Registry("criterion")

Batch = tuple[torch.Tensor, torch.Tensor]


def _grad_times_weight(ctx: ScoreContext) -> torch.Tensor:
    if ctx.stat is None:
        raise ConfigError(f"criterion needs the gradient of {ctx.name!r}; the pruner computes it from "
                          "a calibration batch: pass calibration=(x, y) to the pruner")
    return (ctx.stat.detach() * ctx.param.detach()).abs()


def snip_gradients(model: nn.Module, names: list[str], batch: Batch) -> dict[str, torch.Tensor]:
    """∂L/∂θ of the cross-entropy on ``batch`` for the parameters ``names`` (the model is unchanged)."""
    x, y = batch
    params = dict(model.named_parameters())
    was = model.training
    model.train()
    try:
        model.zero_grad(set_to_none=True)
        device = params[names[0]].device
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        grads = torch.autograd.grad(loss, [params[n] for n in names])
    finally:
        model.train(was)
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


SALIENCY_CRITERIA.register("snip")(Criterion(
    "snip", _grad_times_weight, frozenset({"gradients", "data"}),
    "Connection sensitivity |θ ⊙ ∂L/∂θ| on a calibration batch (Lee et al. 2019).", at_init=True))
SALIENCY_CRITERIA.register("synflow")(Criterion(
    "synflow", _grad_times_weight, frozenset({"gradients", "input_shape"}),
    "Synaptic flow |θ ⊙ ∂R/∂θ|, R = 1ᵀ∏|θ_l|1, data-free (Tanaka et al. 2020).", at_init=True))


# ----------------------------------------------------------------------------- trained-model criteria
# The single-weight forms of prunekit.importance's gradient criteria, for pruning a trained model at
# any schedule. One pass over the calibration batch in mini-batches of _MINI (eval mode, BatchNorm
# statistics untouched) accumulates per weight the statistic its criterion scores with: mean |g_b|
# (gradient), mean g_b (taylor) or mean g_b² (hessian) over the B mini-batches.
_MINI = 128
_STATS = {"abs": torch.abs, "mean": lambda g: g, "sq": torch.square}


def _stat_gradients(stat: str):
    """``gradients(model, names, batch)`` returning the per-weight mean of ``_STATS[stat](g_b)`` over the
    mini-batches of ``batch``. (``prunekit.importance.collect_stats`` does the same per group, but needs a
    traced graph; single weights do not.)"""
    transform = _STATS[stat]

    def gradients(model: nn.Module, names: list[str], batch: Batch) -> dict[str, torch.Tensor]:
        x, y = batch
        params = dict(model.named_parameters())
        acc = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in names}
        was = model.training
        model.eval()
        b = 0
        try:
            device = params[names[0]].device
            for s in range(0, len(x), _MINI):
                loss = F.cross_entropy(model(x[s:s + _MINI].to(device)), y[s:s + _MINI].to(device))
                for n, g in zip(names, torch.autograd.grad(loss, [params[n] for n in names]), strict=True):
                    acc[n] += transform(g).float()
                b += 1
        finally:
            model.train(was)
        return {n: a / b for n, a in acc.items()}

    return gradients


def _need(ctx: ScoreContext) -> torch.Tensor:
    if ctx.stat is None:
        raise ConfigError(f"criterion needs statistics of {ctx.name!r} that the pruner computes from "
                          "a calibration batch: pass calibration=(x, y) to the pruner")
    return ctx.stat.detach()


SALIENCY_CRITERIA.register("gradient")(Criterion(
    "gradient", _need, frozenset({"gradients", "data"}),
    "Accumulated gradient magnitude (1/B) Σ_b |∂L_b/∂w| over the calibration batch (seed 000)."))
SALIENCY_CRITERIA.register("taylor")(Criterion(
    "taylor", lambda ctx: (_need(ctx) * ctx.param.detach()).abs(), frozenset({"gradients", "data"}),
    "First-order Taylor |ḡ·w|, ḡ the mean loss gradient over the calibration batch (Molchanov et al. 2019)."))
SALIENCY_CRITERIA.register("hessian")(Criterion(
    "hessian", lambda ctx: 0.5 * _need(ctx) * ctx.param.detach().pow(2), frozenset({"gradients", "data"}),
    "Optimal Brain Damage ½·F·w², F = (1/B) Σ_b g_b² the empirical-Fisher Hessian diagonal "
    "(LeCun et al. 1990)."))


def _channel(name: str, doc: str, needs: tuple[str, ...]) -> None:
    SALIENCY_CRITERIA.register(name)(Criterion(name, _need, frozenset(needs), doc))


_channel("apoz", "|w|·(1 − APoZ_i), APoZ_i the zero fraction of the weight's input channel (Hu et al. 2016).",
         ("data", "activations"))
_channel("mean_activation", "|w|·mean|a_i| over the weight's input channel (Wanda, Sun et al. 2024; "
         "Molchanov et al. 2017).", ("data", "activations"))
_channel("mi", "|w|·I(A_i; Y), the input channel's mutual information with the labels (Ganesh et al. 2020).",
         ("data", "labels", "activations"))
_channel("bn_scale", "|w|·|γ_o|/√(σ²_o+ε): the BN-folded magnitude (network slimming, Liu et al. 2017).",
         ("input_shape",))
_channel("fpgm", "|w|·D_o/mean D, D_o the filter's distance sum to the other filters (He et al. 2019).", ())
_channel("loss_change", "Measured loss rise L(w←0) − L on the calibration set; exact up to "
         f"{MAX_EVALUATIONS} weights per layer, sampled in chunks beyond (Mozer & Smolensky 1989).",
         ("data", "labels"))

#: What each model-level criterion computes from the model and the calibration batch before scoring
#: (``fn(model, names, batch) -> {name: tensor}``, passed as ``ScoreContext.stat``): ∂R/∂θ for snip
#: and synflow, a per-weight gradient statistic for gradient, taylor and hessian, the scores
#: themselves for the channel criteria of :mod:`prunekit.criteria.channel`.
MODEL_PASSES = {"snip": snip_gradients, "synflow": synflow_gradients, "gradient": _stat_gradients("abs"),
                "taylor": _stat_gradients("mean"), "hessian": _stat_gradients("sq"), **CHANNEL_SCORES}


def criterion_names() -> list[str]:
    """Every criterion name a pruner accepts, sorted."""
    return sorted([*WEIGHT_CRITERIA.names(), *SALIENCY_CRITERIA.names()])


def get_criterion(name: str) -> Criterion:
    """Looks ``name`` up in ``WEIGHT_CRITERIA`` and ``SALIENCY_CRITERIA``."""
    if name in SALIENCY_CRITERIA:
        return SALIENCY_CRITERIA.get(name)
    if name in WEIGHT_CRITERIA:
        return WEIGHT_CRITERIA.get(name)
    raise ConfigError(f"unknown criterion {name!r}; choose one of: {', '.join(criterion_names())}")
