"""Per-op knowledge of the single-weight forms: which channels a weight entry writes and reads, the
inputs a layer receives, and the norm layer that reads a layer's output.

A weight w_{o,i,·} of a Linear or Conv layer reads input channel i and writes output channel o; the
single-weight form of a channel criterion scales |w| by the score of one of those channels
(:func:`scaled`). Hooks are removed and the model's mode restored even on error.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.importance.calibration import call_model, real_tokens, recording

__all__ = ["MINI", "channel_index", "is_norm_scale", "layer_inputs", "norms_after", "owner", "scaled"]

#: mini-batch size of the single-weight calibration passes
MINI = 128


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


def owner(model: nn.Module, name: str) -> nn.Module:
    """The layer whose weight ``name`` is."""
    module_name, _, attr = name.rpartition(".")
    if attr != "weight":
        raise ConfigError(f"channel criteria score layer weights; {name!r} is not one (set include_bias=False)")
    return model.get_submodule(module_name)


def is_norm_scale(module: nn.Module, attr: str) -> bool:
    """Whether ``module.attr`` is a normalisation layer's scale γ."""
    return attr == "weight" and isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))


def scaled(model: nn.Module, names: list[str], factors: dict[str, torch.Tensor], side: int) -> dict[str, torch.Tensor]:
    """|w| times the factor of the channel each weight writes (``side`` 0) or reads (``side`` 1)."""
    params = dict(model.named_parameters())
    out = {}
    for n in names:
        w = params[n].detach()
        channel = channel_index(owner(model, n), w.shape)[side].to(w.device)
        out[n] = w.abs().float() * factors[n].to(w.device)[channel]
    return out


def _input_channels(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` (the layer's input) as (samples, channels, positions)."""
    if isinstance(module, nn.Linear):
        return x.reshape(x.shape[0], -1, x.shape[-1]).transpose(1, 2)
    return x.reshape(x.shape[0], x.shape[1], -1)


@torch.no_grad()
def layer_inputs(model: nn.Module, names: list[str], x: torch.Tensor, samples: bool = False,
                 keywords: dict[str, torch.Tensor] | None = None) -> dict[str, dict]:
    """Per input channel of each layer ``names`` over the inputs ``x`` (eval mode, mini-batches):
    ``zeros`` (fraction of exact zeros), ``mean_abs`` (mean |a|), ``sq_sum`` (Σ a² over samples and
    positions: the squared L2 norm of the channel's inputs) and, with ``samples``, ``means``
    (per-sample channel means, shape (N, channels)). ``keywords`` (whole-batch keyword inputs: ``attention_mask``,
    ``token_type_ids``) go to the model (:func:`~prunekit.importance.calibration.call_model`); with an attention
    mask only real tokens count (:func:`~prunekit.importance.calibration.real_tokens`; each weighs as one sample)."""
    acc: dict[str, dict] = {n: {"zeros": 0.0, "mean_abs": 0.0, "sq_sum": 0.0, "count": 0, "means": []} for n in names}
    current: dict = {}

    def make(name):
        def hook(module, args):
            inp, keep = args[0].detach().float(), current.get("mask")
            c = _input_channels(module, real_tokens(inp, keep))
            a = acc[name]
            a["zeros"] = a["zeros"] + (c == 0).float().mean((0, 2)) * len(c)
            a["mean_abs"] = a["mean_abs"] + c.abs().mean((0, 2)) * len(c)
            a["sq_sum"] = a["sq_sum"] + c.pow(2).sum((0, 2))
            a["count"] += len(c)
            if samples:
                real = real_tokens(inp, keep)
                means = c.mean(2) if real is inp else torch.stack(
                    [r.mean(0) for r in (real_tokens(inp[b:b + 1], keep[b:b + 1]) for b in range(len(inp)))])
                a["means"].append(means.cpu().numpy())
        return hook

    device = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        with recording([(owner(model, n), make(n)) for n in names]):
            for s in range(0, len(x), MINI):
                kw = {k: v[s:s + MINI].to(device) for k, v in (keywords or {}).items()}
                current["mask"] = kw.get("attention_mask")
                call_model(model, x[s:s + MINI].to(device), kw)
    finally:
        model.train(was)
    out = {}
    for n, a in acc.items():
        if not a["count"]:
            raise ConfigError(f"layer {n!r} did not run during the calibration pass, so activation criteria "
                              f"cannot score it; exclude it or use a weight criterion (l1, fpgm)")
        out[n] = {"zeros": a["zeros"] / a["count"], "mean_abs": a["mean_abs"] / a["count"], "sq_sum": a["sq_sum"],
                  "means": np.concatenate(a["means"]) if samples else None}
    return out


@torch.no_grad()
def norms_after(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, nn.Module]:
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
        with recording([(owner(model, n), after(n)) for n in names], after=True), \
                recording([(m, before(m)) for m in norms]):
            model(x[:2].to(next(model.parameters()).device))
    finally:
        model.train(was)
    return found
