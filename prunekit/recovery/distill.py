"""Recovery methods: what loss the fine-tuning after pruning minimises.

- ``finetune``: plain cross-entropy on the labels, usually at a lower learning rate than training.
- ``distill``: knowledge distillation from the dense model (the teacher), Hinton et al. 2015,
  "Distilling the knowledge in a neural network":
  L = α·T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)) + (1 − α)·CE(z_s, y),
  optionally plus feature matching at named layers (FitNets, Romero et al. 2015, without the
  regressor, so the shapes must agree): β·Σ_l MSE(f_s^l, f_t^l).

Example:
    >>> teacher = copy.deepcopy(model).eval()          # before pruning
    >>> ... prune model ...
    >>> recover(model, data, TrainConfig(epochs=3, lr=0.01),
    ...         RecoveryConfig(method="distill", distill=DistillConfig(temperature=4.0)), teacher)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.data import DataSplits
from prunekit.errors import ConfigError
from prunekit.registry import Registry
from prunekit.training import TrainConfig, train

__all__ = ["RECOVERY", "DistillConfig", "RecoveryConfig", "distill_loss", "recover", "recovery_loss"]

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: Recovery methods by name: ``method(student, teacher, cfg) -> context manager yielding a loss_fn``.
RECOVERY: Registry = Registry("recovery method")


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation settings.

    Attributes:
        temperature: T, softens both distributions (Hinton et al. use 2–20).
        alpha: weight α of the distillation term; 1 − α goes to the label cross-entropy.
        features: module names (same in student and teacher) whose outputs are matched with MSE.
        feature_weight: β, the weight of the feature term.
        embedding_weight, embedding_loss: text models only: the weight of the sentence-embedding term and its
            form, ``cosine`` (1 − cos) or ``mse`` (see :mod:`prunekit.recovery.text`).
        hidden_weight, attention_weight: text models only: TinyBERT-style terms (Jiao et al. 2020), MSE of every
            layer's hidden states and of its head-averaged attention maps.
        text: text models only: what the student learns on, ``labelled`` (the training split) or ``all`` (also
            the data's unlabelled text; the label term skips the texts that have none).
    """

    temperature: float = 4.0
    alpha: float = 0.9
    features: list[str] = field(default_factory=list)
    feature_weight: float = 1.0
    embedding_weight: float = 0.0
    embedding_loss: str = "cosine"
    hidden_weight: float = 0.0
    attention_weight: float = 0.0
    text: str = "labelled"

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"distill.temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"distill.alpha must be in [0, 1], got {self.alpha}")
        for k in ("feature_weight", "embedding_weight", "hidden_weight", "attention_weight"):
            if not getattr(self, k) >= 0:
                raise ConfigError(f"distill.{k} must be ≥ 0, got {getattr(self, k)}")
        if self.embedding_loss not in ("cosine", "mse"):
            raise ConfigError(f"unknown distill.embedding_loss {self.embedding_loss!r}; choose one of: cosine, mse")
        if self.text not in ("labelled", "all"):
            raise ConfigError(f"unknown distill.text {self.text!r}; choose one of: all, labelled")

    def reads_text(self) -> list[str]:
        """The keys set here that only text models read."""
        defaults = DistillConfig.__dataclass_fields__
        keys = ("embedding_weight", "embedding_loss", "hidden_weight", "attention_weight", "text")
        return [k for k in keys if getattr(self, k) != defaults[k].default]


@dataclass(frozen=True)
class RecoveryConfig:
    """``method``: ``finetune`` or ``distill`` (teacher: the dense model); ``distill``: its settings."""

    method: str = "finetune"
    distill: DistillConfig = field(default_factory=DistillConfig)

    def __post_init__(self) -> None:
        RECOVERY.get(self.method)


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                 temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al.'s loss: α·T²·KL(p_t^T ‖ p_s^T) + (1 − α)·CE(z_s, y)."""
    t = temperature
    kd = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.log_softmax(teacher_logits / t, dim=1),
                  reduction="batchmean", log_target=True)
    ce = F.cross_entropy(student_logits, targets)
    return alpha * t * t * kd + (1.0 - alpha) * ce


@contextlib.contextmanager
def _capture(model: nn.Module, names: list[str], role: str) -> Iterator[dict[str, torch.Tensor]]:
    store: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ConfigError(f"distill.features: the {role} has no module {missing[0]!r}; "
                          f"choose among: {', '.join(n for n in modules if n)}")
    handles = [modules[n].register_forward_hook(lambda _m, _i, out, n=n: store.__setitem__(n, out))
               for n in names]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


@RECOVERY.register("finetune")
@contextlib.contextmanager
def _finetune(student: nn.Module, teacher: nn.Module | None, cfg: RecoveryConfig) -> Iterator[LossFn | None]:
    yield None  # train()'s default cross-entropy


@RECOVERY.register("distill")
@contextlib.contextmanager
def _distill(student: nn.Module, teacher: nn.Module | None, cfg: RecoveryConfig) -> Iterator[LossFn]:
    if teacher is None:
        raise ConfigError("recovery method 'distill' needs a teacher: pass the dense model as teacher= "
                          "(a recipe does so automatically), or use method 'finetune'")
    d = cfg.distill
    teacher.eval()
    with _capture(student, d.features, "student") as fs, _capture(teacher, d.features, "teacher") as ft:

        def loss_fn(logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                t_logits = teacher(inputs)
            loss = distill_loss(logits, t_logits, targets, d.temperature, d.alpha)
            for n in d.features:
                if fs[n].shape != ft[n].shape:
                    raise ConfigError(f"distill.features: {n!r} has shape {tuple(fs[n].shape)} in the pruned "
                                      f"model but {tuple(ft[n].shape)} in the teacher; match a layer whose "
                                      "output size pruning did not change (e.g. the logits' input)")
                loss = loss + d.feature_weight * F.mse_loss(fs[n], ft[n])
            return loss

        yield loss_fn


def recovery_loss(student: nn.Module, cfg: RecoveryConfig, teacher: nn.Module | None = None):
    """A context manager yielding the ``loss_fn`` for :func:`prunekit.training.train` (``None``: CE)."""
    return RECOVERY.get(cfg.method)(student, teacher, cfg)


def recover(model: nn.Module, data: DataSplits, train_cfg: TrainConfig, cfg: RecoveryConfig,
            teacher: nn.Module | None = None, seed: int = 0, progress: bool = True):
    """Fine-tunes ``model`` with the recovery method of ``cfg``; returns the training history."""
    with recovery_loss(model, cfg, teacher) as loss_fn:
        return train(model, data, train_cfg, seed=seed, loss_fn=loss_fn, progress=progress,
                     desc=f"recover ({cfg.method})")
