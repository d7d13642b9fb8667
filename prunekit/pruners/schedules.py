"""Sparsity schedules: the sparsity to reach at each pruning step.

- ``one_shot``: the target at once.
- ``iterative``: n steps that each remove the same fraction of the weights still left,
  s_k = 1 − (1 − s_f)^{k/n} (Han et al. 2015's prune → retrain cycles).
- ``gradual``: the cubic schedule of Zhu & Gupta 2017, applied every Δt optimiser steps during
  training: s_t = s_f + (s_i − s_f)·(1 − (t − t₀)/(n·Δt))³ for t₀ ≤ t ≤ t₀ + n·Δt.
  With granularity ``filter`` this is gradual *structured* pruning.
- ``lottery``: the iterative steps, but after each pruning step the survivors rewind to θ₀ (or θ_k)
  and train again (Frankle & Carbin 2019; :mod:`prunekit.pruners.lottery`).
- ``at_init``: the mask is chosen before training, in n rounds on the iterative schedule
  (SNIP n = 1, SynFlow n = 100; :mod:`prunekit.pruners.init_pruning`).
- ``soft_filter``: a fixed filter ratio zeroed after every epoch, masked at the end
  (He et al. 2018; :mod:`prunekit.pruners.soft_filter`).
"""

from __future__ import annotations

from prunekit.registry import Registry

__all__ = ["SCHEDULES", "iterative_sparsity", "cubic_sparsity"]

SCHEDULES: Registry = Registry("schedule")
for _name in ("one_shot", "iterative", "gradual", "lottery", "at_init", "soft_filter"):
    SCHEDULES.register(_name)(_name)


def iterative_sparsity(final: float, step: int, steps: int, start: float = 0.0) -> float:
    """Sparsity after ``step`` of ``steps`` equal-fraction pruning steps (step counts from 1).

    From a model already at sparsity ``start``: s_k = 1 − (1 − start)·((1 − s_f)/(1 − start))^{k/n}.
    """
    if final <= start:
        return final
    return 1.0 - (1.0 - start) * ((1.0 - final) / (1.0 - start)) ** (step / steps)


def cubic_sparsity(final: float, t: int, t0: int, n: int, dt: int, initial: float = 0.0) -> float:
    """Zhu & Gupta's cubic schedule at optimiser step ``t`` (n pruning steps every ``dt`` steps)."""
    if t < t0:
        return initial
    progress = min(1.0, (t - t0) / (n * dt))
    return final + (initial - final) * (1.0 - progress) ** 3
