"""Fewer tokens in vision transformers, training-free: token merging and top-k token keeping.

``token_merge`` — ToMe (Bolya et al. 2023, "Token Merging: Your ViT but Faster"): in every block, between
attention and MLP, the tokens are split alternately into sets A and B; each A token's most similar B token is
found by the cosine similarity of the attention keys (averaged over heads); the ``r`` most similar pairs are
merged (a size-weighted mean of the two, sizes added), so each block leaves ``r`` fewer tokens. Attention is then
*proportional*: the logit of key ``j`` gets ``+ log sᵢ`` for the number of patches ``sⱼ`` it stands for, so a
merged token weighs as much as its parts. The class token (and any other prefix token) never merges.

``token_keep`` — EViT (Liang et al. 2022): at chosen blocks, after attention, keep the ``keep_rate`` fraction of
the non-class tokens the class token attends to most (its attention averaged over heads) and fuse the rest into
one token, their attention-weighted mean. Needs a class token.

With ``r = 0`` (or ``keep_rate = 1``) every block runs its own forward: the model is the static one exactly.
Supported blocks: timm ViT/DeiT ``Block`` (``norm1``, ``attn.qkv``, ``attn.proj``, ``ls1``, ``norm2``, ``mlp``,
``ls2``), prunekit's ``vit_mini`` (the same layout) and torchvision's ``EncoderBlock`` (``ln_1``,
``self_attention``, ``ln_2``, ``mlp``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.dynamic.chain import Chain
from prunekit.errors import ConfigError, PruningError

__all__ = ["TokenKeepConfig", "TokenMergeConfig", "TokenModel", "bipartite_merge", "keep_attentive", "token_model"]


@dataclass(frozen=True)
class TokenMergeConfig:
    """``r``: tokens merged away in each block (one number, or one per block)."""

    r: int | list[int] = 8

    def __post_init__(self) -> None:
        rs = self.r if isinstance(self.r, list) else [self.r]
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in rs):
            raise ConfigError(f"token_merge.r must be integers ≥ 0 (tokens merged per block), got {self.r!r}")


@dataclass(frozen=True)
class TokenKeepConfig:
    """``keep_rate``: fraction of the non-class tokens kept at each of ``blocks`` (indices; EViT: 3, 6, 9 of 12)."""

    keep_rate: float = 0.7
    blocks: list[int] = field(default_factory=lambda: [3, 6, 9])

    def __post_init__(self) -> None:
        if not 0 < self.keep_rate <= 1:
            raise ConfigError(f"token_keep.keep_rate must be in (0, 1] (fraction of tokens kept), got "
                              f"{self.keep_rate!r}")


# --- per-family block operations ------------------------------------------------------------------------------
class _QkvOps:
    """timm ``Block`` and prunekit ``ViTBlock``: ``attn.qkv`` fused projection."""

    @staticmethod
    def matches(b: nn.Module) -> bool:
        return all(hasattr(b, a) for a in ("norm1", "attn", "norm2", "mlp")) and hasattr(b.attn, "qkv")

    @staticmethod
    def qkv(b: nn.Module, x: torch.Tensor):
        a = b.attn
        qkv = a.qkv(b.norm1(x))  # its width, not x's: heads may have been pruned (composes with static pruning)
        q, k, v = qkv.reshape(*x.shape[:2], 3, a.num_heads, qkv.shape[-1] // (3 * a.num_heads)).permute(2, 0, 3, 1, 4)
        if hasattr(a, "q_norm"):
            q, k = a.q_norm(q), a.k_norm(k)
        return q, k, v

    @staticmethod
    def attn_out(b: nn.Module, o: torch.Tensor) -> torch.Tensor:
        a = b.attn
        o = o.transpose(1, 2).flatten(2)
        o = a.norm(o) if hasattr(a, "norm") else o
        o = a.proj(o)
        return b.ls1(o) if hasattr(b, "ls1") else o

    @staticmethod
    def mlp(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
        y = b.mlp(b.norm2(x))
        return x + (b.ls2(y) if hasattr(b, "ls2") else y)


class _TorchvisionOps:
    """torchvision ``EncoderBlock``: ``nn.MultiheadAttention`` with a packed in-projection."""

    @staticmethod
    def matches(b: nn.Module) -> bool:
        return all(hasattr(b, a) for a in ("ln_1", "self_attention", "ln_2", "mlp"))

    @staticmethod
    def qkv(b: nn.Module, x: torch.Tensor):
        a = b.self_attention
        qkv = F.linear(b.ln_1(x), a.in_proj_weight, a.in_proj_bias)
        return qkv.reshape(*x.shape[:2], 3, a.num_heads, qkv.shape[-1] // (3 * a.num_heads)).permute(
            2, 0, 3, 1, 4).unbind(0)

    @staticmethod
    def attn_out(b: nn.Module, o: torch.Tensor) -> torch.Tensor:
        return b.dropout(b.self_attention.out_proj(o.transpose(1, 2).flatten(2)))

    @staticmethod
    def mlp(b: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x + b.mlp(b.ln_2(x))


def _ops_for(block: nn.Module):
    for ops in (_QkvOps, _TorchvisionOps):
        if ops.matches(block):
            return ops
    raise PruningError(f"{type(block).__name__}: not a ViT block token methods know (timm Block, vit_mini ViTBlock, "
                       "torchvision EncoderBlock)")


# --- the two reductions -------------------------------------------------------------------------------------------
def bipartite_merge(x: torch.Tensor, k: torch.Tensor, size: torch.Tensor | None, r: int, protect: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """ToMe's bipartite soft matching: merges the ``r`` A tokens most similar to a B token into it.

    Args:
        x: tokens (N, T, C); ``k``: their keys averaged over heads (N, T, D); ``size``: patches per token (N, T, 1),
            or None when every token is one patch.
        protect: the first ``protect`` tokens (class, registers) neither merge nor receive.
    Returns:
        ``(x, size)`` with ``T - r`` tokens: the unmerged A tokens in their order (so the class token stays first),
        then the B tokens.
    """
    n, _, c = x.shape
    k = k / k.norm(dim=-1, keepdim=True)
    scores = k[:, ::2] @ k[:, 1::2].transpose(-1, -2)
    if protect:
        scores[:, : (protect + 1) // 2, :] = -math.inf  # A rows 2i < protect
        scores[:, :, : protect // 2] = -math.inf  # B columns 2j + 1 < protect
    best, match = scores.max(-1)
    order = best.argsort(-1, descending=True)[..., None]
    src, keep = order[:, :r], order[:, r:].sort(1).values
    # (size·x, size) travel as one tensor, so one gather and one scatter move both: at batch 1 on a CPU the
    # merge's cost is mostly per-op overhead, not arithmetic
    xs = F.pad(x, (0, 1), value=1.0) if size is None else torch.cat([x * size, size], -1)
    a, b = xs[:, ::2], xs[:, 1::2]
    b = b.scatter_add(1, match[..., None].gather(1, src).expand(n, r, c + 1), a.gather(1, src.expand(n, r, c + 1)))
    out = torch.cat([a.gather(1, keep.expand(-1, -1, c + 1)), b], 1)
    out_s = out[..., c:]
    return out[..., :c] / out_s, out_s


def keep_attentive(x: torch.Tensor, cls_attn: torch.Tensor, size: torch.Tensor, keep: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """EViT: keeps the class token and the ``keep`` tokens it attends to most (``cls_attn``: (N, T−1), over the
    non-class tokens), and fuses the rest into one token, their attention-weighted mean."""
    n, t, c = x.shape
    order = cls_attn.argsort(-1, descending=True)
    top, rest = order[:, :keep].sort(1).values + 1, order[:, keep:] + 1
    kept = x.gather(1, top[..., None].expand(-1, -1, c))
    parts = [x[:, :1], kept]
    sizes = [size[:, :1], size.gather(1, top[..., None])]
    if rest.shape[1]:
        w = cls_attn.gather(1, rest - 1)[..., None]
        w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
        parts.append((x.gather(1, rest[..., None].expand(-1, -1, c)) * w).sum(1, keepdim=True))
        sizes.append(size.gather(1, rest[..., None]).sum(1, keepdim=True))
    return torch.cat(parts, 1), torch.cat(sizes, 1)


class TokenModel(nn.Module):
    """A ViT run block by block with ``r[i]`` tokens merged away in block ``i`` (``token_merge``) or a fraction
    ``keep[i]`` of tokens kept (``token_keep``); the tail (final norm, head on the class token) unchanged."""

    dynamic_method = "token_merge"

    def __init__(self, chain: Chain, method: str, per_block: list[float], protect: int) -> None:
        super().__init__()
        self.chain, self.method, self.per_block, self.protect = chain, method, list(per_block), protect
        self.dynamic_method = method
        self._ops = [_ops_for(b) for b in chain.blocks]
        self.last_tokens: list[int] = []

    def _active(self, i: int) -> bool:
        return self.per_block[i] != (0 if self.method == "token_merge" else 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, size = self.chain.stem(x), None
        tokens = [h.shape[1]]
        for i, (block, ops) in enumerate(zip(self.chain.blocks, self._ops, strict=True)):
            if size is None and not self._active(i):
                h = block(h)
            else:
                h, size = self._block(block, ops, h, size, i)
            tokens.append(h.shape[1])
        self.last_tokens = tokens
        return self.chain.tail(h)

    def _block(self, block, ops, h, size, i):
        # proportional attention: + log s_j on key j (none while every token is one patch: log 1 = 0)
        bias = None if size is None else size.log()[:, None, None, :, 0].to(h.dtype)
        h, q, k = _attend(block, ops, h, bias)
        if self.method == "token_merge" and self.per_block[i]:
            h, size = bipartite_merge(h, k.mean(1), size, int(self.per_block[i]), self.protect)
        elif self.method == "token_keep" and self.per_block[i] < 1:
            logits = (q[:, :, :1] @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            cls_attn = (logits if bias is None else logits + bias).softmax(-1).mean(1)[:, 0, 1:]
            keep = max(1, math.ceil(self.per_block[i] * (h.shape[1] - 1)))
            if keep < h.shape[1] - 1:
                h, size = keep_attentive(h, cls_attn, h.new_ones(*h.shape[:2], 1) if size is None else size, keep)
        return ops.mlp(block, h), size


def _attend(block: nn.Module, ops, h: torch.Tensor, bias: torch.Tensor | None):
    """``h`` + the block's attention (``bias`` added to its logits); also returns the queries and keys."""
    q, k, v = ops.qkv(block, h)
    return h + ops.attn_out(block, F.scaled_dot_product_attention(q, k, v, attn_mask=bias)), q, k


