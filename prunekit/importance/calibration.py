"""Calibration data and the statistics that data-driven criteria score with.

A :class:`Calibration` is a small labelled (or unlabelled) sample of the training data. Before any
criterion runs, :func:`collect_stats` makes one pass over it and records only what the chosen
criterion declares it needs:

- ``gradients``: per weight, Σ_b |∂L_b/∂w|, Σ_b (∂L_b/∂w)², Σ_b ∂L_b/∂w over mini-batches b, and per
  group member and unit the per-batch term Σ_{s∈unit} g_s w_s summed over batches squared (Taylor) and
  in absolute value (the gradient of a mask on the unit, Michel et al. 2019).
- ``activations``: for every layer that *reads* a group's channels (a member on dim 1 of a weight),
  the input it receives, reduced per channel: the fraction of exact zeros (APoZ), the mean |a|, and
  per-sample channel means (for the mutual information with the labels). With an attention mask (padded
  token batches) only the real tokens count (:func:`real_tokens`, the rule the layer-wise solvers use too).

Forward hooks live inside :func:`recording`, a context manager that removes them on exit, also
when the forward raises.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph, Member

__all__ = ["Calibration", "CalibrationStats", "call_model", "collect_stats", "recording", "consumers", "real_tokens"]


@dataclass(frozen=True)
class Calibration:
    """A calibration sample: inputs ``x`` and (optional) integer labels ``y``.

    Attributes:
        x: inputs, shape (N, *input_shape).
        y: labels, shape (N,), or None for criteria that only need activations.
        batch_size: mini-batch size of the calibration passes.
        attention_mask: for padded token ids ``x`` of shape (N, L): 1 at real tokens, 0 at padding. The model is
            then called as ``model(x, attention_mask=mask)``, and every input statistic (activation criteria, the
            layer-wise solvers of :mod:`prunekit.pruners.layerwise`) leaves the padded positions out.
        token_type_ids: for sentence pairs tokenised together (N, L): 0 for the first sentence's tokens, 1 for the
            second's (what a tokenizer returns for ``tokenizer(a, b)``); passed as ``token_type_ids=`` to a model
            whose forward takes it (BERT), left out for one that does not.
    """

    x: torch.Tensor
    y: torch.Tensor | None = None
    batch_size: int = 128
    attention_mask: torch.Tensor | None = None
    token_type_ids: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or self.x.dim() < 2 or len(self.x) == 0:
            raise ConfigError("Calibration.x must be a non-empty tensor of shape (N, *input_shape)")
        if self.y is not None and len(self.y) != len(self.x):
            raise ConfigError(f"Calibration has {len(self.x)} inputs but {len(self.y)} labels")
        if self.batch_size < 1:
            raise ConfigError(f"Calibration.batch_size must be ≥ 1, got {self.batch_size}")
        for key, m in self.keyword_tensors().items():
            if not isinstance(m, torch.Tensor) or tuple(m.shape) != tuple(self.x.shape[:2]):
                shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
                raise ConfigError(f"Calibration.{key} must have the shape (N, L) of the token ids "
                                  f"{tuple(self.x.shape[:2])}, got {shape}")

    def keyword_tensors(self) -> dict[str, torch.Tensor]:
        """The keyword inputs given (``attention_mask``, ``token_type_ids``), whole."""
        return {k: v for k, v in (("attention_mask", self.attention_mask), ("token_type_ids", self.token_type_ids))
                if v is not None}

    def keywords(self) -> Iterator[dict[str, torch.Tensor]]:
        """The keyword inputs of each batch of :meth:`batches` (an empty dict each time when there are none)."""
        whole = self.keyword_tensors()
        for s in range(0, len(self.x), self.batch_size):
            yield {k: v[s:s + self.batch_size] for k, v in whole.items()}

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        for s in range(0, len(self.x), self.batch_size):
            yield self.x[s:s + self.batch_size], None if self.y is None else self.y[s:s + self.batch_size]

    def masks(self) -> Iterator[torch.Tensor | None]:
        """The attention mask of each batch of :meth:`batches` (``None`` each time when there is none)."""
        for s in range(0, len(self.x), self.batch_size):
            yield None if self.attention_mask is None else self.attention_mask[s:s + self.batch_size]

    def evaluate(self, model: nn.Module, x: torch.Tensor | None = None, y: torch.Tensor | None = None):
        """Top-1 accuracy and mean cross-entropy of ``model`` on this sample, called with its keyword inputs
        (attention mask, token types) batch by batch: what ``prunekit.training.evaluate`` computes for inputs that
        need them. ``x``/``y`` (the evaluator signature of :func:`prunekit.sensitivity.analyze`) must be this
        sample's own inputs and labels."""
        from prunekit.training import evaluate

        if (x is not None and x is not self.x) or (y is not None and y is not self.y) or self.y is None:
            raise ConfigError("Calibration.evaluate scores the calibration sample itself (with labels): its x and y "
                              "go with its attention mask and token types row by row")
        return evaluate(model, self.x, self.y, self.batch_size, model_keywords(model, self.keyword_tensors()))

    @classmethod
    def from_data(cls, x: torch.Tensor, y: torch.Tensor | None, samples: int, seed: int = 0,
                  batch_size: int = 128) -> Calibration:
        """A seeded random subset of ``samples`` examples of ``(x, y)``."""
        idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:samples]
        return cls(x[idx], None if y is None else y[idx], batch_size)


