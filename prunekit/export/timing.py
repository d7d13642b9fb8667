"""Timing models of different runtimes (PyTorch eager, torch sparse kernels, ONNX Runtime sessions) side by side.

Each runner is a no-argument callable that runs one forward pass on a batch already bound to it. The runners are
called in turn, run by run, so the load of a shared machine hits them alike. Each turn is one untimed call and then
the timed one: the timed call finds the runner's weights in cache as a server answering request after request
would, whatever the runner before it evicted (without it, the first runner of a turn measured 1.5× slower than the
same computation later in the turn: LeNet-300-100 dense vs masked, batch 1). Each timed run records its wall time and
the CPU time of the process (``time.process_time``: on a machine other processes share, wall time grows with
every runnable process while the CPU time of a one-thread forward barely moves — compare by ``cpu_ms``, report
both). ONNX Runtime with one intra-op thread computes on the calling thread, so its CPU time is counted too.

Example:
    >>> t = time_runners({"torch": lambda: model(x), "ort": lambda: session.run(None, feed)}, repeats=50)
    >>> t["torch"].cpu_ms / t["ort"].cpu_ms
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from prunekit.errors import ConfigError
from prunekit.measure.latency import Latency
from prunekit.measure.threads import load_average

__all__ = ["time_runners"]


def _quantile_pair(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=10) if len(values) >= 2 else [values[0]] * 9
    return q[0], q[-1]


@torch.no_grad()
def time_runners(runners: Mapping[str, Callable[[], Any]], *, batch: int, threads: int, warmup: int = 3,
                 repeats: int = 20, min_seconds: float = 0.0, device: str = "cpu") -> dict[str, Latency]:
    """Times every runner ``repeats`` times (at least; more until ``min_seconds``), alternating run by run.

    Args:
        runners: name → a callable that runs one forward pass of ``batch`` samples.
        batch: recorded with the result (the runners hold their batch).
        threads: recorded with the result (the caller sets the thread counts).
        warmup: untimed calls of each runner first.
        repeats: timed calls of each runner (at least).
        min_seconds: keep timing until this much time has passed.
        device: recorded with the result.

    Returns:
        name → :class:`~prunekit.measure.Latency` (``median_ms`` wall, ``cpu_ms`` process CPU time per run).
    """
    if not runners:
        raise ConfigError("nothing to time: give at least one runner")
    if batch < 1 or repeats < 1 or warmup < 0:
        raise ConfigError(f"batch and repeats must be ≥ 1 and warmup ≥ 0, got {batch}, {repeats}, {warmup}")
    load = load_average()
    for _ in range(warmup):
        for run in runners.values():
            run()
    wall: dict[str, list[float]] = {k: [] for k in runners}
    cpu: dict[str, list[float]] = {k: [] for k in runners}
    start = time.perf_counter()
    while len(wall[next(iter(runners))]) < repeats or time.perf_counter() - start < min_seconds:
        for name, run in runners.items():
            run()  # untimed: brings this runner's weights back into cache
            c0, t0 = time.process_time(), time.perf_counter()
            run()
            t1, c1 = time.perf_counter(), time.process_time()
            wall[name].append((t1 - t0) * 1e3)
            cpu[name].append((c1 - c0) * 1e3)
    out = {}
    for name in runners:
        times = sorted(wall[name])
        p10, p90 = _quantile_pair(times)
        out[name] = Latency(median_ms=statistics.median(times), p10_ms=p10, p90_ms=p90, batch=batch,
                            repeats=len(times), threads=threads, device=device, min_ms=times[0],
                            cpu_ms=statistics.median(cpu[name]), load_avg=load)
    return out
