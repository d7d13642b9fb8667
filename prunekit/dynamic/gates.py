"""Dynamic channel gating after Feature Boosting and Suppression (FBS, Gao et al. 2019): a small predictor per gated
conv looks at the block's input — global average pool, Linear, ReLU: saliencies ``s = ReLU(W·GAP(x) + b)`` — and
only the top ``k = ⌈keep·C⌉`` output channels by saliency are computed for that input; the rest are skipped, and
so are the matching input channels of the next conv.

Where this departs from FBS: the kept channels are not *scaled* by their saliency; the gate's forward value is the
0/1 mask and the predictor learns through it by a straight-through estimator (``mask + s − stop_grad(s)``). So
``keep = 1`` is the static model exactly, and a gated block computes the same function at batch 1 with gathered
weights (only the chosen filters, only the matching input slices of the next conv) as with masks.

Only a residual block's inner conv is gated (``conv1`` of a ``BasicBlock``): the output channels of ``conv2`` (and of
the stem and the shortcut) are added to the residual stream, so skipping them for one input would need the same
channels skipped in every block that shares the stream.

Serving: at batch 1 the gathered path runs (fewer MACs, real smaller convs); a batch of several inputs runs the
masked dense convs (each input its own channels; no saving).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.data.base import DataSplits
from prunekit.dynamic._loop import CosineLoop
from prunekit.dynamic.chain import Chain
from prunekit.errors import ConfigError, PruningError
from prunekit.models.builtin import BasicBlock
from prunekit.training.phase import run_phase

__all__ = ["ChannelGateConfig", "GatedModel", "gate_channels", "train_gates"]


@dataclass(frozen=True)
class ChannelGateConfig:
    """``keep``: fraction of each gated conv's output channels computed per input; ``layers``: the convs to gate
    (``layers.0.conv1`` …; empty: every block's inner conv); ``epochs``/``lr``: fine-tuning of the predictors and the
    network with the gates on."""

    keep: float = 0.5
    layers: list[str] = field(default_factory=list)
    epochs: int = 2
    lr: float = 0.01
    batch_size: int = 64

    def __post_init__(self) -> None:
        if not 0 < self.keep <= 1:
            raise ConfigError(f"channel_gate.keep must be in (0, 1] (fraction of channels computed), got {self.keep!r}")
        if self.epochs < 0 or not self.lr > 0 or self.batch_size < 1:
            raise ConfigError(f"need epochs ≥ 0, lr > 0, batch_size ≥ 1; got {self.epochs}, {self.lr}, "
                              f"{self.batch_size}")


class GatedBlock(nn.Module):
    """A ``BasicBlock`` whose ``conv1`` output channels are gated per input (the block's own modules, shared)."""

    def __init__(self, block: BasicBlock, keep: float) -> None:
        super().__init__()
        self.block = block
        c_in, c = block.conv1.in_channels, block.conv1.out_channels
        self.k = max(1, math.ceil(keep * c))
        self.predictor = nn.Linear(c_in, c)
        nn.init.zeros_(self.predictor.weight)
        nn.init.ones_(self.predictor.bias)
        self.last_kept: torch.Tensor | None = None

    def saliency(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.predictor(x.mean((2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        s = self.saliency(x)
        if self.k == s.shape[1]:
            self.last_kept = None
            return b(x)
        if x.shape[0] == 1 and not self.training:
            return self._gathered(x, s)
        idx = s.topk(self.k, 1).indices
        mask = torch.zeros_like(s).scatter_(1, idx, 1.0)
        gate = mask + s - s.detach() if self.training else mask
        self.last_kept = idx
        h = b.relu(b.bn1(b.conv1(x))) * gate[:, :, None, None]
        return b.relu(b.bn2(b.conv2(h)) + b.shortcut(x))

    def _gathered(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Batch 1: only the chosen filters of conv1 and the matching input slices of conv2 are computed."""
        b = self.block
        idx = s[0].topk(self.k).indices
        self.last_kept = idx[None]
        c1, bn = b.conv1, b.bn1
        h = F.conv2d(x, c1.weight[idx], None, c1.stride, c1.padding, c1.dilation)
        h = F.batch_norm(h, bn.running_mean[idx], bn.running_var[idx], bn.weight[idx], bn.bias[idx], False, 0.0,
                         bn.eps)
        h = F.relu(h)
        c2 = b.conv2
        out = F.conv2d(h, c2.weight[:, idx], c2.bias, c2.stride, c2.padding, c2.dilation)
        return b.relu(b.bn2(out) + b.shortcut(x))


class GatedModel(nn.Module):
    """A chain whose gated blocks compute ``k`` of their inner channels per input."""

    dynamic_method = "channel_gate"

    def __init__(self, chain: Chain, gated: list[int], keep: float) -> None:
        super().__init__()
        self.chain, self.gated, self.keep = chain, sorted(gated), keep
        self.gates = nn.ModuleDict({str(i): GatedBlock(chain.blocks[i], keep) for i in self.gated})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.chain.stem(x)
        for i, block in enumerate(self.chain.blocks):
            h = self.gates[str(i)](h) if str(i) in self.gates else block(h)
        return self.chain.tail(h)


def _coupling(name: str) -> str:
    return (f"the output channels of {name} are added to the residual stream (its BatchNorm's output + the shortcut, "
            "and every later block reads the sum), so skipping them for one input would skip them in every block that "
            "shares the stream; gate a block's inner conv instead (layers.N.conv1)")


def gate_channels(model: nn.Module, example: torch.Tensor, cfg: ChannelGateConfig) -> GatedModel:
    """Wraps ``model`` (a chain of ``BasicBlock``s, e.g. ``resnet_mini``) with gates on the convs ``cfg.layers``."""
    chain = Chain.of(model, example[:1])
    inner = {f"{n}.conv1": i for i, (n, b) in enumerate(zip(chain.names, chain.blocks, strict=True))
             if isinstance(b, BasicBlock)}
    if not inner:
        raise PruningError(f"{type(model).__name__}: channel_gate gates the inner conv of residual BasicBlocks "
                           "(resnet_mini); this model has none")
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    gated = []
    for name in cfg.layers or sorted(inner, key=inner.get):
        if name in inner:
            gated.append(inner[name])
        elif name in convs:
            raise ConfigError(f"channel_gate cannot gate {name}: {_coupling(name)}")
        else:
            raise ConfigError(f"channel_gate.layers: {name!r} is not a conv of this model; gateable: "
                              f"{', '.join(sorted(inner, key=inner.get))}")
    return GatedModel(chain, gated, cfg.keep).to(example.device)


def train_gates(model: GatedModel, data: DataSplits, cfg: ChannelGateConfig, seed: int = 0,
                progress: bool = False) -> list[float]:
    """Fine-tunes the network and its predictors with the gates on (cross-entropy; cosine learning rate). A training
    phase like any other (checkpointed and resumable inside a run; under torchrun each rank computes on its share of
    every global batch, :mod:`prunekit.training.phase`)."""
    torch.manual_seed(seed)
    hist = run_phase(model, lambda: _GateLoop(model, data, cfg, seed), cfg.epochs, "channel gates", progress)
    model.eval()
    return hist.epoch_loss


class _GateLoop(CosineLoop):
    """The gated fine-tuning: SGD on the network and its predictors, cross-entropy."""

    def __init__(self, model: GatedModel, data: DataSplits, cfg: ChannelGateConfig, seed: int) -> None:
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
        super().__init__(model, data, cfg.batch_size, cfg.epochs, cfg.lr, seed, opt,
                         lambda m, x, y: F.cross_entropy(m(x), y))