def model_keywords(model: nn.Module, keywords: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The ``keywords`` ``model`` is given: ``attention_mask`` always, ``token_type_ids`` only where its forward
    takes it (a parameter of that name, or ``**kwargs``)."""
    return {k: v for k, v in keywords.items() if k == "attention_mask" or _takes(model, k)}


def call_model(model: nn.Module, x: torch.Tensor, keywords: dict[str, torch.Tensor]) -> Any:
    """``model(x, **keywords)`` on ``x``'s device, with the keywords :func:`model_keywords` keeps."""
    return model(x, **{k: v.to(x.device) for k, v in model_keywords(model, keywords).items()})


def _takes(model: nn.Module, name: str) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


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


def real_tokens(x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """The rows of a layer input ``x`` that belong to real tokens: with ``keep``, a (batch, tokens) 0/1 attention
    mask, an ``x`` of shape (batch, tokens, features) becomes (real tokens, features); an ``x`` of another shape
    (a pooled or first-token input) is returned whole, as is every ``x`` without a mask. Padded positions hold
    what the model computes for tokens it never attends to, so no input statistic may count them."""
    if keep is not None and x.dim() == keep.dim() + 1 and tuple(x.shape[:-1]) == tuple(keep.shape):
        return x[keep.to(device=x.device, dtype=torch.bool)]
    return x


def _sample_means(x: torch.Tensor, keep: torch.Tensor, unit: torch.Tensor, size: int) -> torch.Tensor:
    """Per sample and unit, the mean of the unit's channels over the sample's real positions (mi's features)."""
    rows = [real_tokens(x[b:b + 1], keep[b:b + 1]) for b in range(len(x))]  # (real tokens of sample b, channels)
    means = torch.stack([r.mean(0) if len(r) else r.new_zeros(r.shape[-1]) for r in rows])  # (batch, channels)
    counts = torch.bincount(unit, minlength=size).clamp_min(1).float()
    return torch.zeros(len(x), size).index_add_(1, unit, means) / counts


def _channels(x: torch.Tensor, n: int) -> torch.Tensor | None:
    """``x`` as (batch, n, rest): channels on dim 1 for conv-like inputs, on the last dim otherwise."""
    if x.dim() >= 3 and x.shape[1] == n:
        return x.reshape(x.shape[0], n, -1)
    if x.shape[-1] == n:
        return x.reshape(x.shape[0], -1, n).transpose(1, 2)
    return None


def _activation_hooks(graph: DependencyGraph, stats: CalibrationStats, want_samples: bool, current: dict):
    """Hooks reducing each consumer's input per unit; ``current["mask"]`` is the attention mask of the batch running
    (padded positions are left out: :func:`real_tokens`; then every real token weighs as one sample)."""
    hooks = []
    for g in graph.prunable_groups(False):
        for m, module in consumers(graph, g.members):
            key = (m.name, m.dim)
            unit = torch.tensor(m.unit)  # a copy: the graph's arrays are read-only

            def hook(_mod, args, key=key, unit=unit, size=g.size):
                x = args[0].detach().float() if args and isinstance(args[0], torch.Tensor) else None
                keep = current.get("mask")
                c = None if x is None else _channels(real_tokens(x, keep), len(unit))
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
                    means = per_unit.mean(2) / counts if real_tokens(x, keep) is x else \
                        _sample_means(x, keep, unit, size)
                    stats.samples.setdefault(key, []).append(means.numpy())

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
    ``calibration.attention_mask`` the model is called as ``model(x, attention_mask=mask)`` (and with
    ``token_type_ids=`` where it has them and takes them: :func:`call_model`), so padded positions
    reach neither the attention nor a masked pooling, the gradients are those of the real tokens, and the
    activation statistics average over the real tokens only.
    """
    stats = CalibrationStats()
    want_grads = "gradients" in needs
    want_acts = "activations" in needs
    current: dict = {}
    hooks = _activation_hooks(graph, stats, "labels" in needs, current) if want_acts else []
    device = next(model.parameters()).device
    was_training = model.training
    saved_grads = {n: p.grad for n, p in model.named_parameters()}
    labels = []
    model.eval()
    try:
        with recording(hooks), torch.set_grad_enabled(want_grads):
            for (xb, yb), kw in zip(calibration.batches(), calibration.keywords(), strict=True):
                current["mask"] = kw.get("attention_mask")
                out = call_model(model, xb.to(device), kw)
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
