"""Training and evaluation on in-memory data.

Deterministic for a given seed on the CPU: the seed fixes initial weights (when the caller seeds
before building the model), shuffling and dropout. CUDA is used when present unless ``device`` says
otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.data.base import DataSplits, iterate_batches
from prunekit.errors import ConfigError, TrainingDivergedError
from prunekit.training import distributed
from prunekit.training.phase import SCHEDULES, TrainHistory, optimizer_step, run_phase, scheduled_lr, stateful

__all__ = ["TrainConfig", "EvalResult", "train", "evaluate", "default_device", "seed_everything"]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training (or fine-tuning) run.

    Attributes:
        epochs: passes over the training split.
        lr: peak learning rate.
        batch_size: mini-batch size.
        optimizer: ``sgd`` (with Nesterov momentum), ``adam`` or ``adamw``.
        momentum: SGD momentum.
        weight_decay: the decay coefficient. ``sgd`` and ``adam`` add it as an L2 penalty to the gradient
            (``g + weight_decay·w``; with ``adam`` the penalty is rescaled by the adaptive step, so a large value such
            as 0.05 can stall training); ``adamw`` decouples it (Loshchilov & Hutter 2019): after the Adam step,
            ``w ← w - lr·weight_decay·w``, whatever the gradient.
        schedule: ``cosine`` (to zero over the run), ``constant`` or ``step`` (×0.1 at 50%, 75%).
        warmup: the fraction of the run's steps (in [0, 1)) over which the learning rate first rises linearly from
            ``lr / W`` to ``lr`` (``W`` warm-up steps); ``schedule`` then runs over the remaining steps. 0 = none.
        augment: ``none``, or ``shift``: translate each training input by up to ``shift_pixels``
            along each spatial axis (filled with the input's minimum, i.e. the background).
        shift_pixels: the largest translation of ``shift``.
    """

    epochs: int = 10
    lr: float = 0.05
    batch_size: int = 64
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    augment: str = "none"
    shift_pixels: int = 2
    warmup: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1:
            raise ConfigError(f"need epochs ≥ 0, batch_size ≥ 1; got epochs={self.epochs}, "
                              f"batch_size={self.batch_size}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be a finite number > 0 (the peak learning rate), got {self.lr!r}")
        if not (isinstance(self.momentum, (int, float)) and 0 <= self.momentum < 1):
            raise ConfigError(f"momentum must be in [0, 1) (0 = plain SGD, 0.9 typical), got {self.momentum!r}")
        if not (isinstance(self.weight_decay, (int, float)) and math.isfinite(self.weight_decay)
                and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be a finite number ≥ 0 (0 = none, 1e-4 typical), "
                              f"got {self.weight_decay!r}")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of: adam, adamw, sgd")
        if not (isinstance(self.warmup, (int, float)) and not isinstance(self.warmup, bool)
                and 0 <= self.warmup < 1):
            raise ConfigError(f"warmup must be a fraction of the run's steps in [0, 1) (0 = none, 0.05 typical), "
                              f"got {self.warmup!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose one of: {', '.join(SCHEDULES)}")
        if self.augment not in ("none", "shift"):
            raise ConfigError(f"unknown augment {self.augment!r}; choose one of: none, shift")
        if self.shift_pixels < 0:
            raise ConfigError(f"shift_pixels must be ≥ 0, got {self.shift_pixels}")


@dataclass(frozen=True)
class EvalResult:
    accuracy: float
    loss: float


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translates each sample of ``x`` (N, C, *spatial) by a random integer offset per spatial axis."""
    spatial = x.dim() - 2
    if max_shift == 0 or spatial < 1:
        return x
    pad = [max_shift] * (2 * spatial)
    padded = F.pad(x, pad, value=float(x.min()))
    offsets = torch.randint(0, 2 * max_shift + 1, (len(x), spatial), generator=gen)
    out = torch.empty_like(x)
    for combo in offsets.unique(dim=0):
        idx = (offsets == combo).all(1).nonzero().squeeze(1)
        slices = tuple(slice(int(o), int(o) + n) for o, n in zip(combo, x.shape[2:], strict=True))
        out[idx] = padded[(idx, slice(None), *slices)]
    return out


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    """The learning rate of 0-based optimiser step ``step`` of a run of ``total`` steps
    (:func:`~prunekit.training.phase.scheduled_lr`: ``cfg.warmup``, then ``cfg.schedule``)."""
    return scheduled_lr(cfg.lr, cfg.schedule, step, total, cfg.warmup)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":  # weight decay as an L2 term of the gradient (kept: earlier results used it)
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":  # decoupled weight decay
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                           nesterov=cfg.momentum > 0)


def _diverged(value: float, step: int, steps_per_epoch: int, cfg: TrainConfig,
              opt: torch.optim.Optimizer) -> TrainingDivergedError:
    """The error for a non-finite loss at 0-based optimiser ``step``: where, at which learning rate, the fix."""
    lr_now = opt.param_groups[0]["lr"]
    return TrainingDivergedError(
        f"training diverged: the loss is {value} at step {step + 1} (epoch {step // steps_per_epoch + 1} of "
        f"{cfg.epochs}, batch {step % steps_per_epoch + 1} of {steps_per_epoch}) with learning rate {lr_now:.4g} "
        f"(TrainConfig.lr={cfg.lr:g}, weight_decay={cfg.weight_decay:g}, momentum={cfg.momentum:g}, schedule "
        f"{cfg.schedule!r}, optimizer {cfg.optimizer!r}); the weights are no longer finite. Fix: lower the "
        f"{_suspect(cfg)}, or check the data and the loss (a penalty's strength).")


def _suspect(cfg: TrainConfig) -> str:
    """The setting most likely to have made training diverge, with a safer value."""
    if cfg.weight_decay > 0.01 and cfg.weight_decay * cfg.lr >= 1:  # decay alone overshoots: w ← (1 - lr·wd)·w
        return f"weight decay (lr × weight_decay = {cfg.lr * cfg.weight_decay:g} ≥ 1; e.g. weight_decay=1e-4)"
    return f"learning rate (e.g. lr={cfg.lr / 10:g})"


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512,
             keywords: dict[str, torch.Tensor] | None = None) -> EvalResult:
    """Top-1 accuracy (a fraction in [0, 1]) and mean cross-entropy of ``model`` on ``(x, y)``; ``keywords``
    (e.g. an attention mask, one row per input) are sliced with the batch and passed by name."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    for start, (xb, yb) in zip(range(0, len(x), batch_size), iterate_batches(x, y, batch_size), strict=True):
        kw = {k: v[start:start + batch_size].to(device) for k, v in (keywords or {}).items()}
        xb, yb = xb.to(device), yb.to(device)
        out = model(xb, **kw)
        logits = getattr(out, "logits", out)  # a Hugging Face classifier's output, or the logits themselves
        loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
    model.train(was_training)
    return EvalResult(accuracy=correct / len(x), loss=loss_sum / len(x))


