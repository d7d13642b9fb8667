"""Sensitivity analysis: prune one group (or one layer's weights) at a time at increasing ratios.

For every prunable group g and every ratio r in ``ratios`` (5% … 90%), the ⌊r·size⌋ lowest-scoring
units of g alone are zeroed (exactly equivalent to removing them, see :mod:`prunekit.importance.masking`)
and the model is evaluated on held-out data; the curves of accuracy and loss against r show which
groups tolerate pruning (Li et al. 2017, §4.1 "sensitivity of each layer to pruning").
Given training inputs (``analyze(..., recalibration=x)``) every evaluation, the unpruned reference
included, first re-estimates the BatchNorm statistics on them (adaptive BN, EagleEye; see
:mod:`prunekit.recovery.bn`): without it, zeroing channels of a residual stream shifts the
input of every later BN, and the curve measures that mismatch as much as the lost channels (resnet_mini
on MNIST, seed 1, ``stem.0`` at 50%: loss rise 5.5 plain, 0.04 recalibrated; seed 0's 2× recipe halves
that stream and loses 0.1 pt after fine-tuning).
``allocate(..., strategy="sensitivity")`` turns the curves into per-group ratios.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import zeroed
from prunekit.recovery.bn import recalibrated_bn
from prunekit.training import EvalResult, evaluate

__all__ = ["Curve", "Sensitivity", "SensitivityConfig", "analyze", "analyze_weights", "DEFAULT_RATIOS"]

DEFAULT_RATIOS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class SensitivityConfig:
    """Attributes:
        ratios: pruning ratios to try, increasing, each in (0, 1).
        max_samples: evaluate on at most this many held-out examples (a seeded subset).
        seed: seeds that subset.
    """

    ratios: tuple[float, ...] = DEFAULT_RATIOS
    max_samples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        r = list(self.ratios)
        if not r or any(not 0 < x < 1 for x in r) or r != sorted(set(r)):
            raise ConfigError(f"ratios must be increasing values in (0, 1), got {self.ratios}")
        if self.max_samples < 1:
            raise ConfigError(f"max_samples must be ≥ 1, got {self.max_samples}")


@dataclass
class Curve:
    """One group's (or layer's) accuracy and loss at each ratio."""

    name: str
    size: int
    ratios: list[float]
    accuracy: list[float]
    loss: list[float]


@dataclass
class Sensitivity:
    """All curves plus the unpruned reference."""

    criterion: str
    dense_accuracy: float
    dense_loss: float
    curves: dict[str, Curve] = field(default_factory=dict)
    kind: str = "groups"  # or "weights" (unstructured, per layer)
    recalibrated: bool = False  # BatchNorm statistics re-estimated before every evaluation

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": 1, "criterion": self.criterion, "kind": self.kind,
                "dense_accuracy": self.dense_accuracy, "dense_loss": self.dense_loss,
                "recalibrated": self.recalibrated, "curves": {k: asdict(c) for k, c in self.curves.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sensitivity:
        return cls(d["criterion"], d["dense_accuracy"], d["dense_loss"],
                   {k: Curve(**c) for k, c in d["curves"].items()}, d.get("kind", "groups"),
                   d.get("recalibrated", False))

    def to_markdown(self) -> str:
        """Accuracy drop (pt) per group and ratio; the last column is the largest ratio within 1 pt."""
        ratios = next(iter(self.curves.values())).ratios if self.curves else []
        head = "| group | units | " + " | ".join(f"{r:.0%}" for r in ratios) + " | max ratio ≤1 pt |"
        lines = [f"Criterion `{self.criterion}`; dense accuracy {self.dense_accuracy:.2%}, loss "
                 f"{self.dense_loss:.4f}. Cells: accuracy drop in points when only that group is pruned.", "",
                 head, "|" + "---|" * (len(ratios) + 3)]
        for c in self.curves.values():
            drops = [100 * (self.dense_accuracy - a) for a in c.accuracy]
            ok = [r for r, d in zip(c.ratios, drops, strict=True) if d <= 1.0]
            lines.append(f"| {c.name} | {c.size} | " + " | ".join(f"{d:+.2f}" for d in drops)
                         + f" | {max(ok) if ok else 0:.0%} |")
        return "\n".join(lines) + "\n"


#: ``evaluate(model, x, y) -> EvalResult`` (accuracy and loss); :func:`prunekit.training.evaluate` for tensors.
Evaluate = Callable[[nn.Module, Any, Any], EvalResult]


def _subset(x: Any, y: torch.Tensor, cfg: SensitivityConfig) -> tuple[Any, torch.Tensor]:
    if len(x) <= cfg.max_samples:
        return x, y
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"{len(x)} held-out examples but max_samples {cfg.max_samples}: subset them before (only "
                          "tensor inputs are subset here)")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.max_samples]
    return x[idx], y[idx]


def analyze(graph: DependencyGraph, x: Any, y: torch.Tensor, scores: dict[str, np.ndarray],
            config: SensitivityConfig = SensitivityConfig(), criterion: str = "l2",
            recalibration: torch.Tensor | None = None, evaluate: Evaluate = evaluate,
            groups: list | None = None) -> Sensitivity:
    """Curves of every prunable group of ``graph`` (or of ``groups``), units removed lowest ``scores`` first.

    The model is unchanged afterwards (units are zeroed and restored, BatchNorm statistics too).

    Args:
        recalibration: training inputs (a few hundred) on which BatchNorm statistics are re-estimated
            before every evaluation (see the module docstring); ``None``: the model's own statistics.
        evaluate: accuracy and loss of the model on ``(x, y)``; e.g. tokenised text and
            :func:`prunekit.training.text.text_accuracy` for a text classifier.
    """
    x, y = _subset(x, y, config)
    with recalibrated_bn(graph.model, recalibration):
        base = evaluate(graph.model, x, y)
    out = Sensitivity(criterion, base.accuracy, base.loss, recalibrated=recalibration is not None)
    for g in graph.prunable_groups() if groups is None else groups:
        s = np.where(g.pinned, np.inf, np.asarray(scores[g.name], dtype=np.float64))
        order = np.argsort(s, kind="stable")
        acc, loss = [], []
        for r in config.ratios:
            n = min(int(r * g.size), g.prunable, g.size - 1)
            with zeroed(graph, {g.name: order[:n]}), recalibrated_bn(graph.model, recalibration):
                ev = evaluate(graph.model, x, y)
            acc.append(ev.accuracy)
            loss.append(ev.loss)
        out.curves[g.name] = Curve(g.name, g.size, list(config.ratios), acc, loss)
    return out


def analyze_weights(model: nn.Module, x: Any, y: torch.Tensor, scores: dict[str, torch.Tensor],
                    config: SensitivityConfig = SensitivityConfig(), criterion: str = "l2",
                    evaluate: Evaluate = evaluate) -> Sensitivity:
    """Unstructured sensitivity: per parameter in ``scores``, mask its lowest-scoring fraction r alone."""
    x, y = _subset(x, y, config)
    base = evaluate(model, x, y)
    out = Sensitivity(criterion, base.accuracy, base.loss, kind="weights")
    params = dict(model.named_parameters())
    for name, s in scores.items():
        order = torch.argsort(s.flatten(), stable=True)
        acc, loss = [], []
        for r in config.ratios:
            p = params[name]
            saved = p.detach().clone()
            try:
                with torch.no_grad():
                    p.view(-1)[order[: int(r * s.numel())].to(p.device)] = 0
                ev = evaluate(model, x, y)
            finally:
                with torch.no_grad():
                    p.copy_(saved)
            acc.append(ev.accuracy)
            loss.append(ev.loss)
        out.curves[name] = Curve(name, params[name].numel(), list(config.ratios), acc, loss)
    return out
