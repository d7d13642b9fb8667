"""A measured latency lookup table for allocation (NetAdapt, Yang et al. 2018).

MACs predict CPU latency poorly at small channel counts: a convolution cut from 16 to 8 channels
saves half its MACs but far less of its time, because the kernels run at lower throughput there,
while a residual stream cut from 16 to 8 channels shrinks every convolution, add and ReLU it feeds.
A MAC-driven allocation cannot tell the two apart. The table measures, for every group ``g`` and
every allowed number ``n`` of removed units, the latency ``T_g(n)`` of the model (as exported for
inference) with only that group pruned, all variants timed alternately run by run
(:func:`prunekit.measure.compare_latency`) so machine load hits them alike. A step ``n → n'`` of
group ``g`` then saves ``T_g(n) − T_g(n')`` milliseconds; savings are assumed additive across groups.
``T`` is, by default (``clock="cpu"``), the median single-thread CPU time of a forward
(``time.thread_time``, the variants timed on one intra-op thread): the CPU time a forward takes does
not include the time the scheduler gives other runnable processes. At a load of ~20 on 2 cores
(bench/results/clock_stability.md) the dense model's CPU-time entry moved by ≤ 9% between tables
while its wall-time entry moved 2.2×, and each entry's saving (a fraction of the dense time) moved by
3–6 points against 19–27 for wall time. Steps whose savings differ by less than that can still swap
places, so two tables measured at different times may allocate differently; a saved table
(:func:`load_latency_table`) makes the allocation independent of the machine's state.
``clock="wall"`` takes the fastest wall-time run instead (on a shared CPU contention only ever adds
wall time), for tables of multi-threaded or GPU execution.

On a shared CPU single timings scatter by several percent, more than removing 8 channels of a
small late convolution saves. Removing units is assumed never to cost time, so each group's timings
are fitted by the closest non-increasing curve in n (isotonic regression, pool-adjacent-violators):
noise is averaged over neighbouring counts instead of ranking steps by it, and a step that measured
slower (16 → 8 channels can be) saves 0 ms. The raw timings are kept in ``measured``.

A table depends on the model's shapes, the export and the machine, not on the weights: measure it
once while the machine is quiet and pass it back (:func:`load_latency_table`, recipe
``structured.latency_table``) so that every later run ranks by the same timings.

Example:
    >>> table = measure_latency_table(graph, {"stem.0": [0, 8]}, batch=256)
    >>> table.saved("stem.0", 0, 8)      # ms saved at batch 256 by removing 8 units of stem.0
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunekit.errors import ConfigError
from prunekit.export import InferenceConfig, prepare_inference
from prunekit.graph import DependencyGraph
from prunekit.measure import compare_latency
from prunekit.measure.threads import using
from prunekit.structured import prune_groups

__all__ = ["CLOCKS", "LatencyTable", "load_latency_table", "measure_latency_table"]

ANCHORS = 3  # timings per round of the dense (and base) model of a table
# What a table's entry is, per clock: a field of prunekit.measure.Latency.
CLOCKS = {"cpu": "thread_cpu_ms", "wall": "min_ms"}


@dataclass(frozen=True)
class LatencyTable:
    """Latency (ms) of the model with one group pruned, per group and number of units removed.

    Attributes:
        batch: batch size of the timings.
        dense_ms: the unpruned model.
        ms: ``{group: {units removed: ms}}``, non-increasing in the count (count 0: the fitted dense
            timing of that group's curve; ``dense_ms`` where absent).
        measured: the raw timings behind ``ms`` (default: ``ms``).
        base: ``{group: units removed}`` of every other group while a group's counts were timed (empty:
            the dense model; see ``AllocationConfig.latency_passes``).
        clock: ``cpu`` (median single-thread CPU time of a forward) or ``wall`` (fastest wall time; tables
            written before the clock was recorded are wall-time tables).
        threads: intra-op threads the variants ran on.
    """

    batch: int
    dense_ms: float
    ms: dict[str, dict[int, float]]
    measured: dict[str, dict[int, float]] | None = None
    base: dict[str, int] = field(default_factory=dict)
    clock: str = "wall"
    threads: int | None = None

    def at(self, group: str, n: int) -> float:
        if n == 0 and 0 not in self.ms.get(group, {}):
            return self.dense_ms
        try:
            return self.ms[group][n]
        except KeyError:
            raise ConfigError(f"the latency table has no entry for group {group!r} with {n} units removed; "
                              f"it was measured for: {', '.join(f'{g} {sorted(v)}' for g, v in self.ms.items())}"
                              ) from None

    def saved(self, group: str, n_from: int, n_to: int) -> float:
        """Milliseconds saved by going from ``n_from`` to ``n_to`` removed units of ``group``."""
        return self.at(group, n_from) - self.at(group, n_to)

    def check_covers(self, steps: Mapping[str, Sequence[int]], batch: int | None = None) -> None:
        """Raises ConfigError unless the table has every ``{group: counts}`` step (and was timed at ``batch``)."""
        if batch is not None and batch != self.batch:
            raise ConfigError(f"the latency table was measured at batch {self.batch}, but the allocation ranks "
                              f"steps at batch {batch}: set latency_table_batch to {self.batch}, or measure a new "
                              f"table (leave latency_table unset)")
        missing = [f"{g} {n}" for g, counts in steps.items() for n in counts
                   if n > 0 and n not in self.ms.get(g, {})]
        if missing:
            raise ConfigError(f"the latency table lacks {len(missing)} of the steps this allocation may take "
                              f"(group, units removed: {', '.join(missing[:5])}{', …' if len(missing) > 5 else ''}); "
                              f"it was measured for another model or other min_channels/round_to/max_ratio: "
                              f"measure a new table (leave latency_table unset)")

    def to_dict(self) -> dict[str, Any]:
        table = lambda t: {g: {str(n): round(ms, 4) for n, ms in v.items()} for g, v in t.items()}
        out = {"batch": self.batch, "dense_ms": round(self.dense_ms, 4), "ms": table(self.ms),
               "measured": table(self.measured if self.measured is not None else self.ms),
               "clock": self.clock, "threads": self.threads}
        return {**out, "base": dict(self.base)} if self.base else out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyTable:
        table = lambda t: {g: {int(n): float(ms) for n, ms in v.items()} for g, v in t.items()}
        threads = d.get("threads")
        return cls(int(d["batch"]), float(d["dense_ms"]), table(d["ms"]), table(d.get("measured", d["ms"])),
                   {str(g): int(n) for g, n in d.get("base", {}).items()}, str(d.get("clock", "wall")),
                   None if threads is None else int(threads))


def load_latency_table(path: str | Path) -> LatencyTable:
    """Reads a table written by a recipe run (``latency_table.json``) or :meth:`LatencyTable.to_dict`;
    a structured run's ``report.json`` works too (its allocation keeps the table it ranked by)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"latency table {str(path)!r} does not exist; give the latency_table.json of an earlier "
                          f"run with allocation_cost: latency, or leave latency_table unset to measure one") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"latency table {str(path)!r} is not readable JSON ({e})") from None
    if isinstance(d, dict) and "allocation" in d:  # a report.json
        d = d["allocation"].get("allocation", d["allocation"]).get("latency_table")
    try:
        return LatencyTable.from_dict(d)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ConfigError(f"{str(path)!r} holds no latency table (expected keys batch, dense_ms, ms, as in the "
                          f"latency_table.json of a run with allocation_cost: latency)") from None


