"""Small hand-built models, one per coupling pattern the dependency graph must handle."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cbr(cin: int, cout: int, **kw) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False, **kw), nn.BatchNorm2d(cout), nn.ReLU())


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.a, self.b = cbr(16, 24), cbr(24, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.b(self.a(x))
        return self.head(x.mean((2, 3)))


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = cbr(3, 8), cbr(3, 12)
        self.c = cbr(20, 16)
        self.head = nn.Linear(16 + 20, 5)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        z = self.c(y)
        return self.head(torch.cat([F.adaptive_avg_pool2d(z, 1), F.adaptive_avg_pool2d(y, 1)], 1).flatten(1))


class SplitChunk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = cbr(3, 16)
        self.left, self.right = cbr(8, 8), cbr(8, 12)
        self.head = nn.Linear(20, 4)

    def forward(self, x):
        a, b = self.stem(x).chunk(2, dim=1)
        y = torch.cat([self.left(a), self.right(b)], 1)
        return self.head(y.amax((2, 3)))


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.pw1 = cbr(3, 16)
        self.dw = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, groups=16), nn.BatchNorm2d(32), nn.ReLU6())
        self.pw2 = nn.Conv2d(32, 8, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.pw2(self.dw(self.pw1(x))).mean((2, 3)))


class GroupConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 16)
        self.g = cbr(16, 24, groups=4)
        self.b = nn.Conv2d(24, 8, 1)

    def forward(self, x):
        return self.b(self.g(self.a(x))).flatten(1)[:, :50]


class ChannelShuffle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = cbr(3, 16)
        self.b = cbr(16, 8)
        self.groups = 4

    def forward(self, x):
        x = self.a(x)
        n, c, h, w = x.shape
        x = x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.b(x).mean((2, 3))


class TransposedConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.down = cbr(3, 16)
        self.up = nn.ConvTranspose2d(16, 12, 2, stride=2)
        self.dw_up = nn.ConvTranspose2d(12, 12, 2, stride=2, groups=12)
        self.out = nn.Conv2d(12, 2, 1)

    def forward(self, x):
        return self.out(F.relu(self.dw_up(F.relu(self.up(self.down(x))))))


class FlattenLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = cbr(3, 8)
        self.fc1 = nn.Linear(8 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 6)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.conv(x), 4)
        return self.fc2(F.gelu(self.fc1(x.view(x.size(0), -1))))


class Attention(nn.Module):
    """timm-style fused-qkv attention with a ``num_heads`` attribute that must be rewritten."""

    def __init__(self, dim: int = 32, num_heads: int = 4) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.attn_dim = dim
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5
        x = attn.softmax(-1) @ v
        return self.proj(x.transpose(1, 2).reshape(b, n, self.attn_dim))


class TinyViT(nn.Module):
    """Patch embedding, class token, position embedding, layer scale, attention and MLP (no norms)."""

    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim))
        self.attn = Attention(dim)
        self.gamma = nn.Parameter(torch.rand(dim))
        self.fc1, self.fc2 = nn.Linear(dim, 64), nn.Linear(64, dim)
        self.head = nn.Linear(dim, 7)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        x = x + self.gamma * self.attn(x)
        x = x + self.fc2(F.gelu(self.fc1(x)))
        return self.head(x[:, 0])


class GQA(nn.Module):
    """LLaMA-style grouped-query attention: 4 query heads share 2 key/value heads (repeat_kv)."""

    def __init__(self, dim: int = 32, heads: int = 4, kv_heads: int = 2) -> None:
        super().__init__()
        self.head_dim, self.groups = dim // heads, heads // kv_heads
        self.q = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.k = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.v = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.o = nn.Linear(heads * self.head_dim, dim, bias=False)
        self.emb = nn.Embedding(50, dim)
        self.lm = nn.Linear(dim, 50)

    def _heads(self, t):
        return t.view(*t.shape[:2], -1, self.head_dim).transpose(1, 2)

    def _repeat(self, t):
        b, h, n, d = t.shape
        return t[:, :, None].expand(b, h, self.groups, n, d).reshape(b, h * self.groups, n, d)

    def forward(self, ids):
        x = self.emb(ids)
        q, k, v = self._heads(self.q(x)), self._repeat(self._heads(self.k(x))), self._repeat(self._heads(self.v(x)))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(y.transpose(1, 2).reshape(*x.shape[:2], -1))
        return self.lm(x)


class MHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(32, 4, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(32, 48), nn.Linear(48, 32)

    def forward(self, x):
        x = x + self.mha(x, x, x, need_weights=False)[0]
        return x + self.fc2(F.relu(self.fc1(x)))


class MHAMasked(nn.Module):
    """Sequence-first MHA without biases: causal + key-padding masks, free residual width, MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 32)
        self.mha = nn.MultiheadAttention(32, 4, bias=False, batch_first=False)
        self.out = nn.Linear(32, 5)

    def forward(self, x):
        h = self.inp(x).transpose(0, 1)  # (L, N, E)
        n, length = x.shape[0], x.shape[1]
        causal = torch.triu(torch.ones(length, length, dtype=torch.bool), 1)
        pad = torch.zeros(n, length, dtype=torch.bool)
        pad[:, -1] = True
        a, _ = self.mha(h, h, h, attn_mask=causal, key_padding_mask=pad, need_weights=False, is_causal=True)
        return self.out(F.relu(h + a)).transpose(0, 1)


