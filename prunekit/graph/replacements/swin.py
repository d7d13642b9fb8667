"""torchvision's Swin window attention with an inner width of its own (see the package docstring).

``torchvision.models.swin_transformer.shifted_window_attention`` computes ``head_dim`` as
``C // num_heads`` with ``C`` the input width, and reshapes the heads back to ``C`` features; after
heads are removed, ``qkv`` yields ``3 * num_heads * head_dim < 3 * C`` features. The function below
is torchvision's (BSD-3-Clause), with those two sizes taken from the weights instead (and v2's zero key
bias built without a fixed-bounds slice). Imported only
when torchvision is (see ``_registry._load_optional``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

from prunekit.graph.replacements._registry import register_replacement

__all__ = ["PrunedShiftedWindowAttention", "PrunedShiftedWindowAttentionV2"]


def _forward(m: ShiftedWindowAttention, x: Tensor, logit_scale: Tensor | None) -> Tensor:
    return shifted_window_attention(
        x, m.qkv.weight, m.proj.weight, m.get_relative_position_bias(), m.window_size, m.num_heads,
        shift_size=m.shift_size, attention_dropout=m.attention_dropout, dropout=m.dropout,
        qkv_bias=m.qkv.bias, proj_bias=m.proj.bias, logit_scale=logit_scale, training=m.training,
    )


@register_replacement
class PrunedShiftedWindowAttention(ShiftedWindowAttention):
    """Swin (v1) window attention whose heads may be fewer than ``dim / head_dim``."""

    replaces = ShiftedWindowAttention

    def forward(self, x: Tensor) -> Tensor:
        return _forward(self, x, None)


@register_replacement
class PrunedShiftedWindowAttentionV2(ShiftedWindowAttentionV2):
    """Swin v2 window attention (cosine attention, continuous position bias) with fewer heads."""

    replaces = ShiftedWindowAttentionV2

    def forward(self, x: Tensor) -> Tensor:
        return _forward(self, x, self.logit_scale)


def shifted_window_attention(input: Tensor, qkv_weight: Tensor, proj_weight: Tensor, relative_position_bias: Tensor,
                             window_size: list[int], num_heads: int, shift_size: list[int],
                             attention_dropout: float = 0.0, dropout: float = 0.0, qkv_bias: Tensor | None = None,
                             proj_bias: Tensor | None = None, logit_scale: Tensor | None = None,
                             training: bool = True) -> Tensor:
    """torchvision's function; ``inner = qkv_weight.shape[0] // 3`` replaces ``C`` inside the attention."""
    B, H, W, C = input.shape
    inner = qkv_weight.shape[0] // 3
    head_dim = inner // num_heads
    pad_r = (window_size[1] - W % window_size[1]) % window_size[1]
    pad_b = (window_size[0] - H % window_size[0]) % window_size[0]
    x = F.pad(input, (0, 0, 0, pad_r, 0, pad_b))
    _, pad_H, pad_W, _ = x.shape
    shift_size = shift_size.copy()
    if window_size[0] >= pad_H:  # a window as large as the map needs no shift
        shift_size[0] = 0
    if window_size[1] >= pad_W:
        shift_size[1] = 0
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(-shift_size[0], -shift_size[1]), dims=(1, 2))
    num_windows = (pad_H // window_size[0]) * (pad_W // window_size[1])
    x = x.view(B, pad_H // window_size[0], window_size[0], pad_W // window_size[1], window_size[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B * num_windows, window_size[0] * window_size[1], C)
    if logit_scale is not None and qkv_bias is not None:  # v2 has no key bias (a slice would pin the heads)
        q_bias, k_bias, v_bias = qkv_bias.chunk(3)
        qkv_bias = torch.cat([q_bias, torch.zeros_like(k_bias), v_bias])
    qkv = F.linear(x, qkv_weight, qkv_bias)
    qkv = qkv.reshape(x.size(0), x.size(1), 3, num_heads, head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    if logit_scale is not None:  # cosine attention
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        attn = (q * head_dim ** -0.5).matmul(k.transpose(-2, -1))
    attn = attn + relative_position_bias
    if sum(shift_size) > 0:
        attn = _shift_mask(x, attn, pad_H, pad_W, window_size, shift_size, num_windows, num_heads)
    attn = F.softmax(attn, dim=-1)
    attn = F.dropout(attn, p=attention_dropout, training=training)
    x = attn.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), inner)
    x = F.linear(x, proj_weight, proj_bias)
    x = F.dropout(x, p=dropout, training=training)
    out = x.size(-1)
    x = x.view(B, pad_H // window_size[0], pad_W // window_size[1], window_size[0], window_size[1], out)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, pad_H, pad_W, out)
    if sum(shift_size) > 0:
        x = torch.roll(x, shifts=(shift_size[0], shift_size[1]), dims=(1, 2))
    return x[:, :H, :W, :].contiguous()


def _shift_mask(x: Tensor, attn: Tensor, pad_H: int, pad_W: int, window_size: list[int], shift_size: list[int],
                num_windows: int, num_heads: int) -> Tensor:
    """Masks attention between regions that the cyclic shift brought into one window."""
    attn_mask = x.new_zeros((pad_H, pad_W))
    h_slices = ((0, -window_size[0]), (-window_size[0], -shift_size[0]), (-shift_size[0], None))
    w_slices = ((0, -window_size[1]), (-window_size[1], -shift_size[1]), (-shift_size[1], None))
    count = 0
    for h in h_slices:
        for w in w_slices:
            attn_mask[h[0]: h[1], w[0]: w[1]] = count
            count += 1
    attn_mask = attn_mask.view(pad_H // window_size[0], window_size[0], pad_W // window_size[1], window_size[1])
    attn_mask = attn_mask.permute(0, 2, 1, 3).reshape(num_windows, window_size[0] * window_size[1])
    attn_mask = attn_mask.unsqueeze(1) - attn_mask.unsqueeze(2)
    attn_mask = attn_mask.masked_fill(attn_mask != 0, -100.0).masked_fill(attn_mask == 0, 0.0)
    attn = attn.view(x.size(0) // num_windows, num_windows, num_heads, x.size(1), x.size(1))
    attn = attn + attn_mask.unsqueeze(1).unsqueeze(0)
    return attn.view(-1, num_heads, x.size(1), x.size(1))
