"""Choosing exit thresholds on the validation split, and what each exit costs.

An input takes exit ``k`` when exit ``k`` is the first whose confidence is above its threshold; the path to
exit ``k`` costs the backbone up to that block *and every head evaluated on the way* (:func:`exit_costs`).
With the validation logits of every head computed once, a threshold vector is scored exactly (accuracy, mean
cost); the search starts from the best single threshold shared by all exits and then lowers or raises one
exit's threshold at a time (coordinate descent over a grid) while the budget holds.

Budgets: ``accuracy`` — the cheapest thresholds whose exits lose at most ``max_drop_pt`` points of the
validation inputs the full network gets right. Losses only: inputs an early exit gets right and the full network
wrong are not netted against them, because on a validation split of a few hundred inputs that netting is noise
and lets through thresholds that lose accuracy on the test split; ``cost`` — the most accurate thresholds whose
mean cost is within ``kept`` of the full network's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prunekit.data.base import iterate_batches
from prunekit.errors import PruningError
from prunekit.measure import compare_latency, count_macs

__all__ = ["ExitScores", "Selection", "exit_costs", "score_exits", "select_thresholds", "threshold_grid"]


class _Path(nn.Module):
    """The work of taking exit ``k`` (``k = len(points)``: the final head, every exit head evaluated)."""

    def __init__(self, model: nn.Module, k: int) -> None:
        super().__init__()
        self.m, self.k = model, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, stop = self.m, (self.m.points[self.k] if self.k < len(self.m.points) else None)
        h = m.chain.stem(x)
        for i, block in enumerate(m.chain.blocks):
            h = block(h)
            if i in m._by_index:
                z = m.heads[str(i)](h)
                m._score(z)
                if i == stop:
                    return z
        return m.chain.tail(h)


def exit_costs(model: nn.Module, example: torch.Tensor, latency: bool = True, repeats: int = 30) -> dict:
    """MACs (and batch-1 CPU milliseconds, timed alternately) of the path to each exit, the final one last;
    ``static``: the backbone alone (no heads)."""
    paths = [_Path(model, k) for k in range(len(model.points) + 1)]
    x = example[:1]
    out = {"macs": [count_macs(p, x).dense for p in paths], "static_macs": count_macs(model.chain, x).dense}
    if latency:
        times = compare_latency([model.chain, *paths], x, batch=1, repeats=repeats)
        out["static_ms"] = times[0].thread_cpu_ms
        out["ms"] = [t.thread_cpu_ms for t in times[1:]]
    return out


@dataclass
class ExitScores:
    """Per input (rows) and exit (columns, final last): confidence and whether the answer is right."""

    confidence: torch.Tensor  # (N, K) for the K exit heads
    correct: torch.Tensor  # (N, K + 1) bool

    def exits(self, thresholds: torch.Tensor) -> torch.Tensor:
        """The exit each input takes under ``thresholds`` (K,): the first above, else K (final)."""
        above = self.confidence > thresholds
        k = self.confidence.shape[1]
        first = torch.where(above.any(1), above.float().argmax(1), torch.full_like(above[:, 0], k, dtype=torch.long))
        return first.long()

    def evaluate(self, thresholds: torch.Tensor, cost: torch.Tensor) -> tuple[float, float]:
        e = self.exits(thresholds)
        acc = float(self.correct.gather(1, e[:, None]).float().mean())
        return acc, float(cost[e].mean())

    def lost(self, thresholds: torch.Tensor) -> float:
        """The share of inputs the full network gets right and their exit gets wrong (gains not netted out)."""
        e = self.exits(thresholds)
        return float((self.correct[:, -1] & ~self.correct.gather(1, e[:, None]).squeeze(1)).float().mean())

    def histogram(self, thresholds: torch.Tensor) -> list[int]:
        return torch.bincount(self.exits(thresholds), minlength=self.correct.shape[1]).tolist()


@torch.no_grad()
def score_exits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> ExitScores:
    device = next(model.parameters()).device
    model.eval()
    conf, correct = [], []
    for xb, yb in iterate_batches(x, y, batch_size):
        outs = model.forward_all(xb.to(device))
        conf.append(torch.stack([model._score(z) for z in outs[:-1]], 1).cpu())
        correct.append(torch.stack([(z.argmax(-1) == yb.to(device)) for z in outs], 1).cpu())
    return ExitScores(torch.cat(conf), torch.cat(correct))


def threshold_grid() -> list[float]:
    """Candidate thresholds: coarse below 0.9, ever finer towards 1 (confidences of a trained head crowd there)."""
    return [0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999,
            1.0]


@dataclass
class Selection:
    thresholds: list[float]
    val_accuracy: float
    val_cost: float  # mean cost per input, a fraction of the static network's
    full_val_accuracy: float
    curve: list[dict]  # shared thresholds: accuracy and mean cost on validation


def select_thresholds(scores: ExitScores, cost: list[float], static_cost: float, max_drop_pt: float | None = None,
                      kept: float | None = None, passes: int = 3) -> Selection:
    """Thresholds for an accuracy budget (``max_drop_pt``) or a cost budget (``kept``), see the module doc."""
    c = torch.tensor(cost, dtype=torch.float64) / static_cost
    k = scores.confidence.shape[1]
    full = float(scores.correct[:, -1].float().mean())
    grid = threshold_grid()

    def better(a: tuple[float, float], b: tuple[float, float] | None) -> bool:
        if b is None:
            return True
        if kept is not None:  # most accurate, then cheapest
            return (a[0], -a[1]) > (b[0], -b[1])
        return (-a[1], a[0]) > (-b[1], b[0])

    def feasible(t: torch.Tensor, r: tuple[float, float]) -> bool:
        if kept is not None:
            return r[1] <= kept + 1e-12
        return scores.lost(t) <= (max_drop_pt or 0.0) / 100 + 1e-12

    curve, best_t, best = [], None, None
    for g in grid:
        t = torch.full((k,), g)
        r = scores.evaluate(t, c)
        curve.append({"threshold": g, "accuracy": r[0], "cost": r[1], "lost": scores.lost(t)})
        if feasible(t, r) and better(r, best):
            best_t, best = t, r
    if best_t is None:  # nothing shared fits: start from never exiting (always within an accuracy budget)
        best_t = torch.ones(k)
        best = scores.evaluate(best_t, c)
    for _ in range(passes):
        changed = False
        for j in range(k):
            for g in grid:
                t = best_t.clone()
                t[j] = g
                r = scores.evaluate(t, c)
                if feasible(t, r) and better(r, best) and r != best:
                    best_t, best, changed = t, r, True
        if not changed:
            break
    if not feasible(best_t, best):
        raise PruningError(f"no exit thresholds keep the mean cost within {kept:.3g} of the full network's on the "
                           f"validation split (the cheapest reachable: {min(float(v) for v in c):.3g}); raise the "
                           "budget or attach exits earlier")
    return Selection([float(v) for v in best_t], best[0], best[1], full, curve)
