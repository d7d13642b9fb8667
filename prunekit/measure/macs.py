"""Multiply-accumulate counts, dense and non-zero.

Dense MACs come from :class:`torch.utils.flop_counter.FlopCounterMode` (which sees every aten
matmul/conv/attention op, also inside functional code such as attention) divided by two; CPU's fused
``scaled_dot_product_attention`` kernel, which it does not count, is counted here (QKᵀ and AV).

Non-zero MACs subtract the work of zero weights in Linear and Conv layers: each weight of a Linear
layer is used once per input row, each weight of a conv once per output position, so a layer does
``positions × numel(W)`` dense MACs and ``positions × nnz(W)`` non-zero MACs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["MacCount", "count_macs"]

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class MacCount:
    """Dense and non-zero MACs of one forward; ``modules``: dense MACs per module (dotted name, ``""`` the
    model; a module's count includes its submodules')."""

    dense: int
    nonzero: int
    modules: dict[str, int] | None = None


def _sdpa_cpu_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of CPU's fused attention kernel, which FlopCounterMode leaves uncounted: QKᵀ and AV."""
    batch = math.prod(query[:-2])
    return 2 * batch * query[-2] * key[-2] * (query[-1] + value[-1])


# Ops FlopCounterMode does not know, by the shapes of their arguments.
_SDPA_CPU = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
_EXTRA_FLOPS = {} if _SDPA_CPU is None else {_SDPA_CPU: _sdpa_cpu_flops}


def _positions(module: nn.Module, out: torch.Tensor) -> int:
    """How many times each weight is used in one forward call of ``module``."""
    if isinstance(module, nn.Linear):
        return out.numel() // out.shape[-1]
    # conv output (N, C_out, *spatial): each weight used once per (n, spatial) position
    return out.numel() // out.shape[1]


@torch.no_grad()
def count_macs(model: nn.Module, *inputs, **kwargs) -> MacCount:
    """Counts the MACs of one forward pass ``model(*inputs, **kwargs)``.

    Returns:
        The dense MAC count and the MACs left after skipping zero weights of Linear/Conv layers.
    """
    saved: list[int] = []

    def hook(module, _args, out):
        if isinstance(out, torch.Tensor) and out.dim() >= 1:
            w = module.weight
            zeros = w.numel() - int(torch.count_nonzero(w))
            saved.append(_positions(module, out) * zeros)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _WEIGHTED)]
    was_training = model.training
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    # The fused kernel of nn.MultiheadAttention / nn.TransformerEncoderLayer in eval mode is invisible to
    # FlopCounterMode (vit_b_16: 11.3 instead of 16.8 GMACs); the unfused path does the same work, visibly.
    torch.backends.mha.set_fastpath_enabled(False)
    # FlopCounterMode's module tracker hooks the autograd graph of every module input that requires grad;
    # a parameter view made under no_grad (timm CaiT's expanded class token) has none and crashes it.
    # Nothing here needs gradients, so parameters stop requiring them for the count.
    grad_flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in grad_flags:
            p.requires_grad_(False)
        with FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOPS) as counter:
            model(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
        for p, flag in grad_flags:
            p.requires_grad_(flag)
        model.train(was_training)
        torch.backends.mha.set_fastpath_enabled(fastpath)
    dense = counter.get_total_flops() // 2
    # FlopCounterMode names modules "<root class>.<dotted name>" (the model itself "<root class>")
    modules = {k.partition(".")[2]: sum(v.values()) // 2 for k, v in counter.get_flop_counts().items()
               if k != "Global"}
    return MacCount(dense=dense, nonzero=max(dense - sum(saved), 0), modules=modules)
