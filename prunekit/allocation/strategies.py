"""Allocation strategies: how many units each group loses so that the model meets a MAC/param budget.

Every strategy works on a :class:`Problem` (groups, their allowed removal counts, the cost model and
a penalty for removing the first n units of a group) and returns removal counts; units go lowest
score first. A shared final pass (:meth:`Problem.settle`) moves single steps until the predicted
cost lies within the budget's tolerance, so every strategy meets it the same way. With a latency
table (``AllocationConfig(cost="latency")``) the greedy ranks steps by penalty per millisecond saved
instead of per MAC (or parameter) saved, while the budget stays in MACs (or parameters); with
``latency_weight`` μ it ranks them by (loss rise − μ · fraction of the dense latency saved) per MAC saved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from prunekit.allocation.budget import AllocationConfig
from prunekit.allocation.cost import CostModel
from prunekit.allocation.latency import LatencyTable
from prunekit.errors import ConfigError
from prunekit.graph import Group

__all__ = ["Problem", "allowed_steps", "global_ranking", "sensitivity", "uniform"]

Penalty = Callable[[str, int], float]
Counts = dict[str, int]


@dataclass
class Problem:
    """One allocation: remove units from ``groups`` until ``cost`` of ``metric`` is ``target``."""

    groups: list[Group]
    cost: CostModel
    metric: str
    target: float  # absolute MACs or params
    tol: float
    config: AllocationConfig
    scores: dict[str, np.ndarray]  # per-group normalised scores, higher = keep
    penalty: Penalty | None = None  # penalty(group, n removed), monotone; default: summed scores
    proxy: Callable[[Counts], float] | None = None  # higher = better (search)
    curve_penalty: Penalty | None = None  # from sensitivity curves, when given: the search seeds one candidate with it
    latency: LatencyTable | None = None  # when given, greedy steps are ranked per measured ms saved
    steps: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.cost.set_order(self.scores)
        self._cum = {g: np.concatenate([[0.0], np.cumsum(np.sort(s))]) for g, s in self.scores.items()}
        for g in self.groups:
            self.steps[g.name] = allowed_steps(g, self.config)
        self.penalty = self.penalty or (lambda g, n: float(self._cum[g][n]))

    def at(self, counts: Mapping[str, int]) -> float:
        return float(self.cost.cost(self.metric, counts))

    def snap(self, g: str, n: float) -> int:
        s = self.steps[g]
        return int(s[np.argmin(np.abs(s - n))])

    def floor_cost(self) -> float:
        return self.at({g: int(s[-1]) for g, s in self.steps.items()})

    def next_step(self, g: str, n: int, up: bool) -> int | None:
        """The allowed count just above (``up``) or below ``n`` (which need not be allowed itself)."""
        s = self.steps[g]
        k = int(np.searchsorted(s, n, side="right")) if up else int(np.searchsorted(s, n)) - 1
        return int(s[k]) if 0 <= k < len(s) else None

    def limit_deviation(self, deviation: float) -> None:
        """Keeps only the counts whose ratio lies within ±``deviation`` of the uniform allocation's
        ratio in that group (the uniform count itself always stays)."""
        even = uniform(self)
        for g in self.groups:
            s, size = self.steps[g.name], g.size
            near = np.abs(s - even[g.name]) <= deviation * size
            self.steps[g.name] = s[near | (s == even[g.name])]

    def start(self) -> Counts:
        """The least pruning every group allows (0 unless a deviation limit forbids it)."""
        return {g.name: int(self.steps[g.name][0]) for g in self.groups}

    def greedy_down(self, counts: Counts, until: float, by_cost: bool = True,
                    frozen: frozenset[str] | set[str] = frozenset()) -> Counts:
        """Removes one step at a time, cheapest penalty (per unit of cost saved) first, until ≤ ``until``
        (the groups in ``frozen`` keep their counts).

        With a latency table the cost saved is the measured latency saved (floored at 1% of the dense
        latency per step, so a step that saves nothing measurable goes last rather than dividing by ~0),
        and ties (e.g. several steps with no measured loss rise) go to the step that saves the most time.
        With ``config.latency_weight`` μ the key is instead (loss rise − μ · latency saved / dense latency)
        per fraction of the dense cost saved: time saved is credited against the loss rise, and the
        budget's metric stays the denominator, so a step with no loss rise that saves no time is no
        longer first (its key is 0, while one that saves time per MAC has a negative key).
        """
        counts = dict(counts)
        cur = self.at(counts)
        while cur > until:
            best, best_key = None, (np.inf, 0.0)
            for g in counts:
                n2 = None if g in frozen else self.next_step(g, counts[g], True)
                if n2 is None:
                    continue
                c2 = self.at({**counts, g: n2})
                saved = cur - c2
                if saved <= 0:
                    continue
                dp = self.penalty(g, n2) - self.penalty(g, counts[g])
                key = self._step_key(g, counts[g], n2, dp, saved, by_cost)
                if key < best_key:
                    best, best_key = (g, n2, c2), key
            if best is None:
                break
            counts[best[0]], cur = best[1], best[2]
        return counts

    def _step_key(self, g: str, n: int, n2: int, dp: float, saved: float, by_cost: bool) -> tuple[float, float]:
        """Ranking key (lowest first) of removing ``n → n2`` units of ``g``: penalty rise ``dp`` per cost
        ``saved``, the latency forms of :meth:`greedy_down` with a latency table; ties favour time saved."""
        if self.latency is None:
            return (dp / saved if by_cost else dp, 0.0)
        ms = self.latency.saved(g, n, n2)
        mu = self.config.latency_weight
        if mu is not None:
            frac = ms / self.latency.dense_ms
            gain = dp - mu * frac
            return (gain / (saved / self.cost.dense(self.metric)) if by_cost else gain, -frac)
        ms = max(ms, 0.01 * self.latency.dense_ms)
        return (dp / ms if by_cost else dp, -ms)

    def settle(self, counts: Counts) -> Counts:
        """Final moves into the budget: remove while above ``target``; while below
        ``target·(1 − tol/2)``, restore the most important step whose restoration stays within the
        target. Coarse steps (``round_to``, a greedy's last big step) can leave no such restoration,
        so then the best move landing in [target·(1 − tol/2), target] among swaps (restore one step,
        remove another) and re-runs of the greedy after restoring one group's step (that group held) is
        taken, and last a single restoration that overshoots by at most tol/2."""
        counts = self.greedy_down(counts, self.target)
        cur = self.at(counts)
        low, high = self.target * (1 - self.tol / 2), self.target * (1 + self.tol / 2)
        while cur < low:
            best = self._best_move(counts, list(self._steps(counts, up=False).values()), self.target)
            if best is None:
                break
            counts, cur = best
        if cur < low:
            restores = self._steps(counts, up=False)
            swaps = [m for g, r in restores.items() for h, m in self._steps(r, up=True).items() if h != g]
            regreedy = [self.greedy_down(r, self.target, frozen={g}) for g, r in restores.items()]
            best = self._best_move(counts, swaps + regreedy, self.target, low)
            best = best or self._best_move(counts, list(restores.values()), high)
            if best is not None:
                counts, cur = best
        return counts

    def _steps(self, counts: Counts, up: bool) -> dict[str, Counts]:
        """``counts`` moved by one allowed step in one group, removing (``up``) or restoring, by group."""
        moved = {g: self.next_step(g, n, up) for g, n in counts.items()}
        return {g: {**counts, g: n2} for g, n2 in moved.items() if n2 is not None}

    def _best_move(self, counts: Counts, moves: list[Counts], most: float,
                   least: float = -np.inf) -> tuple[Counts, float] | None:
        """Of ``moves`` whose cost lies in [least, most], the one that lowers the summed penalty most."""
        total = lambda c: sum(self.penalty(g, n) for g, n in c.items())
        now, best, best_gain = total(counts), None, -np.inf
        for move in moves:
            c2 = self.at(move)
            gain = now - total(move)
            if least <= c2 <= most and gain > best_gain:
                best, best_gain = (move, c2), gain
        return best

    def project(self, ratios: Mapping[str, float]) -> Counts:
        """Scales a ratio profile by one factor so that the cost meets the target, then settles."""
        lo, hi = 0.0, 1.0 / max(max(ratios.values()), 1e-9)
        for _ in range(30):
            mid = (lo + hi) / 2
            if self.at(self._scaled(ratios, mid)) > self.target:
                lo = mid
            else:
                hi = mid
        return self.settle(self._scaled(ratios, hi))

    def _scaled(self, ratios: Mapping[str, float], a: float) -> Counts:
        return {g.name: self.snap(g.name, min(a * ratios[g.name], 1.0) * g.size) for g in self.groups}


def allowed_steps(g: Group, cfg: AllocationConfig) -> np.ndarray:
    """Allowed numbers of removed units: keep ≥ min_channels, ≥ (1 − max_ratio)·size, a multiple of
    round_to (or everything), never a pinned unit."""
    most = min(g.prunable, g.size - cfg.min_channels, int(np.floor(cfg.max_ratio * g.size)))
    counts = [n for n in range(0, max(most, 0) + 1) if n == 0 or (g.size - n) % cfg.round_to == 0]
    return np.array(counts, dtype=np.int64)


def uniform(p: Problem) -> Counts:
    """The same ratio in every group (the baseline), found by bisection."""
    return p.project({g.name: 1.0 for g in p.groups})


def global_ranking(p: Problem) -> Counts:
    """All units ranked together by their per-group-normalised scores; the lowest go first."""
    pooled = sorted((float(v), g.name) for g in p.groups for v in np.sort(p.scores[g.name]))
    counts = {g.name: 0 for g in p.groups}
    cur = p.at(counts)
    for _, name in pooled:
        if cur <= p.target:
            break
        n2 = p.next_step(name, counts[name], True)
        if n2 is None:
            continue
        counts[name] = n2
        cur = p.at(counts)
    return p.settle(counts)


def sensitivity(p: Problem) -> Counts:
    """Greedy on the sensitivity curves: each step removes from the group whose measured loss rise per
    MAC (or parameter) saved is smallest (``penalty`` comes from the curves)."""
    return p.settle(p.greedy_down(p.start(), p.target))


def check_reachable(p: Problem, dense: float, what: str) -> None:
    floor = p.floor_cost()
    if floor > p.target * (1 + p.tol):
        raise ConfigError(
            f"the budget {what} is unreachable: with min_channels={p.config.min_channels}, "
            f"max_ratio={p.config.max_ratio} and round_to={p.config.round_to} the smallest model keeps "
            f"{floor / dense:.3f} of the dense {p.metric} (at most a {dense / floor:.2f}× reduction); ask for "
            f"{p.metric}_kept ≥ {floor / dense:.3f}, or lower min_channels / raise max_ratio")
