"""The training loop that exit heads and channel gates share: (x, y) batches, a cosine learning rate, DDP shares.

A :class:`~prunekit.training.phase.PhaseLoop` (checkpointed and resumable inside a run; under torchrun each rank
computes on its share of every global batch). Subclasses set the optimiser and the loss.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from prunekit.data.base import DataSplits, iterate_batches
from prunekit.training import distributed
from prunekit.training.phase import TrainHistory, optimizer_step, scheduled_lr


class CosineLoop:
    """Epochs over ``data``'s training split; the learning rate follows a cosine from ``lr`` to 0 over the phase."""

    def __init__(self, model: nn.Module, data: DataSplits, batch_size: int, epochs: int, lr: float, seed: int,
                 opt: torch.optim.Optimizer, loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
                 ) -> None:
        self.model, self.data, self.batch_size, self.lr, self.opt = model, data, batch_size, lr, opt
        self.gen = torch.Generator().manual_seed(seed)
        self.steps_per_epoch = math.ceil(len(data.x_train) / batch_size)
        self.total = self.steps_per_epoch * epochs
        self.device = next(model.parameters()).device
        self.step, self.history = 0, TrainHistory()
        self.net = distributed.wrap_call(model, loss)

    def train_mode(self) -> None:
        """Puts the model in training mode before each epoch (a subclass may keep parts in eval mode)."""
        self.model.train()

    def epoch(self, bar) -> None:
        self.train_mode()
        total = 0.0
        for xb, yb in iterate_batches(self.data.x_train, self.data.y_train, self.batch_size, True, self.gen):
            xb, yb, share = distributed.split_batch(xb, yb)  # this rank's part of the global batch
            loss = self.net(xb.to(self.device), yb.to(self.device))
            total += optimizer_step(self, loss, share, scheduled_lr(self.lr, "cosine", self.step, self.total))
            bar.update(1)
        self.history.epoch_loss.append(total / max(1, self.steps_per_epoch))