class MHABiasKV(nn.Module):
    """bias_k/bias_v, add_zero_attn and per-head attention weights (computed, then discarded)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 24)
        self.mha = nn.MultiheadAttention(24, 3, add_bias_kv=True, add_zero_attn=True, batch_first=True)
        self.out = nn.Linear(24, 5)

    def forward(self, x):
        h = self.inp(x)
        a, _ = self.mha(h, h, h, average_attn_weights=False)
        return self.out(F.gelu(h + a))


class MHACross(nn.Module):
    """Cross-attention with kdim/vdim != embed_dim (separate q/k/v weights), dropout, unbatched path."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(8, 32), nn.Linear(8, 24), nn.Linear(8, 16)
        self.mha = nn.MultiheadAttention(32, 4, dropout=0.1, kdim=24, vdim=16, batch_first=True)
        self.out = nn.Linear(32, 5)

    def forward(self, x):
        mem = x.flip(1)
        a, _ = self.mha(self.q(x), self.k(mem), self.v(mem), need_weights=False)
        single, _ = self.mha(self.q(x[0]), self.k(mem[0]), self.v(mem[0]), need_weights=False)  # unbatched
        return self.out(torch.tanh(a + single))


class Encoder(nn.Module):
    """nn.TransformerEncoder (its eval fast path must not run on pruned attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(8, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.out = nn.Linear(32, 5)

    def forward(self, x):
        return self.out(self.enc(self.inp(x)))


def tv_vit() -> nn.Module:
    """torchvision's VisionTransformer, small: 2 layers of nn.MultiheadAttention with 4 heads of 16."""
    from torchvision.models import VisionTransformer

    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128)
    nn.init.normal_(model.heads.head.weight)  # zero-initialised: every output would be 0 and every test vacuous
    return model


def tv_swin(v2: bool = False) -> nn.Module:
    """torchvision's SwinTransformer, small: 2 stages (2 and 4 heads of 16), the first with shifted windows."""
    from torchvision.models import swin_transformer as sw

    extra = {"block": sw.SwinTransformerBlockV2, "downsample_layer": sw.PatchMergingV2} if v2 else {}
    model = sw.SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                               num_classes=10, **extra)
    for p in model.parameters():  # trunc_normal(std=0.02) everywhere: make heads matter to the output
        if p.ndim == 2:
            nn.init.normal_(p, std=p.shape[1] ** -0.5)
    return model


