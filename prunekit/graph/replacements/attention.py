"""``nn.MultiheadAttention`` with an inner width ``num_heads * head_dim`` of its own (see the package docstring)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prunekit.graph.replacements._registry import register_replacement

__all__ = ["PrunedMultiheadAttention"]


@register_replacement
class PrunedMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose inner width ``num_heads * head_dim`` may differ from its input.

    Same arguments, outputs and semantics as the stock forward (``attn_mask``, ``key_padding_mask``,
    ``need_weights``, ``average_attn_weights``, ``is_causal``, dropout in train mode,
    ``batch_first``, unbatched inputs, ``bias_k``/``bias_v``, ``add_zero_attn``, packed or separate
    projections); widths come from the weights, so ``embed_dim``, ``kdim`` and ``vdim`` describe the
    residual and key/value inputs. Weights averaged over heads (``need_weights=True``, the default)
    average over the heads that are left, so such a call makes head removal inexact (see
    ``StructuredConfig.exact_only``); ``need_weights=False`` keeps it exact.
    """

    replaces = nn.MultiheadAttention

    @property
    def _qkv_same_embed_dim(self) -> bool:
        # False keeps fused kernels away (nn.TransformerEncoderLayer's fast path reads this flag): they
        # assume query width == num_heads * head_dim. Packed or separate weights: see in_proj_weight.
        return False

    @_qkv_same_embed_dim.setter
    def _qkv_same_embed_dim(self, value: bool) -> None:
        pass  # nn.MultiheadAttention.__init__ sets it; the property above answers for this class

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = True, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[Tensor, Tensor | None]:
        batched = query.dim() == 3
        key_padding_mask = F._canonical_mask(mask=key_padding_mask, mask_name="key_padding_mask",
                                             other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
                                             target_type=query.dtype)
        attn_mask = F._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                                      target_type=query.dtype, check_other=False)
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint (as nn.MultiheadAttention)")
        q, k, v = (self._batch_major(t, batched) for t in (query, key, value))
        q, k, v = self._project(q, k, v, same=query is key and key is value)
        n, tgt = q.shape[0], q.shape[1]
        if self.bias_k is not None and self.bias_v is not None:
            k = torch.cat([k, self.bias_k.expand(n, 1, -1)], dim=1)
            v = torch.cat([v, self.bias_v.expand(n, 1, -1)], dim=1)
            attn_mask, key_padding_mask = _pad_last(attn_mask), _pad_last(key_padding_mask)
        if self.add_zero_attn:
            k, v = F.pad(k, (0, 0, 0, 1)), F.pad(v, (0, 0, 0, 1))
            attn_mask, key_padding_mask = _pad_last(attn_mask), _pad_last(key_padding_mask)
        q, k, v = (t.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2) for t in (q, k, v))
        src = k.shape[2]
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None  # the stock forward hands the hint to SDPA in this case only
        else:
            is_causal = False
            attn_mask = self._merged_mask(attn_mask, key_padding_mask, n, tgt, src)
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
            if attn_mask is not None:
                scores = scores + attn_mask
            weights = F.dropout(scores.softmax(dim=-1), p=p) if p > 0 else scores.softmax(dim=-1)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask, p, is_causal)
        out = F.linear(out.transpose(1, 2).flatten(2), self.out_proj.weight, self.out_proj.bias)
        if not batched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        if average_attn_weights:
            weights = weights.mean(dim=1)  # over the heads left: makes head removal inexact (class docstring)
        return out, weights if batched else weights.squeeze(0)

    def _batch_major(self, t: Tensor, batched: bool) -> Tensor:
        if not batched:
            return t.unsqueeze(0)
        return t if self.batch_first else t.transpose(0, 1)

    def _project(self, q: Tensor, k: Tensor, v: Tensor, same: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Query, key and value projections, each (N, L, num_heads * head_dim)."""
        bias = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        if self.in_proj_weight is None:
            weights = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        elif same:  # one matmul, as the stock forward does for self-attention
            return F.linear(q, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        else:
            weights = self.in_proj_weight.chunk(3)
        return tuple(F.linear(x, w, b) for x, w, b in zip((q, k, v), weights, bias, strict=True))

    def _merged_mask(self, attn_mask: Tensor | None, key_padding_mask: Tensor | None, n: int, tgt: int,
                     src: int) -> Tensor | None:
        """``attn_mask`` (L, S) or (N * num_heads, L, S) plus ``key_padding_mask`` (N, S), as (N, H, L, S)."""
        if attn_mask is not None:
            attn_mask = attn_mask.view(1, 1, tgt, src) if attn_mask.dim() == 2 else attn_mask.view(n, -1, tgt, src)
        if key_padding_mask is not None:
            kpm = key_padding_mask.view(n, 1, 1, src)
            attn_mask = kpm if attn_mask is None else attn_mask + kpm
        return attn_mask


def _pad_last(mask: Tensor | None) -> Tensor | None:
    return None if mask is None else F.pad(mask, (0, 1))
