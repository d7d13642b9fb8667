"""``channel_gate`` as a registered dynamic method (see :mod:`.gates`)."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.dynamic.base import DYNAMIC_METHODS, BuildContext, DynamicMethod
from prunekit.dynamic.chain import Chain
from prunekit.dynamic.gates import ChannelGateConfig, GatedModel, gate_channels, train_gates
from prunekit.errors import ModelLoadError
from prunekit.measure import count_macs

__all__: list[str] = []


def _build(ctx: BuildContext) -> GatedModel:
    device = next(ctx.model.parameters()).device
    model = gate_channels(ctx.model, ctx.data.x_val[:1].to(device), ctx.options)
    ctx.log(f"channel gates on {len(model.gated)} blocks, keeping {ctx.options.keep:.0%} of their inner channels")
    ctx.report["train_loss"] = train_gates(model, ctx.data, ctx.options, ctx.seed)
    return model


@torch.no_grad()
def _describe(model: GatedModel, x: torch.Tensor, y: torch.Tensor) -> dict:
    device = next(model.parameters()).device
    one = x[:1].to(device)
    model.eval()
    counts = {i: torch.zeros(model.chain.blocks[i].conv1.out_channels) for i in model.gated}
    for xb in x.split(256):
        model(xb.to(device))
        for i in model.gated:
            kept = model.gates[str(i)].last_kept
            if kept is not None:
                counts[i] += torch.zeros(len(xb), len(counts[i])).scatter_(1, kept.cpu(), 1.0).sum(0)
    return {"method": "channel_gate", "mean_macs": count_macs(model, one).dense,
            "static_macs": count_macs(model.chain, one).dense,
            "channels_kept": {model.chain.names[i]: model.gates[str(i)].k for i in model.gated},
            "channels_total": {model.chain.names[i]: model.chain.blocks[i].conv1.out_channels for i in model.gated},
            "channel_use": {model.chain.names[i]: (counts[i] / len(x)).tolist() for i in model.gated},
            "serving_policy": "batch 1: gathered weights (only the chosen filters); larger batches: masked dense convs"}


def _state(model: GatedModel) -> tuple[dict, dict[str, torch.Tensor]]:
    spec = {"gated": model.gated, "keep": model.keep, "layout": model.chain.layout_name}
    tensors = {f"gates.{k}.predictor.{p}": v for k, g in model.gates.items()
               for p, v in g.predictor.state_dict().items()}
    return spec, tensors


def _restore(static: nn.Module, spec: dict, tensors: dict) -> GatedModel:
    try:
        model = GatedModel(Chain(static, spec["layout"]), [int(i) for i in spec["gated"]], float(spec["keep"]))
        for k, g in model.gates.items():
            g.predictor.load_state_dict({p: tensors[f"gates.{k}.predictor.{p}"] for p in ("weight", "bias")})
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"dynamic.json: the channel_gate spec does not fit the saved model: {e}") from None
    return model.eval()


DYNAMIC_METHODS.register("channel_gate")(DynamicMethod(
    "channel_gate", ChannelGateConfig, _build, _describe, _state, _restore,
    summary="per-input top-k channels of each residual block's inner conv (FBS)"))
