"""BatchNorm re-estimation after pruning (adaptive BN): cheap recovery of a pruned network's statistics.

Zeroing or removing channels shifts the statistics that every later BatchNorm sees, so a pruned,
un-fine-tuned network evaluated with the dense running statistics is often near chance and its
accuracy says little about how well it will fine-tune. EagleEye (Li et al. 2020, "EagleEye: Fast
Sub-net Evaluation for Efficient Neural Network Pruning") re-estimates the running mean and
variance on a few training batches first; the resulting accuracy ranks candidates far better.

Example:
    >>> with zeroed(graph, plan), recalibrated_bn(model, x_train[:256]):
    ...     acc = evaluate(model, x_val, y_val).accuracy   # BN statistics of the masked model
    >>> # on exit every BN buffer and the train/eval modes are as before
    >>> reestimate_bn(pruned, x_train[:512])                  # or keep the new statistics
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["recalibrated_bn", "reestimate_bn"]


def _batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def reestimate_bn(model: nn.Module, x: torch.Tensor, batch_size: int = 128) -> int:
    """Replaces every BatchNorm's running statistics by their plain average over ``x`` (kept).

    Only BatchNorm layers run in training mode during the pass (dropout stays off); the weights and
    the model's train/eval mode are unchanged. Returns the number of BatchNorm layers re-estimated.
    """
    bns = _batchnorms(model)
    if not bns or len(x) == 0:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in bns]
    try:
        model.eval()
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
            m.train()
        device = next(model.parameters()).device
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                model(x[i:i + batch_size].to(device))
    finally:
        for m, momentum in zip(bns, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return len(bns)


@contextmanager
def recalibrated_bn(model: nn.Module, x: torch.Tensor | None, batch_size: int = 128) -> Iterator[None]:
    """Within the block the BatchNorm running statistics are the plain average over ``x``; restored after.

    With ``x=None`` or a model without BatchNorm it does nothing.
    """
    bns = _batchnorms(model)
    if x is None or not bns:
        yield
        return
    saved = [(m, m.training, {k: getattr(m, k).clone() for k in
                              ("running_mean", "running_var", "num_batches_tracked")}) for m in bns]
    was_training = model.training
    try:
        reestimate_bn(model, x, batch_size)
        model.eval()
        yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for m, training, buffers in saved:
                for k, v in buffers.items():
                    getattr(m, k).copy_(v)
                m.train(training)
