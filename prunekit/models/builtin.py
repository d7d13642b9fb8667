"""Small built-in models for the built-in data.

Each factory takes ``input_shape`` (C, H, W) or (C, L) and ``num_classes``.

- ``lenet300``: LeNet-300-100 (LeCun et al. 1998; Han et al. 2015 Table 1): 784-300-100-10 MLP.
- ``lenet5``: Caffe's LeNet-5 as pruned by Han et al. 2015: conv 20@5×5, pool, conv 50@5×5, pool,
  fc 500, fc 10 (431K parameters on 28×28 inputs).
- ``resnet_mini``: a ResNet-20-like CNN (He et al. 2016, CIFAR variant) for 28×28 inputs: three
  stages of 16/32/64 channels with BN, residual adds and a strided 1×1-conv downsample path.
- ``cnn1d``: a 1-D CNN for MNIST-1D.
- ``vit_mini``: a 6-block Vision Transformer (Dosovitskiy et al. 2021) of width 64 with a class token, 4×4
  patches (2×2 below 16×16 inputs); the small ViT token merging is measured on. ``ViTMini(stem="conv")`` embeds
  the patches with a small convolutional stem instead of one patch-sized convolution (Xiao et al. 2021, "Early
  Convolutions Help Transformers See Better"), which trains far faster on small datasets.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.registry import Registry

__all__ = ["MODELS", "BasicBlock", "ResNetMini", "check_builtin_kwargs"]

#: Model factories by name: ``factory(input_shape, num_classes) -> nn.Module``.
MODELS: Registry = Registry("model")


def check_builtin_kwargs(name: str, kwargs: dict) -> None:
    """Refuses keyword arguments the built-in factory ``name`` does not take (before anything is built)."""
    import inspect

    params = inspect.signature(MODELS.get(name)).parameters
    taken = [p for p in list(params)[2:] if params[p].kind in (params[p].KEYWORD_ONLY, params[p].POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(kwargs) - set(taken))
    if unknown:
        raise ConfigError(f"model {name!r} takes no keyword argument(s) {', '.join(map(repr, unknown))}; "
                          f"{'it takes: ' + ', '.join(taken) if taken else 'it takes none'} (input_shape and "
                          "num_classes come from the data)")


@MODELS.register("lenet300")
def lenet300(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), 300),
        nn.ReLU(),
        nn.Linear(300, 100),
        nn.ReLU(),
        nn.Linear(100, num_classes),
    )


@MODELS.register("lenet5")
def lenet5(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) != 3 or min(input_shape[1:]) < 16:
        raise ConfigError(f"lenet5 needs image inputs of at least 16×16, got shape {input_shape}")
    c, h, w = input_shape
    side = lambda s: ((s - 4) // 2 - 4) // 2
    return nn.Sequential(
        nn.Conv2d(c, 20, 5),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(50 * side(h) * side(w), 500),
        nn.ReLU(),
        nn.Linear(500, num_classes),
    )


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers and a residual add; a strided 1×1 conv-BN shortcut when shapes change."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetMini(nn.Module):
    """ResNet-20-like network: a stem and three stages of ``blocks`` BasicBlocks each."""

    def __init__(self, in_channels: int, num_classes: int, widths=(16, 32, 64), blocks: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


@MODELS.register("resnet_mini")
def resnet_mini(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ConfigError(f"resnet_mini needs image inputs (C, H, W), got shape {input_shape}")
    return ResNetMini(input_shape[0], num_classes)


@MODELS.register("cnn1d")
def cnn1d(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    if len(input_shape) != 2:
        raise ConfigError(f"cnn1d needs 1-D inputs (C, L), got shape {input_shape}")
    c, length = input_shape
    return nn.Sequential(
        nn.Conv1d(c, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Conv1d(32, 64, 5, stride=2, padding=2), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Conv1d(64, 64, 3, stride=2, padding=1), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(64 * (((length - 1) // 2) // 2 + 1), 128), nn.ReLU(),
        nn.Linear(128, num_classes),
    )


class _Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (the layout of timm's ViT blocks)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, _ = x.shape
        qkv = self.qkv(x)
        inner = qkv.shape[-1] // 3  # heads × head_dim: narrower than x once structured pruning removed heads
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, inner // self.num_heads).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, inner))


class ViTBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _conv_stem(c: int, dim: int, patch: int) -> nn.Sequential:
    if patch < 1 or patch & (patch - 1):
        raise ConfigError(f"ViTMini(stem='conv') downsamples by stride-2 convolutions, so patch must be a power of "
                          f"two; got patch={patch}")
    width = max(dim // 4, 1)
    layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1), nn.ReLU()]
    for _ in range(patch.bit_length() - 1):
        layers += [nn.Conv2d(width, min(2 * width, dim), 3, 2, padding=1), nn.ReLU()]
        width = min(2 * width, dim)
    return nn.Sequential(*layers, nn.Conv2d(width, dim, 1))


class ViTMini(nn.Module):
    """A small Vision Transformer (Dosovitskiy et al. 2021): patches, a class token, learned positions, ``depth``
    pre-norm blocks, the class token's LayerNorm'd features classified.

    ``stem``: ``patch`` embeds each ``patch``×``patch`` patch with one convolution (ViT); ``conv`` uses a 3×3
    convolution to ``dim/4`` channels, then stride-2 3×3 convolutions (doubling the channels, capped at ``dim``)
    down to the patch grid, then a 1×1 convolution to ``dim`` (Xiao et al. 2021's convolutional stem; ``patch``
    must then be a power of two). Either way the blocks see one token per patch.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, patch: int = 4, dim: int = 64,
                 depth: int = 6, num_heads: int = 4, stem: str = "patch") -> None:
        super().__init__()
        c, h, w = input_shape
        if stem not in ("patch", "conv"):
            raise ConfigError(f"ViTMini stem must be 'patch' or 'conv', got {stem!r}")
        self.patch_embed = _conv_stem(c, dim, patch) if stem == "conv" else nn.Conv2d(c, dim, patch, patch)
        tokens = (h // patch) * (w // patch) + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.blocks = nn.ModuleList([ViTBlock(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def embed(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


@MODELS.register("vit_mini")
def vit_mini(input_shape: tuple[int, ...], num_classes: int, patch: int | None = None, dim: int = 64, depth: int = 6,
             num_heads: int = 4, stem: str = "patch") -> nn.Module:
    if len(input_shape) != 3 or min(input_shape[1:]) < 8:
        raise ConfigError(f"vit_mini needs image inputs (C, H, W) of at least 8×8, got shape {input_shape}")
    if patch is None:
        patch = 4 if min(input_shape[1:]) >= 16 else 2
    if dim % num_heads:
        raise ConfigError(f"vit_mini dim={dim} is not divisible by num_heads={num_heads}: pick a dim that is a "
                          "multiple of num_heads")
    return ViTMini(input_shape, num_classes, patch=patch, dim=dim, depth=depth, num_heads=num_heads, stem=stem)
