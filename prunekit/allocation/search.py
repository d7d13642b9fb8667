"""Automatic search over per-group ratios, in the spirit of AMC (He et al. 2018).

AMC trains a DDPG agent that proposes one layer's ratio at a time, with the budget enforced by
clipping the remaining layers' actions and a reward that is the validation accuracy of the pruned,
un-fine-tuned model. Here the policy is replaced by a (μ + λ) evolutionary search, which needs far
fewer evaluations on small models and no hyper-parameters to tune; the rest is AMC's recipe:

- a genome is a ratio profile r_g ∈ [0, 1] per group; :meth:`Problem.project` scales it so that the
  pruned model meets the budget exactly (AMC's action clipping),
- fitness is the fast accuracy proxy: accuracy (ties broken by −loss) of the model with the
  lowest-scoring units zeroed, on a small held-out batch, without fine-tuning; given training inputs
  (``allocate(..., recalibration=x)``) the BatchNorm statistics of every candidate are re-estimated
  first (EagleEye, Li et al. 2020), without which a BN network pruned 2× scores near chance,
- the population starts from the uniform and global allocations (and the sensitivity one when
  curves exist), plus random profiles; each generation keeps the best half and mutates it
  (Gaussian noise σ = 0.15 on ratios, uniform crossover).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from prunekit.allocation.strategies import Counts, Problem, global_ranking, sensitivity, uniform

__all__ = ["evolutionary_search"]


def _profile(p: Problem, counts: Counts) -> dict[str, float]:
    return {g.name: counts[g.name] / g.size for g in p.groups}


def evolutionary_search(p: Problem) -> Counts:
    """Evolutionary search over per-group ratio profiles scored by ``p.proxy`` (see module docstring)."""
    if p.proxy is None:
        raise ValueError("the search strategy needs a proxy evaluator")  # the API always sets one
    rng = np.random.default_rng(p.config.seed)
    names = [g.name for g in p.groups]
    seeds = [uniform(p), global_ranking(p)]
    if p.curve_penalty is not None:
        seeds.append(sensitivity(replace(p, penalty=p.curve_penalty, steps={})))
    pop = [_profile(p, c) for c in seeds]
    while len(pop) < p.config.population:
        pop.append({n: float(rng.uniform(0.05, 1.0)) for n in names})
    cache: dict[tuple, float] = {}

    def fitness(profile: dict[str, float]) -> tuple[float, Counts]:
        counts = p.project(profile)
        key = tuple(counts[n] for n in names)
        if key not in cache:
            cache[key] = p.proxy(counts)
        return cache[key], counts

    scored = [(*fitness(pr), pr) for pr in pop]
    for _ in range(p.config.generations):
        scored.sort(key=lambda s: -s[0])
        parents = scored[: max(2, len(scored) // 2)]
        children = []
        while len(parents) + len(children) < p.config.population:
            a, b = rng.choice(len(parents), 2, replace=False)
            pick = rng.random(len(names)) < 0.5
            child = {n: parents[a][2][n] if pick[i] else parents[b][2][n] for i, n in enumerate(names)}
            child = {n: float(np.clip(v + rng.normal(0, 0.15), 0.0, 1.0)) for n, v in child.items()}
            children.append((*fitness(child), child))
        scored = parents + children
    scored.sort(key=lambda s: -s[0])
    return scored[0][1]