def measure_latency_table(graph: DependencyGraph, steps: Mapping[str, Sequence[int]], batch: int = 256,
                          repeats: int = 5, export: InferenceConfig | None = None,
                          base: Mapping[str, int] | None = None, clock: str = "cpu") -> LatencyTable:
    """Times the model of ``graph`` with each group pruned by each count in ``steps``, alone or, given a
    ``base`` allocation, with every other group pruned as ``base`` says.

    Latency depends on the shapes only, so each variant removes the group's first free (unpinned)
    units of a copy; ``graph.model`` is not changed. All variants, the dense model and the ``base``
    model are timed in one interleaved run (``repeats`` rounds) on a batch of ``batch`` copies of the
    graph's example; the dense and base models run ``ANCHORS`` times a round (the median counts).

    Args:
        steps: ``{group name: numbers of units removed}`` (a group's count in ``base``, 0 by default, is
            the dense or base model itself and is timed once).
        export: how every variant is prepared before timing (see :func:`prunekit.export.prepare_inference`);
            ``None`` times the models as they are.
        base: ``{group: units removed}`` of the other groups (default: none, the dense model).
        clock: ``cpu``: each entry is the median CPU time of a forward on one intra-op thread (stable under
            load); ``wall``: the fastest wall time, at the current thread count (see the module docstring).
    """
    if clock not in CLOCKS:
        raise ConfigError(f"unknown latency clock {clock!r}; choose one of: {', '.join(CLOCKS)} (cpu: single-thread "
                          f"CPU time, stable on a busy machine)")
    example = next((a for a in graph.args if isinstance(a, torch.Tensor)), None)
    if example is None or graph.kwargs:
        raise ConfigError("a latency table needs a model called with one tensor input; build the graph with "
                          "DependencyGraph.build(model, x[:1])")
    base = {g: int(n) for g, n in (base or {}).items() if n}
    free = {name: np.flatnonzero(~graph.group(name).pinned) for name in {*steps, *base}}
    variant = lambda counts: _exported(copy.deepcopy(graph), {g: free[g][:n] for g, n in counts.items() if n}, export)
    keys: list[tuple[str, int] | str] = []
    models = []
    for name, counts in steps.items():
        for n in counts:
            if n != base.get(name, 0):
                keys.append((name, int(n)))
                models.append(variant({**base, name: int(n)}))
    # Every step's saving is measured against the dense (or base) model, so one slow timing of it would
    # shift them all: it runs ANCHORS times per round, spread through the round, and counts by its median.
    anchors = {"dense": variant({}), **({"base": variant(base)} if base else {})}
    for k in range(ANCHORS):
        for tag, model in anchors.items():
            at = k * len(models) // ANCHORS
            keys.insert(at, tag)
            models.insert(at, model)
    fmt = export.memory_format if export is not None else torch.contiguous_format
    ms = _timed(models, example[:1], batch, repeats, fmt, clock)
    anchor = {tag: float(np.median([t for key, t in zip(keys, ms, strict=True) if key == tag])) for tag in anchors}
    dense, own = anchor["dense"], anchor.get("base", anchor["dense"])
    measured: dict[str, dict[int, float]] = {name: {base[name]: own} if base.get(name) else {} for name in steps}
    for key, t in zip(keys, ms, strict=True):
        if isinstance(key, tuple):
            measured[key[0]][key[1]] = t
    fitted = {g: _non_increasing({0: own, **v}) for g, v in measured.items()}
    threads = 1 if clock == "cpu" else torch.get_num_threads()
    return LatencyTable(batch, dense, fitted, measured, base, clock, threads)


