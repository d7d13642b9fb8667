"""Sparsity regularisers: train with a penalty that drives structures to zero, then prune them.

Each regulariser adds λ·R(θ) to the training loss and names the mask granularity that removes what
it drove to zero:

- ``l1``: R = Σ|w| over the prunable weights (Tibshirani 1996; the L1 baseline of Han et al.
  2015), then element-wise magnitude pruning.
- ``group_lasso``: R = Σ_g √|g|·‖W_g‖₂ over the output filters (rows) of every prunable layer
  (Yuan & Lin 2006; Wen et al. 2016, "Learning structured sparsity in DNNs"), then filter pruning
  by L2 norm.
- ``bn_l1``: R = Σ|γ| over BatchNorm scales (Liu et al. 2017, "Network slimming"), then the
  channels with the smallest |γ| are masked (γ and β set to zero, so the channel outputs zero).

Example:
    >>> reg = RegularizerConfig(kind="group_lasso", strength=1e-4)
    >>> train(model, data, cfg, loss_fn=regularized_loss(model, reg, names))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError
from prunekit.masks import MaskSet
from prunekit.pruners.allocations import kth_mask
from prunekit.pruners.unstructured import check_sparsity
from prunekit.registry import Registry
from prunekit.training import distributed

__all__ = ["REGULARIZERS", "Regularizer", "RegularizerConfig", "regularized_loss", "bn_channel_masks",
           "BN_TYPES"]

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class Regularizer:
    """``penalty(model, names)``: R(θ) over the weights ``names``; ``granularity``: what to prune after."""

    name: str
    penalty: Callable[[nn.Module, list[str]], torch.Tensor]
    granularity: str
    criterion: str
    doc: str = ""


REGULARIZERS: Registry = Registry("regularizer")


@dataclass(frozen=True)
class RegularizerConfig:
    """``kind``: a name in ``REGULARIZERS``; ``strength``: λ (≥ 0)."""

    kind: str = "l1"
    strength: float = 1e-4

    def __post_init__(self) -> None:
        REGULARIZERS.get(self.kind)
        if not self.strength >= 0:
            raise ConfigError(f"regularize.strength (λ) must be ≥ 0, got {self.strength}")


def _l1(model: nn.Module, names: list[str]) -> torch.Tensor:
    params = dict(model.named_parameters())
    return sum(params[n].abs().sum() for n in names)


def _group_lasso(model: nn.Module, names: list[str]) -> torch.Tensor:
    params = dict(model.named_parameters())
    total = 0.0
    for n in names:
        w = params[n].reshape(params[n].shape[0], -1)
        total = total + (w.shape[1] ** 0.5) * w.norm(dim=1).sum()
    return total


def _bn_l1(model: nn.Module, names: list[str]) -> torch.Tensor:
    gammas = [m.weight.abs().sum() for m in model.modules() if isinstance(m, BN_TYPES) and m.affine]
    if not gammas:
        raise ConfigError("regularizer 'bn_l1' (network slimming) needs BatchNorm layers with affine "
                          "scales, and this model has none; use 'l1' or 'group_lasso'")
    return sum(gammas)


for _r in (
    Regularizer("l1", _l1, "element", "l1", "λ·Σ|w| on the prunable weights"),
    Regularizer("group_lasso", _group_lasso, "filter", "l2", "λ·Σ √|g|·‖W_g‖₂ over output filters"),
    Regularizer("bn_l1", _bn_l1, "bn_channel", "l1", "λ·Σ|γ| over BatchNorm scales (network slimming)"),
):
    REGULARIZERS.register(_r.name)(_r)


def regularized_loss(model: nn.Module, cfg: RegularizerConfig, names: list[str],
                     base: Callable | None = None) -> Callable:
    """A ``loss_fn`` for :func:`prunekit.training.train`: base loss (default CE) + λ·R(θ)."""
    reg = REGULARIZERS.get(cfg.kind)
    reg.penalty(model, names)  # fail before training if the model cannot carry this penalty

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        loss = base(logits, targets, inputs) if base else F.cross_entropy(logits, targets)
        return loss + cfg.strength * reg.penalty(model, names)

    return loss_fn


def bn_channel_masks(model: nn.Module, target: float, masks: MaskSet | None = None) -> MaskSet:
    """Network slimming's pruning step: masks the fraction ``target`` of all BN channels with the
    smallest |γ| (one global ranking), zeroing γ and β so those channels output exactly zero.

    Every BN layer keeps at least one channel.
    """
    check_sparsity(target, "target")
    bns = {n: m for n, m in model.named_modules() if isinstance(m, BN_TYPES) and m.affine}
    if not bns:
        raise ConfigError("bn_channel pruning needs BatchNorm layers with affine scales; this model has none")
    masks = masks or MaskSet(model)
    pooled = torch.cat([m.weight.detach().abs().cpu() for m in bns.values()])
    keep = distributed.agree_masks({"all": kth_mask(pooled, round(target * pooled.numel()))})["all"]
    start = 0
    for n, m in bns.items():
        k = keep[start : start + m.num_features].clone()
        start += m.num_features
        if k.sum() == 0:
            k[torch.argmax(m.weight.detach().abs().cpu())] = 1
        masks.set(f"{n}.weight", k)
        masks.set(f"{n}.bias", k)
    return masks