def train(
    model: nn.Module,
    data: DataSplits,
    cfg: TrainConfig,
    seed: int = 0,
    on_step: Callable[[int, int], None] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> TrainHistory:
    """Trains ``model`` on ``data.x_train`` with the settings of ``cfg``.

    Under torchrun (:mod:`prunekit.training.distributed`) every rank draws the same global batches, computes on
    its share in DistributedDataParallel and checks that its masks and architecture equal rank 0's before and
    after. Inside a run, the run's journal (:mod:`prunekit.training.journal`) checkpoints every epoch and lets a
    resumed run skip or continue this phase.

    Args:
        on_step: called after every optimiser step with ``(step, total_steps)``; gradual pruning
            uses it. A :class:`~prunekit.training.phase.StepHook` (its state checkpointed) lets a resumed run
            continue the phase from its last epoch; another callback makes it train again from its start.
        loss_fn: ``loss_fn(logits, targets, inputs)``; default cross-entropy. Distillation passes
            its own.
        progress: show a progress bar.
    """
    hook = on_step if stateful(on_step) else None  # its state is checkpointed: the phase resumes as any other
    replayable = on_step is None or hook is not None  # a plain callback keeps state elsewhere: the phase reruns
    return run_phase(model, lambda: _Loop(model, data, cfg, seed, on_step, loss_fn), cfg.epochs, desc, progress,
                     replayable, hook)


class _Loop:
    """The state of one training phase: model (DDP-wrapped under torchrun), optimiser, generator, step."""

    def __init__(self, model, data, cfg, seed, on_step, loss_fn) -> None:
        self.model, self.data, self.cfg, self.on_step, self.loss_fn = model, data, cfg, on_step, loss_fn
        self.device = next(model.parameters()).device
        self.gen = torch.Generator().manual_seed(seed)  # the same on every rank: each takes its share of a batch
        self.opt = _optimizer(model, cfg)
        self.steps_per_epoch = math.ceil(len(data.x_train) / cfg.batch_size)
        self.total = self.steps_per_epoch * cfg.epochs
        self.history = TrainHistory()
        self.step = 0
        self.net = distributed.wrap(model)  # a new DDP wrapper each phase: after structural pruning, the new model
        self.diverged = lambda value: _diverged(value, self.step, self.steps_per_epoch, cfg, self.opt)

    def epoch(self, bar) -> None:
        cfg, data = self.cfg, self.data
        running = 0.0
        for xb, yb in iterate_batches(data.x_train, data.y_train, cfg.batch_size, True, self.gen):
            if cfg.augment == "shift":
                xb = random_shift(xb, cfg.shift_pixels, self.gen)
            xb, yb, share = distributed.split_batch(xb, yb)  # this rank's part of the global batch
            xb, yb = xb.to(self.device), yb.to(self.device)
            logits = self.net(xb)
            loss = self.loss_fn(logits, yb, xb) if self.loss_fn else F.cross_entropy(logits, yb)
            running += optimizer_step(self, loss, share, learning_rate(cfg, self.step, self.total), self.diverged)
            if self.on_step:
                self.on_step(self.step, self.total)
            bar.update(1)
        self.history.epoch_loss.append(running / self.steps_per_epoch)
        self.history.val_accuracy.append(evaluate(self.model, data.x_val, data.y_val).accuracy)
        bar.set_postfix(loss=f"{self.history.epoch_loss[-1]:.3f}", val_acc=f"{self.history.val_accuracy[-1]:.3f}")
        self.model.train()
