"""Measurement of a dynamic model that cannot flatter it.

- :func:`time_per_input`: batch-1 latency over *every* input of a split, the static and the dynamic model
  alternated input by input (which one goes first alternates too), so load on a shared machine hits both alike.
  The clock is the timing thread's CPU time (``time.thread_time``; stable under load, see
  :mod:`prunekit.measure.latency`); wall time is recorded beside it, with the load average and thread count.
- :func:`time_batched`: the split in batches of ``batch``, alternated batch by batch, for the serving policy the
  model implements (early exits: confident rows leave the batch at each exit).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from prunekit.measure.threads import load_average

__all__ = ["time_batched", "time_per_input"]


def _clock():
    """The CPU clock: the timing thread's at one intra-op thread, the whole process's at more."""
    return (time.thread_time, "thread_time") if torch.get_num_threads() == 1 else (time.process_time, "process_time")


def _stats(cpu: list[float], wall: list[float]) -> dict:
    return {"mean_ms": statistics.fmean(cpu), "median_ms": statistics.median(cpu),
            "wall_mean_ms": statistics.fmean(wall), "wall_median_ms": statistics.median(wall), "n": len(cpu)}


def _alternate(models: Sequence[nn.Module], inputs: Sequence[torch.Tensor], passes: int = 1
               ) -> tuple[list[list[float]], list[list[float]], str]:
    """Runs every model on every input, the models' order reversed at each input; returns per model the CPU and
    wall milliseconds of each call, and the CPU clock's name."""
    cpu: list[list[float]] = [[] for _ in models]
    wall: list[list[float]] = [[] for _ in models]
    clock, clock_name = _clock()
    for _ in range(passes):
        for n, r in enumerate(inputs):
            order = range(len(models)) if n % 2 == 0 else reversed(range(len(models)))
            for j in order:
                c0, w0 = clock(), time.perf_counter()
                models[j](r)
                w1, c1 = time.perf_counter(), clock()
                cpu[j].append((c1 - c0) * 1e3)
                wall[j].append((w1 - w0) * 1e3)
    return cpu, wall, clock_name


@torch.no_grad()
def time_per_input(models: Sequence[nn.Module], x: torch.Tensor, warmup: int = 20,
                   memory_format: torch.memory_format = torch.contiguous_format) -> list[dict]:
    """Times each of ``models`` at batch 1 on every row of ``x``, alternating models input by input.

    Returns one dict per model: ``mean_ms``/``median_ms`` (thread CPU time per input), ``wall_mean_ms``,
    ``wall_median_ms``, ``n``, ``threads``, ``clock``, ``load_avg`` (before, after).
    """
    for m in models:
        m.eval()
    device = next(models[0].parameters()).device
    rows = [x[i:i + 1].to(device).contiguous(memory_format=memory_format) for i in range(len(x))]
    for r in rows[:warmup]:
        for m in models:
            m(r)
    load0 = load_average()
    cpu, wall, clock_name = _alternate(models, rows)
    meta = {"threads": torch.get_num_threads(), "clock": clock_name, "load_avg": [load0, load_average()],
            "order": "alternated input by input"}
    return [{**_stats(c, w), **meta} for c, w in zip(cpu, wall, strict=True)]


@torch.no_grad()
def time_batched(models: Sequence[nn.Module], x: torch.Tensor, batch: int, repeats: int = 3) -> list[dict]:
    """Times each model over all of ``x`` in batches of ``batch`` (alternated batch by batch, ``repeats`` passes);
    returns per model ``mean_ms`` per batch (thread CPU time), ``per_input_ms`` and ``wall_mean_ms``."""
    for m in models:
        m.eval()
    device = next(models[0].parameters()).device
    chunks = [x[i:i + batch].to(device) for i in range(0, len(x), batch)]
    for m in models:
        m(chunks[0])
    load0 = load_average()
    cpu, wall, clock_name = _alternate(models, chunks, repeats)
    out = []
    for c, w in zip(cpu, wall, strict=True):
        total_cpu, total_wall = sum(c) / repeats, sum(w) / repeats
        out.append({"batch": batch, "mean_ms": total_cpu / len(chunks), "per_input_ms": total_cpu / len(x),
                    "wall_mean_ms": total_wall / len(chunks), "threads": torch.get_num_threads(),
                    "clock": clock_name, "load_avg": [load0, load_average()]})
    return out
