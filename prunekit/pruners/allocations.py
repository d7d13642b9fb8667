"""Allocations of unstructured pruning: how a sparsity target turns into masks across layers.

- ``uniform``: every layer reaches the same sparsity s (its k = round(s·numel) lowest scores go).
- ``global``: one score threshold across all layers, chosen so that the pooled sparsity is s; each
  layer keeps at least one weight.
- ``ratios``: a sparsity per layer, from a dict of parameter-name patterns (fnmatch) to ratios;
  layers no pattern matches are left dense.
- ``threshold``: every weight whose score is below a fixed value goes.
- ``row``: every output row (filter) of every layer loses the same fraction s of its entries — the
  per-output comparison group of Wanda (Sun et al. 2023, §3: scores are compared within each row).

Masks only ever shrink: weights already pruned score −∞ and are counted first.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

import torch

from prunekit.errors import ConfigError
from prunekit.registry import Registry

__all__ = ["ALLOCATIONS", "AllocationFn", "allocation_name", "kth_mask", "row_mask", "ratios_for"]

#: ``allocation(scores, current_masks, target, step_fn, ratios, threshold) -> new masks``
AllocationFn = Callable[..., dict[str, torch.Tensor]]
ALLOCATIONS: Registry = Registry("allocation")


#: old spellings (recipes' ``prune.scope``) -> allocation name
OLD_NAMES = {"layer": "uniform"}


def allocation_name(name: str) -> str:
    """The allocation called ``name``; the old scope name ``layer`` is ``uniform``.

    Raises:
        ConfigError: an unknown name; the message lists the valid ones.
    """
    name = OLD_NAMES.get(name, name)
    ALLOCATIONS.get(name)
    return name


def kth_mask(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """A 0/1 mask that removes the ``n_prune`` lowest-scoring entries (ties broken by position)."""
    flat = scores.reshape(-1)
    n_prune = max(0, min(int(n_prune), flat.numel()))
    mask = torch.ones_like(flat)
    if n_prune:
        mask[torch.argsort(flat, stable=True)[:n_prune]] = 0
    return mask.reshape(scores.shape)


def row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """A 0/1 mask that removes round(sparsity · row length) lowest-scoring entries of every output row (dim 0).

    Example:
        >>> row_mask(torch.tensor([[1., 4., 2., 3.], [9., 8., 7., 6.]]), 0.5)
        tensor([[0., 1., 0., 1.],
                [1., 1., 0., 0.]])
    """
    rows = scores.reshape(scores.shape[0], -1)
    k = max(0, min(round(sparsity * rows.shape[1]), rows.shape[1]))
    mask = torch.ones_like(rows, dtype=torch.float32)
    if k:
        mask.scatter_(1, torch.argsort(rows, dim=1, stable=True)[:, :k], 0.0)
    return mask.reshape(scores.shape)


def _masked_scores(scores, current):
    return {n: torch.where(current[n] > 0, s.float(), torch.full_like(s.float(), -torch.inf))
            for n, s in scores.items()}


def _shrink(new: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Masks never grow back: a weight pruned earlier stays pruned."""
    return {n: m * current[n] for n, m in new.items()}


@ALLOCATIONS.register("uniform")
def _uniform(scores, current, target, step_fn, **_):
    s = step_fn(target)
    masks = {n: kth_mask(v, round(s * v.numel())) for n, v in _masked_scores(scores, current).items()}
    return _shrink(masks, current)


def ratios_for(names: list[str], ratios: dict[str, float]) -> dict[str, float]:
    """Resolves pattern → ratio dicts to one ratio per name (first matching pattern wins)."""
    out = {}
    for pattern in ratios:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ConfigError(f"ratio pattern {pattern!r} matches no prunable layer; "
                              f"prunable layers: {', '.join(names)}")
    for n in names:
        for pattern, r in ratios.items():
            if fnmatch.fnmatchcase(n, pattern):
                out[n] = float(r)
                break
    return out


@ALLOCATIONS.register("ratios")
def _ratios(scores, current, target, step_fn, ratios=None, **_):
    if not ratios:
        raise ConfigError("allocation 'ratios' needs a dict of layer-name patterns to sparsities")
    per_layer = ratios_for(list(scores), ratios)
    out = {}
    for n, v in _masked_scores(scores, current).items():
        out[n] = kth_mask(v, round(step_fn(per_layer[n]) * v.numel())) if n in per_layer else current[n]
    return _shrink(out, current)


@ALLOCATIONS.register("global")
def _global(scores, current, target, step_fn, **_):
    masked = _masked_scores(scores, current)
    names = list(masked)
    pooled = torch.cat([masked[n].reshape(-1) for n in names])
    n_prune = round(step_fn(target) * pooled.numel())
    keep = kth_mask(pooled, n_prune)
    out, start = {}, 0
    for n in names:
        size = masked[n].numel()
        m = keep[start : start + size].reshape(masked[n].shape).clone()
        start += size
        if m.sum() == 0:  # never delete a whole layer: keep its best weight
            m.view(-1)[torch.argmax(masked[n].reshape(-1))] = 1
        out[n] = m
    return _shrink(out, current)


@ALLOCATIONS.register("row")
def _row(scores, current, target, step_fn, **_):
    s = step_fn(target)
    return _shrink({n: row_mask(v, s) for n, v in _masked_scores(scores, current).items()}, current)


@ALLOCATIONS.register("threshold")
def _threshold(scores, current, target, step_fn, threshold=None, **_):
    if threshold is None:
        raise ConfigError("allocation 'threshold' needs a threshold value")
    return {n: current[n] * (scores[n] >= threshold).to(current[n].dtype) for n in scores}
