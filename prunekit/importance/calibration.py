"""Calibration data and the statistics that data-driven criteria score with.

A :class:`Calibration` is a small labelled (or unlabelled) sample of the training data. Before any
criterion runs, :func:`collect_stats` makes one pass over it and records only what the chosen
criterion declares it needs:

- ``gradients``: per weight, Σ_b |∂L_b/∂w|, Σ_b (∂L_b/∂w)², Σ_b ∂L_b/∂w over mini-batches b, and per
  group member and unit the per-batch term Σ_{s∈unit} g_s w_s summed over batches squared (Taylor) and
  in absolute value (the gradient of a mask on the unit, Michel et al. 2019).
- ``activations``: for every layer that *reads* a group's channels (a member on dim 1 of a weight),
  the input it receives, reduced per channel: the fraction of exact zeros (APoZ), the mean |a|, and
  per-sample channel means (for the mutual information with the labels).

Forward hooks live inside :func:`recording`, a context manager that removes them on exit, also
when the forward raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph, Member

__all__ = ["Calibration", "CalibrationStats", "collect_stats", "recording", "consumers"]


@dataclass(frozen=True)
class Calibration:
    """A calibration sample: inputs ``x`` and (optional) integer labels ``y``.

    Attributes:
        x: inputs, shape (N, *input_shape).
        y: labels, shape (N,), or None for criteria that only need activations.
        batch_size: mini-batch size of the calibration passes.
        attention_mask: for padded token ids ``x`` of shape (N, L): 1 at real tokens, 0 at padding. The model is
            then called as ``model(x, attention_mask=mask)``, and the layer-wise solvers
            (:mod:`prunekit.pruners.layerwise`) leave the padded positions out of their statistics.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    batch_size: int = 128
    attention_mask: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or self.x.dim() < 2 or len(self.x) == 0:
            raise ConfigError("Calibration.x must be a non-empty tensor of shape (N, *input_shape)")
        if self.y is not None and len(self.y) != len(self.x):
            raise ConfigError(f"Calibration has {len(self.x)} inputs but {len(self.y)} labels")
        if self.batch_size < 1:
            raise ConfigError(f"Calibration.batch_size must be ≥ 1, got {self.batch_size}")
        m = self.attention_mask
        if m is not None and (not isinstance(m, torch.Tensor) or tuple(m.shape) != tuple(self.x.shape[:2])):
            shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
            raise ConfigError(f"Calibration.attention_mask must have the shape (N, L) of the token ids "
                              f"{tuple(self.x.shape[:2])}, got {shape}")

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for s in range(0, len(self.x), self.batch_size):
            yield self.x[s:s + self.batch_size], None if self.y is None else self.y[s:s + self.batch_size]

    def masks(self) -> Iterator[torch.Tensor | None]:
        """The attention mask of each batch of :meth:`batches` (``None`` each time when there is none)."""
        for s in range(0, len(self.x), self.batch_size):
            yield None if self.attention_mask is None else self.attention_mask[s:s + self.batch_size]

    @classmethod
    def from_data(cls, x: torch.Tensor, y: torch.Tensor | None, samples: int, seed: int = 0,
                  batch_size: int = 128) -> Calibration:
        """A seeded random subset of ``samples`` examples of ``(x, y)``."""
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:samples]
        return cls(x[idx], None if y is None else y[idx], batch_size)


@dataclass
class CalibrationStats:
    """What one calibration pass measured (only the parts the criterion needs are filled)."""

    batches: int = 0
    grad_abs: dict[str, torch.Tensor] = field(default_factory=dict)
    grad_sq: dict[str, torch.Tensor] = field(default_factory=dict)
    grad_sum: dict[str, torch.Tensor] = field(default_factory=dict)
    taylor: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    gate: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    zeros: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    mean_abs: dict[tuple[str, int], np.ndarray] = field(default_factory=dict)
    samples: dict[tuple[str, int], list[np.ndarray]] = field(default_factory=dict)
    labels: np.ndarray | None = None
    count: dict[tuple[str, int], int] = field(default_factory=dict)


@contextlib.contextmanager
def recording(hooks: list[tuple[nn.Module, Callable]], after: bool = False) -> Iterator[None]:
    """Installs forward pre-hooks ``(module, fn(module, args))`` (with ``after``: forward hooks
    ``fn(module, args, output)``) and always removes them."""
    handles = []
    try:
        for module, fn in hooks:
            handles.append(module.register_forward_hook(fn) if after else module.register_forward_pre_hook(fn))
        yield
    finally:
        for h in handles:
            h.remove()


def consumers(graph: DependencyGraph, members: list[Member]) -> list[tuple[Member, nn.Module]]:
    """Members that are the input-channel dim of a layer's weight, with that layer.

    The input such a layer receives is the group's activation (after BN and ReLU for a conv block).
    """
    out = []
    for m in members:
        t = graph.tensors.get(m.name)
        if m.dim != 1 or t is None or t.dim() < 2 or m.name in graph.buffers:
            continue
        for module, attr in graph.owners[m.name]:
            if attr == "weight" and not getattr(module, "transposed", False):
                out.append((m, module))
                break
    return out


