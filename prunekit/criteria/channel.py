"""Single-weight forms of the criteria defined on channels (apoz, mean_activation, mi, bn_scale, fpgm)
and the measured loss change of single weights (loss_change).

A weight w_{o,i,·} of a Linear or Conv layer reads input channel i and writes output channel o. A
channel criterion says how useful a whole channel is; its single-weight form scales the weight's
magnitude by the factor of the channel the weight depends on:

- activation criteria, on the input channel i the weight reads (statistics over the calibration set,
  all samples and positions):

  - ``apoz``: S = |w| · (1 − APoZ_i), APoZ_i the fraction of exact zeros of a_i (Hu et al. 2016): a
    weight whose input is almost always zero contributes almost nothing;
  - ``mean_activation``: S = |w| · mean|a_i|, the expected size of the weight's contribution
    (Wanda, Sun et al. 2024, "A Simple and Effective Pruning Approach for LLMs", which uses ‖a_i‖₂);
  - ``mi``: S = |w| · I(A_i; Y), the mutual information of the input's per-sample mean with the labels
    (equal-frequency histograms, 8 bins);

- weight-structure criteria, on the output channel o the weight writes:

  - ``bn_scale``: S = |w| · |γ_o| / √(σ²_o + ε) when a BatchNorm reads the layer's output directly,
    i.e. the magnitude of the BN-folded weight (network slimming's scale, Liu et al. 2017, with the
    normalisation it undoes); |w| · |γ_o| for another norm layer; |w| for a layer no norm reads;
  - ``fpgm``: S = |w| · D_o / mean_o′ D_o′, D_o = Σ_o′ ‖W_o − W_o′‖₂ (He et al. 2019): weights of filters
    near the layer's geometric median count less.

``loss_change`` measures S = L(w ← 0) − L on the calibration set (Mozer & Smolensky 1989): exactly,
one evaluation per weight, in layers of at most ``MAX_EVALUATIONS`` live weights. In larger layers it
zeroes random chunks (``ROUNDS`` random partitions into ``MAX_EVALUATIONS`` chunks), measures each
chunk's rise ΔL_C and shares it among the chunk's weights in proportion to w²:
S = mean over the weight's chunks of ΔL_C · w² / Σ_{v∈C} v² — a sampled estimate, far weaker than the
exact one (bench/results/weight_criteria.md).

Each function here takes ``(model, names, batch)`` and returns the per-weight scores of the
parameters ``names`` (Linear/Conv weights); hooks are removed and weights restored even on error.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.importance.calibration import Calibration, recording
from prunekit.importance.criteria import histogram_mi, is_norm_scale
from prunekit.importance.loss_change import calibration_loss

__all__ = ["CHANNEL_SCORES", "channel_index", "layer_inputs"]

Batch = tuple[torch.Tensor, torch.Tensor]
_MINI = 128
MI_BINS = 8
#: loss_change: exact per weight up to this many live weights per layer, at most this many chunks beyond.
MAX_EVALUATIONS = 256
ROUNDS = 2


# ----------------------------------------------------------------------------- per-op knowledge
def channel_index(module: nn.Module, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """(output channel, input channel) of every entry of ``module``'s weight, each of ``shape``.

    The one place that knows the weight layouts: Linear (out, in); Conv (out, in/G, *k); ConvTranspose
    (in, out/G, *k); with G groups, filter o reads input channels of group o // (out/G).
    """
    if isinstance(module, nn.Linear):
        out_c, in_c = torch.meshgrid(torch.arange(shape[0]), torch.arange(shape[1]), indexing="ij")
        return out_c, in_c
    if isinstance(module, nn.modules.conv._ConvNd):
        a, b = torch.meshgrid(torch.arange(shape[0]), torch.arange(shape[1]), indexing="ij")
        per_group = shape[0] // module.groups  # rows of dim 0 per group
        full = (a // per_group) * shape[1] + b  # dim-1 index in the full channel range
        out_c, in_c = (full, a) if module.transposed else (a, full)
        extra = (1,) * (len(shape) - 2)
        return out_c.reshape(*out_c.shape, *extra).expand(shape), in_c.reshape(*in_c.shape, *extra).expand(shape)
    raise ConfigError(f"single-weight channel criteria score Linear and Conv weights, not "
                      f"{type(module).__name__}; exclude that layer")


def _owner(model: nn.Module, name: str) -> nn.Module:
    module_name, _, attr = name.rpartition(".")
    if attr != "weight":
        raise ConfigError(f"channel criteria score layer weights; {name!r} is not one (set include_bias: false)")
    return model.get_submodule(module_name)


def _input_channels(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` (the layer's input) as (samples, channels, positions)."""
    if isinstance(module, nn.Linear):
        return x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2)
    return x.reshape(x.shape[0], x.shape[1], -1)


