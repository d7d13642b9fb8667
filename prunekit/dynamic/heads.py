"""Exit heads (BranchyNet, Teerapittayanon et al. 2016): small classifiers attached at a block boundary.

Heads are registered by name in :data:`HEADS`; each is built from data alone (kind, feature kind, channels,
classes, width), so a saved dynamic model rebuilds its heads without running code named in a file.

- ``pool``: global average pool (class token for ViT tokens, after LayerNorm) → Linear. Cheapest.
- ``conv``: one 3×3 stride-2 conv–BN–ReLU of ``width`` channels, an average pool to a 4×4 grid (8 positions
  for 1-D), then Linear — the layout of the digit survives, which a global pool of early, low-level features
  loses. (For tokens: LayerNorm → class token → Linear(D, width) → GELU → Linear.)
"""

from __future__ import annotations

from torch import nn

from prunekit.errors import ConfigError
from prunekit.registry import Registry

__all__ = ["HEADS", "build_head"]

#: Head builders by name: ``builder(features, channels, num_classes, width) -> nn.Module``.
HEADS: Registry = Registry("exit head")


class _ClassToken(nn.Module):
    def forward(self, x):
        return x[:, 0]


def _pool(features: str) -> list[nn.Module]:
    if features == "image":
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if features == "sequence":
        return [nn.AdaptiveAvgPool1d(1), nn.Flatten()]
    if features == "flat":
        return []
    raise ConfigError(f"unknown feature kind {features!r}; choose one of: image, sequence, tokens, flat")


@HEADS.register("pool")
def pool_head(features: str, channels: int, num_classes: int, width: int) -> nn.Module:
    if features == "tokens":
        return nn.Sequential(nn.LayerNorm(channels), _ClassToken(), nn.Linear(channels, num_classes))
    return nn.Sequential(*_pool(features), nn.Linear(channels, num_classes))


@HEADS.register("conv")
def conv_head(features: str, channels: int, num_classes: int, width: int) -> nn.Module:
    if features == "image":
        return nn.Sequential(nn.Conv2d(channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * width, num_classes))
    if features == "sequence":
        return nn.Sequential(nn.Conv1d(channels, width, 3, 2, 1, bias=False), nn.BatchNorm1d(width), nn.ReLU(),
                             nn.AdaptiveAvgPool1d(8), nn.Flatten(), nn.Linear(8 * width, num_classes))
    if features == "tokens":
        return nn.Sequential(nn.LayerNorm(channels), _ClassToken(), nn.Linear(channels, width), nn.GELU(),
                             nn.Linear(width, num_classes))
    _pool(features)  # an unknown kind fails here
    return nn.Sequential(nn.Linear(channels, width), nn.ReLU(), nn.Linear(width, num_classes))


def build_head(kind: str, features: str, channels: int, num_classes: int, width: int) -> nn.Module:
    """A fresh head of registered ``kind`` for features of ``channels`` channels (or token width)."""
    if channels < 1 or num_classes < 1 or width < 1:
        raise ConfigError(f"an exit head needs channels, num_classes and width ≥ 1, got {channels}, {num_classes}, "
                          f"{width}")
    return HEADS.get(kind)(features, channels, num_classes, width)