def _channels(x: torch.Tensor, n: int) -> torch.Tensor | None:
    """``x`` as (batch, n, rest): channels on dim 1 for conv-like inputs, on the last dim otherwise."""
    if x.dim() >= 3 and x.shape[1] == n:
        return x.reshape(x.shape[0], n, -1)
    if x.shape[-1] == n:
        return x.reshape(x.shape[0], -1, n).transpose(1, 2)
    return None


def _activation_hooks(graph: DependencyGraph, stats: CalibrationStats, want_samples: bool):
    hooks = []
    for g in graph.prunable_groups(False):
        for m, module in consumers(graph, g.members):
            key = (m.name, m.dim)
            unit = torch.tensor(m.unit)  # a copy: the graph's arrays are read-only

            def hook(_mod, args, key=key, unit=unit, size=g.size):
                x = args[0] if args and isinstance(args[0], torch.Tensor) else None
                c = None if x is None else _channels(x.detach().float(), len(unit))
                if c is None:
                    return
                per_unit = torch.zeros(c.shape[0], size, c.shape[2]).index_add_(1, unit, c)
                counts = torch.bincount(unit, minlength=size).clamp_min(1).float()
                zeros = torch.zeros(size).index_add_(0, unit, (c == 0).float().mean((0, 2)))
                stats.zeros[key] = stats.zeros.get(key, 0) + (zeros / counts).numpy() * len(c)
                mean_abs = per_unit.abs().mean((0, 2)) / counts
                stats.mean_abs[key] = stats.mean_abs.get(key, 0) + mean_abs.numpy() * len(c)
                stats.count[key] = stats.count.get(key, 0) + len(c)
                if want_samples:
                    stats.samples.setdefault(key, []).append((per_unit.mean(2) / counts).numpy())

            hooks.append((module, hook))
    return hooks


def _accumulate_gradients(graph: DependencyGraph, model: nn.Module, stats: CalibrationStats) -> None:
    for name, t in graph.tensors.items():
        if name in graph.buffers or not isinstance(t, nn.Parameter) or t.grad is None:
            continue
        g = t.grad.detach().float()
        stats.grad_abs[name] = stats.grad_abs.get(name, 0) + g.abs()
        stats.grad_sq[name] = stats.grad_sq.get(name, 0) + g.pow(2)
        stats.grad_sum[name] = stats.grad_sum.get(name, 0) + g
    for grp in graph.prunable_groups(False):
        for m in grp.members:
            t = graph.tensors[m.name]
            if m.name in graph.buffers or t.grad is None:
                continue
            gw = (t.grad.detach() * t.detach()).float().transpose(0, m.dim).reshape(t.shape[m.dim], -1).sum(1)
            per_unit = np.zeros(grp.size)
            np.add.at(per_unit, m.unit, gw.cpu().numpy().astype(np.float64))
            key = (m.name, m.dim)
            stats.taylor[key] = stats.taylor.get(key, 0) + per_unit ** 2
            stats.gate[key] = stats.gate.get(key, 0) + np.abs(per_unit)


def collect_stats(model: nn.Module, graph: DependencyGraph, calibration: Calibration,
                  needs: frozenset[str]) -> CalibrationStats:
    """One pass over ``calibration`` recording what ``needs`` asks for; the model is left unchanged.

    BatchNorm statistics are not updated: the pass runs in eval mode (gradients flow all the same). With
    ``calibration.attention_mask`` the model is called as ``model(x, attention_mask=mask)``, so padded positions
    reach neither the attention nor a masked pooling, and the gradients are those of the real tokens (the
    activation statistics still average over every position).
    """
    stats = CalibrationStats()
    want_grads = "gradients" in needs
    want_acts = "activations" in needs
    hooks = _activation_hooks(graph, stats, "labels" in needs) if want_acts else []
    device = next(model.parameters()).device
    was_training = model.training
    saved_grads = {n: p.grad for n, p in model.named_parameters()}
    labels = []
    model.eval()
    try:
        with recording(hooks), torch.set_grad_enabled(want_grads):
            for (xb, yb), mb in zip(calibration.batches(), calibration.masks(), strict=True):
                out = model(xb.to(device)) if mb is None else model(xb.to(device), attention_mask=mb.to(device))
                if yb is not None:
                    labels.append(yb.cpu().numpy())
                if want_grads:
                    model.zero_grad(set_to_none=True)
                    F.cross_entropy(out, yb.to(device)).backward()
                    _accumulate_gradients(graph, model, stats)
                stats.batches += 1
    finally:
        model.train(was_training)
        for n, p in model.named_parameters():
            p.grad = saved_grads[n]
    stats.labels = np.concatenate(labels) if labels else None
    return stats