# ----------------------------------------------------------------------------- activation statistics
@torch.no_grad()
def layer_inputs(model: nn.Module, names: list[str], x: torch.Tensor, samples: bool = False) -> dict[str, dict]:
    """Per input channel of each layer ``names`` over the inputs ``x`` (eval mode, mini-batches):
    ``zeros`` (fraction of exact zeros), ``mean_abs`` (mean |a|) and, with ``samples``, ``means``
    (per-sample channel means, shape (N, channels))."""
    acc: dict[str, dict] = {n: {"zeros": 0.0, "mean_abs": 0.0, "count": 0, "means": []} for n in names}

    def make(name):
        def hook(module, args):
            c = _input_channels(module, args[0].detach().float())
            a = acc[name]
            a["zeros"] = a["zeros"] + (c == 0).float().mean((0, 2)) * len(c)
            a["mean_abs"] = a["mean_abs"] + c.abs().mean((0, 2)) * len(c)
            a["count"] += len(c)
            if samples:
                a["means"].append(c.mean(2).cpu().numpy())
        return hook

    device = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        with recording([(_owner(model, n), make(n)) for n in names]):
            for s in range(0, len(x), _MINI):
                model(x[s:s + _MINI].to(device))
    finally:
        model.train(was)
    out = {}
    for n, a in acc.items():
        if not a["count"]:
            raise ConfigError(f"layer {n!r} did not run during the calibration pass, so activation criteria "
                              f"cannot score it; exclude it or use a weight criterion (l1, fpgm)")
        out[n] = {"zeros": a["zeros"] / a["count"], "mean_abs": a["mean_abs"] / a["count"],
                  "means": np.concatenate(a["means"]) if samples else None}
    return out


def _scaled(model: nn.Module, names: list[str], factors: dict[str, torch.Tensor], side: int) -> dict[str, torch.Tensor]:
    """|w| times the factor of the channel each weight writes (``side`` 0) or reads (``side`` 1)."""
    params = dict(model.named_parameters())
    out = {}
    for n in names:
        w = params[n].detach()
        channel = channel_index(_owner(model, n), w.shape)[side].to(w.device)
        out[n] = w.abs().float() * factors[n].to(w.device)[channel]
    return out


def apoz(model: nn.Module, names: list[str], batch: Batch) -> dict[str, torch.Tensor]:
    stats = layer_inputs(model, names, batch[0])
    return _scaled(model, names, {n: 1.0 - s["zeros"] for n, s in stats.items()}, 1)


def mean_activation(model: nn.Module, names: list[str], batch: Batch) -> dict[str, torch.Tensor]:
    stats = layer_inputs(model, names, batch[0])
    return _scaled(model, names, {n: s["mean_abs"] for n, s in stats.items()}, 1)


def mutual_information(model: nn.Module, names: list[str], batch: Batch) -> dict[str, torch.Tensor]:
    stats = layer_inputs(model, names, batch[0], samples=True)
    labels = batch[1].cpu().numpy().astype(np.int64)
    factors = {n: torch.tensor([histogram_mi(s["means"][:, i], labels, MI_BINS)
                                for i in range(s["means"].shape[1])], dtype=torch.float32)
               for n, s in stats.items()}
    return _scaled(model, names, factors, 1)


# ----------------------------------------------------------------------------- weight structure
def _norm_factor(norm: nn.Module) -> torch.Tensor:
    gamma = norm.weight.detach().abs().float()
    var = getattr(norm, "running_var", None)
    if isinstance(norm, nn.modules.batchnorm._BatchNorm) and var is not None:
        return gamma / torch.sqrt(var.detach().float() + norm.eps)
    return gamma


