"""Small built-in models for the built-in data.

Each factory takes ``input_shape`` (C, H, W) or (C, L) and ``num_classes``.

- ``lenet300``: LeNet-300-100 (LeCun et al. 1998; Han et al. 2015 Table 1): 784-300-100-10 MLP.
- ``lenet5``: Caffe's LeNet-5 as pruned by Han et al. 2015: conv 20@5×5, pool, conv 50@5×5, pool,
  fc 500, fc 10 (431K parameters on 28×28 inputs).
- ``resnet_mini``: a ResNet-20-like CNN (He et al. 2016, CIFAR variant) for 28×28 inputs: three
  stages of 16/32/64 channels with BN, residual adds and a strided 1×1-conv downsample path.
- ``cnn1d``: a 1-D CNN for MNIST-1D.
"""

from __future__ import annotations

import math

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