def _timed(models: list, example: torch.Tensor, batch: int, repeats: int, fmt, clock: str) -> list[float]:
    """One entry (ms) per model: ``clock`` ``cpu`` times on one intra-op thread, whose CPU time is then all
    the forward's work (``time.thread_time`` does not see other threads)."""
    run = lambda: compare_latency(models, example, batch=batch, warmup=1, repeats=repeats, memory_format=fmt)
    if clock == "cpu":
        with using(1):
            times = run()
    else:
        times = run()
    return [getattr(t, CLOCKS[clock]) for t in times]


def _non_increasing(ms: Mapping[int, float]) -> dict[int, float]:
    """Least-squares non-increasing fit of timings ``ms`` by count (pool adjacent violators: merge
    neighbouring blocks into their mean while a later one is slower)."""
    counts = sorted(ms)
    blocks: list[tuple[float, int]] = []  # (mean, points)
    for y in (ms[n] for n in counts):
        blocks.append((y, 1))
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            (m2, k2), (m1, k1) = blocks.pop(), blocks.pop()
            blocks.append(((m1 * k1 + m2 * k2) / (k1 + k2), k1 + k2))
    fitted = [m for m, k in blocks for _ in range(k)]
    return dict(zip(counts, fitted, strict=True))


def _exported(graph: DependencyGraph, plan: dict[str, np.ndarray], export: InferenceConfig | None):
    if plan:
        prune_groups(graph, plan)
    return prepare_inference(graph.model, export) if export is not None else graph.model.eval()
