"""Training and inference of text models on tokenised text (:class:`~prunekit.data.tokens.Encoded`).

The same :class:`~prunekit.training.TrainConfig` as for tensors (epochs, lr, batch size, optimiser, schedule);
batches are dynamic (padded to their own longest text). ``loss_fn(model, inputs, idx)`` replaces the default
cross-entropy on the labels: distillation passes its own (:mod:`prunekit.recovery.text`).

Example:
    >>> hist = train_text(model, enc_train, y_train, TrainConfig(epochs=2, lr=5e-5, optimizer="adam"),
    ...                   val=(enc_val, y_val))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from prunekit.data.tokens import Encoded
from prunekit.training import distributed
from prunekit.training.loop import TrainConfig, _diverged, _optimizer, learning_rate
from prunekit.training.phase import TrainHistory, optimizer_step, run_phase

__all__ = ["predict", "embed", "text_accuracy", "train_text"]

TextLoss = Callable[[nn.Module, dict[str, torch.Tensor], list[int]], torch.Tensor]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def predict(model: nn.Module, enc: Encoded, batch_size: int = 64, progress: bool = False, desc: str = "evaluate",
            fn: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
    """``model(**inputs)`` (or ``fn(**inputs)``) for every text, in the original order, in eval mode."""
    was_training = model.training
    model.eval()
    call = fn or model
    out: list[torch.Tensor | None] = [None] * len(enc)
    bar = tqdm(total=len(enc), desc=desc, disable=not progress, leave=False, unit="text")
    for idx, batch in enc.batches(batch_size, device=_device(model)):
        y = call(**batch).float().cpu()
        for k, i in enumerate(idx):
            out[i] = y[k]
        bar.update(len(idx))
    bar.close()
    model.train(was_training)
    return torch.stack(out)  # type: ignore[arg-type]


def embed(model: Any, enc: Encoded, batch_size: int = 64, progress: bool = False, desc: str = "embed"
          ) -> torch.Tensor:
    """Sentence embeddings (``model.embed``) of every text."""
    return predict(model, enc, batch_size, progress, desc, fn=model.embed)


def text_accuracy(model: nn.Module, enc: Encoded, labels: torch.Tensor, batch_size: int = 64,
                  progress: bool = False, desc: str = "evaluate") -> tuple[float, float]:
    """Top-1 accuracy (a fraction) and mean cross-entropy of a classifier."""
    logits = predict(model, enc, batch_size, progress, desc)
    return float((logits.argmax(1) == labels).float().mean()), float(F.cross_entropy(logits, labels))


def train_text(model: nn.Module, enc: Encoded, labels: torch.Tensor | None, cfg: TrainConfig, seed: int = 0,
               loss_fn: TextLoss | None = None, val: tuple[Encoded, torch.Tensor] | None = None,
               progress: bool = True, desc: str = "train") -> TrainHistory:
    """Trains ``model`` on tokenised text; records the mean loss and (with ``val`` labels) accuracy per epoch.

    Without ``loss_fn`` the loss is cross-entropy of ``model(**inputs)`` on ``labels``. A training phase like any
    other (:func:`~prunekit.training.phase.run_phase`): checkpointed and resumable inside a run; under torchrun
    every rank draws the same length-bucketed global batches (``cfg.batch_size`` texts) and computes on its
    share of each (texts ``rank``, ``rank + N``, … of the batch, of similar lengths), in DistributedDataParallel.
    """
    if loss_fn is None and labels is None:
        raise ValueError("train_text needs labels or a loss_fn")
    return run_phase(model, lambda: _TextLoop(model, enc, labels, cfg, seed, loss_fn, val), cfg.epochs, desc,
                     progress)


def _cross_entropy(labels: torch.Tensor) -> TextLoss:
    def loss(model: nn.Module, inputs: dict[str, torch.Tensor], idx: list[int]) -> torch.Tensor:
        return F.cross_entropy(model(**inputs), labels[idx].to(inputs["input_ids"].device))

    return loss


class _TextLoop:
    """One text training phase's state (see :class:`~prunekit.training.phase.PhaseLoop`)."""

    def __init__(self, model, enc, labels, cfg, seed, loss_fn, val) -> None:
        self.model, self.enc, self.cfg, self.val = model, enc, cfg, val
        self.device = _device(model)
        self.gen = torch.Generator().manual_seed(seed)  # the same on every rank: each takes its share of a batch
        self.opt = _optimizer(model, cfg)
        self.steps_per_epoch = math.ceil(len(enc) / cfg.batch_size)
        self.total = self.steps_per_epoch * cfg.epochs
        self.history = TrainHistory()
        self.step = 0
        self.net = distributed.wrap_call(model, loss_fn or _cross_entropy(labels))
        self.diverged = lambda value: _diverged(value, self.step, self.steps_per_epoch, cfg, self.opt)

    def epoch(self, bar) -> None:
        cfg = self.cfg
        running = 0.0
        for batch_idx in self.enc.order(cfg.batch_size, True, self.gen):
            idx, share = distributed.split_indices(batch_idx)  # this rank's texts of the global batch
            loss = self.net(self.enc.collate(idx, self.device), idx)
            running += optimizer_step(self, loss, share, learning_rate(cfg, self.step, self.total), self.diverged)
            bar.update(1)
        self.history.epoch_loss.append(running / self.steps_per_epoch)
        if self.val is not None:
            self.history.val_accuracy.append(text_accuracy(self.model, self.val[0], self.val[1], cfg.batch_size)[0])
            bar.set_postfix(loss=f"{self.history.epoch_loss[-1]:.3f}", val_acc=f"{self.history.val_accuracy[-1]:.3f}")
        self.model.train()