def _prefix_tokens(model: nn.Module) -> int:
    if hasattr(model, "num_prefix_tokens"):  # timm
        return int(model.num_prefix_tokens)
    return 1 if (getattr(model, "class_token", None) is not None or getattr(model, "cls_token", None) is not None) \
        else 0


def token_model(model: nn.Module, example: torch.Tensor, method: str, options) -> TokenModel:
    """Wraps a ViT for ``token_merge`` (:class:`TokenMergeConfig`) or ``token_keep`` (:class:`TokenKeepConfig`);
    a schedule that asks for more tokens than a block has is refused before any work."""
    chain = Chain.of(model, example[:1])
    if chain.feature_kind(example) != "tokens":
        raise PruningError(f"{type(model).__name__}: {method} needs a vision transformer (token blocks); this model's "
                           f"blocks emit {chain.feature_kind(example)} features")
    protect = _prefix_tokens(model)
    depth = len(chain.blocks)
    with torch.no_grad():
        t0 = chain.stem(example[:1]).shape[1]
    if method == "token_merge":
        per = list(options.r) if isinstance(options.r, list) else [options.r] * depth
        if len(per) != depth:
            raise ConfigError(f"token_merge.r has {len(per)} entries for {depth} blocks: give one per block or one "
                              "number")
        t = t0
        for i, r in enumerate(per):
            room = min((t + 1) // 2 - (protect + 1) // 2, t // 2 - protect // 2)
            if r > room:
                raise ConfigError(f"token_merge.r = {r} is too large for block {i}: it has {t} tokens, of which at "
                                  f"most {max(room, 0)} can merge ({t0} tokens at the start, {protect} protected); "
                                  f"use r ≤ {max(room, 0)} there, or a smaller r for every block")
            t -= r
    else:
        if protect < 1:
            raise ConfigError(f"token_keep ranks tokens by the class token's attention, but this "
                              f"{type(model).__name__} has no class token (e.g. timm global_pool='avg', "
                              "class_token=False): use token_merge, which needs none")
        bad = [b for b in options.blocks if not 0 <= b < depth]
        if bad:
            raise ConfigError(f"token_keep.blocks {bad} are not block indices of this model (0..{depth - 1})")
        per = [options.keep_rate if i in options.blocks else 1.0 for i in range(depth)]
    tm = TokenModel(chain, method, per, protect).eval()
    _check_blocks(tm, example[:1])
    return tm


@torch.no_grad()
def _check_blocks(tm: TokenModel, example: torch.Tensor) -> None:
    """Refuses a model whose blocks the token path cannot reproduce: with every token one patch, the path's
    attention + MLP must equal each block's own forward (a block with e.g. a relative position bias differs)."""
    h = tm.chain.stem(example)
    for i, (block, ops) in enumerate(zip(tm.chain.blocks, tm._ops, strict=True)):
        want = block(h)
        got = ops.mlp(block, _attend(block, ops, h, None)[0])
        if not torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            raise PruningError(f"{type(tm.chain.model).__name__}: block {tm.chain.names[i]} "
                               f"({type(block).__name__}) computes something the token methods' attention does not "
                               "(e.g. a relative position bias or rotary embedding), so merging or keeping tokens "
                               "would change its answers; supported: plain ViT/DeiT blocks (timm Block, vit_mini, "
                               "torchvision EncoderBlock)")
        h = want