@torch.no_grad()
def _norms_after(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, nn.Module]:
    """The norm layer (with a scale γ per channel) that directly reads each layer's output, if any."""
    produced: dict[int, str] = {}
    found: dict[str, nn.Module] = {}

    def after(name):
        def hook(_module, _args, out):
            if isinstance(out, torch.Tensor):
                produced[id(out)] = name
        return hook

    def before(norm):
        def hook(_module, args):
            name = produced.get(id(args[0])) if args else None
            if name is not None:
                found.setdefault(name, norm)
        return hook

    norms = [m for m in model.modules() if any(is_norm_scale(m, a) for a, p in m.named_parameters(recurse=False))]
    was = model.training
    model.eval()
    try:
        with recording([(_owner(model, n), after(n)) for n in names], after=True), \
                recording([(m, before(m)) for m in norms]):
            model(x[:2].to(next(model.parameters()).device))
    finally:
        model.train(was)
    return found


def bn_scale(model: nn.Module, names: list[str], batch: Batch) -> dict[str, torch.Tensor]:
    norms = _norms_after(model, names, batch[0])
    if not norms:
        raise ConfigError("criterion 'bn_scale' found no norm layer reading any pruned layer's output; "
                          "choose another criterion (l1, taylor, fpgm)")
    params = dict(model.named_parameters())
    factors = {}
    for n in names:
        size = int(channel_index(_owner(model, n), params[n].shape)[0].max()) + 1
        norm = norms.get(n)
        factors[n] = _norm_factor(norm) if norm is not None and norm.weight.numel() == size else torch.ones(size)
    return _scaled(model, names, factors, 0)


def fpgm(model: nn.Module, names: list[str], batch: Batch | None = None) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    factors = {}
    for n in names:
        w = params[n].detach().float()
        out_c, _ = channel_index(_owner(model, n), w.shape)
        order = torch.argsort(out_c.reshape(-1), stable=True)
        filters = w.reshape(-1)[order.to(w.device)].reshape(int(out_c.max()) + 1, -1)  # equal entries per filter
        d = torch.cdist(filters[None], filters[None])[0].sum(1)
        factors[n] = (d / d.mean().clamp_min(1e-12)).cpu()
    return _scaled(model, names, factors, 0)


# ----------------------------------------------------------------------------- measured
def _loss_chunks(w: torch.Tensor, gen: torch.Generator) -> tuple[list[torch.Tensor], bool]:
    """Flat indices zeroed together: each live weight alone (exact) if there are at most
    ``MAX_EVALUATIONS``, else ``ROUNDS`` random partitions into ``MAX_EVALUATIONS`` chunks."""
    alive = torch.nonzero(w.reshape(-1).cpu() != 0).flatten()  # zeroing a pruned weight changes nothing
    if len(alive) <= MAX_EVALUATIONS:
        return list(alive.split(1)), True
    return [c for _ in range(ROUNDS)
            for c in alive[torch.randperm(len(alive), generator=gen)].tensor_split(MAX_EVALUATIONS)], False


@torch.no_grad()
def loss_change(model: nn.Module, names: list[str], batch: Batch, seed: int = 0) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    cal = Calibration(batch[0], batch[1], _MINI)
    out = {}
    base = calibration_loss(model, cal)
    for n in names:
        flat = params[n].data.view(-1)
        scores = torch.zeros(flat.numel())
        chunks, exact = _loss_chunks(params[n].data, gen)
        for idx in chunks:
            on = idx.to(flat.device)
            saved = flat[on].clone()
            flat[on] = 0
            try:
                rise = calibration_loss(model, cal) - base
            finally:
                flat[on] = saved
            share = saved.float().cpu().pow(2)  # a chunk's rise shared in proportion to w²
            scores[idx] += rise if exact else rise * share / share.sum().clamp_min(1e-12) / ROUNDS
        out[n] = scores.reshape(params[n].shape)
    return out


#: What each criterion computes from the model and the calibration batch: its per-weight scores.
CHANNEL_SCORES = {"apoz": apoz, "mean_activation": mean_activation, "mi": mutual_information,
                  "bn_scale": bn_scale, "fpgm": fpgm, "loss_change": loss_change}
