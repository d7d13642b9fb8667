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
from prunekit.training.loop import TrainConfig, TrainHistory, _diverged, _lr_factor, _optimizer

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

    Without ``loss_fn`` the loss is cross-entropy of ``model(**inputs)`` on ``labels``.
    """
    if loss_fn is None and labels is None:
        raise ValueError("train_text needs labels or a loss_fn")
    device = _device(model)
    gen = torch.Generator().manual_seed(seed)
    opt = _optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(enc) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    history = TrainHistory()
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, unit="step")
    step = 0
    model.train()
    for _ in range(cfg.epochs):
        running = 0.0
        for idx, batch in enc.batches(cfg.batch_size, True, gen, device):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * _lr_factor(cfg.schedule, step / max(total, 1))
            if loss_fn is not None:
                loss = loss_fn(model, batch, idx)
            else:
                loss = F.cross_entropy(model(**batch), labels[idx].to(device))  # type: ignore[index]
            value = float(loss.detach())
            if not math.isfinite(value):
                bar.close()
                raise _diverged(value, step, steps_per_epoch, cfg, opt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            running += value
            bar.update(1)
        history.epoch_loss.append(running / steps_per_epoch)
        if val is not None:
            history.val_accuracy.append(text_accuracy(model, val[0], val[1], cfg.batch_size)[0])
            bar.set_postfix(loss=f"{history.epoch_loss[-1]:.3f}", val_acc=f"{history.val_accuracy[-1]:.3f}")
        model.train()
    bar.close()
    return history
