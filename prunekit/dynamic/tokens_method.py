"""``token_merge`` and ``token_keep`` as registered dynamic methods (training-free; see :mod:`.tokens`)."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.dynamic.base import DYNAMIC_METHODS, BuildContext, DynamicMethod
from prunekit.dynamic.chain import Chain
from prunekit.dynamic.tokens import TokenKeepConfig, TokenMergeConfig, TokenModel, token_model
from prunekit.errors import ModelLoadError
from prunekit.measure import count_macs

__all__: list[str] = []


def _builder(method: str):
    def build(ctx: BuildContext) -> TokenModel:
        device = next(ctx.model.parameters()).device
        model = token_model(ctx.model, ctx.data.x_val[:1].to(device), method, ctx.options)
        ctx.report.update({"per_block": model.per_block})
        return model

    return build


@torch.no_grad()
def _describe(model: TokenModel, x: torch.Tensor, y: torch.Tensor) -> dict:
    device = next(model.parameters()).device
    one = x[:1].to(device)
    model(one)
    return {"method": model.method, "mean_macs": count_macs(model, one).dense,
            "static_macs": count_macs(model.chain, one).dense, "tokens_per_block": model.last_tokens,
            "per_block": model.per_block, "protected_tokens": model.protect,
            "serving_policy": "every input of a batch keeps the same number of tokens (a fixed schedule)"}


def _state(model: TokenModel) -> tuple[dict, dict[str, torch.Tensor]]:
    return {"per_block": model.per_block, "protect": model.protect, "layout": model.chain.layout_name}, {}


def _restore(static: nn.Module, spec: dict, tensors: dict, method: str) -> TokenModel:
    try:
        return TokenModel(Chain(static, spec["layout"]), method, [float(v) for v in spec["per_block"]],
                          int(spec["protect"])).eval()
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"dynamic.json: the {method} spec does not fit the saved model: {e}") from None


for _name, _opts, _summary in (
        ("token_merge", TokenMergeConfig, "ViT token merging (ToMe): r similar tokens merged per block"),
        ("token_keep", TokenKeepConfig, "ViT top-k token keeping by class attention (EViT), the rest fused")):
    DYNAMIC_METHODS.register(_name)(DynamicMethod(
        _name, _opts, _builder(_name), _describe, _state,
        (lambda m: lambda s, spec, t: _restore(s, spec, t, m))(_name), summary=_summary))