class Tied(nn.Module):
    """Embedding and output projection share one weight; the hidden size is prunable exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(40, 24)
        self.fc1, self.fc2 = nn.Linear(24, 32), nn.Linear(32, 24)
        self.out = nn.Linear(24, 40, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids):
        h = self.emb(ids)
        h = h + self.fc2(F.relu(self.fc1(h)))
        return self.out(h)


class Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc0 = nn.Linear(6, 12)
        self.lstm = nn.LSTM(12, 16, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(16, 20), nn.Linear(20, 3)

    def forward(self, x):
        y, _ = self.lstm(torch.tanh(self.fc0(x)))
        return self.fc2(F.relu(self.fc1(y)))


class GatedSplit(nn.Module):
    """timm MambaOut's gated conv block: unequal split sizes held in ``split_indices``, gate * cat(i, conv(c))."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 48)
        self.split_indices = (24, 16, 8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.fc2 = nn.Linear(24, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        g, i, c = torch.split(self.fc1(x), self.split_indices, dim=-1)
        c = self.conv(c.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return self.head((x + self.fc2(F.gelu(g) * torch.cat((i, c), -1))).mean((1, 2)))


class StdConv(nn.Conv2d):
    """timm's ScaledStdConv2d: every filter standardised on its own (a batch norm over the weight)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.rand(self.out_channels, 1, 1, 1) + 0.5)
        self.scale = self.weight[0].numel() ** -0.5

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, self.out_channels, -1), None, None,
                         weight=(self.gain * self.scale).view(-1), training=True, momentum=0.0, eps=1e-6)
        return F.conv2d(x, w.reshape_as(self.weight), self.bias, self.stride, self.padding, self.dilation, self.groups)


class WeightStandardised(nn.Module):
    """NF-ResNet style: output channels of a standardised conv prune exactly, its input channels do not."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = StdConv(3, 16, 3, padding=1), StdConv(16, 12, 3, padding=1)
        self.head = nn.Linear(12, 4)

    def forward(self, x):
        return self.head(self.b(F.relu(self.a(x))).mean((2, 3)))


def image(b: int = 2, s: int = 16) -> torch.Tensor:
    return torch.randn(b, 3, s, s)


# name -> (factory, example-input factory taking a batch size, exact_only)
TOPOLOGIES = {
    "residual": (Residual, lambda b: image(b), True),
    "concat": (Concat, lambda b: image(b), True),
    "split_chunk": (SplitChunk, lambda b: image(b), True),
    "depthwise": (Depthwise, lambda b: image(b), True),
    "group_conv": (GroupConv, lambda b: image(b), True),
    "channel_shuffle": (ChannelShuffle, lambda b: image(b), True),
    "transposed_conv": (TransposedConv, lambda b: image(b), True),
    "flatten_linear": (FlattenLinear, lambda b: image(b), True),
    "vit_free_params": (TinyViT, lambda b: image(b), True),
    "gqa": (GQA, lambda b: torch.randint(0, 50, (b, 6)), True),
    "mha": (MHA, lambda b: torch.randn(b, 5, 32), True),
    "mha_masked_seq_first": (MHAMasked, lambda b: torch.randn(b, 6, 8), True),
    "mha_bias_kv_zero_attn": (MHABiasKV, lambda b: torch.randn(b, 5, 8), True),
    "mha_cross_kdim_vdim": (MHACross, lambda b: torch.randn(b, 5, 8), True),
    "transformer_encoder": (Encoder, lambda b: torch.randn(b, 5, 8), True),
    "torchvision_vit": (tv_vit, lambda b: image(b, 32), True),
    "torchvision_swin": (tv_swin, lambda b: image(b, 32), True),
    "torchvision_swin_v2": (lambda: tv_swin(v2=True), lambda b: image(b, 32), True),
    "tied_weights": (Tied, lambda b: torch.randint(0, 40, (b, 7)), True),
    "recurrent": (Recurrent, lambda b: torch.randn(b, 5, 6), True),
    "gated_split_unequal": (GatedSplit, lambda b: torch.randn(b, 6, 6, 8), True),
    "weight_standardised": (WeightStandardised, lambda b: image(b), True),
}
