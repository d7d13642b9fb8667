"""Measured inference latency on the current device.

The median of repeated timed runs after warm-up. Every run records its wall time and, beside it, the
CPU time it took (``time.thread_time`` of the timing thread and ``time.process_time`` of the whole
process): on a machine other processes share, wall time grows with every runnable process (the
scheduler hands the core to someone else mid-forward), while the CPU time a forward takes barely
moves, so CPU time is the measure to *rank* variants by under load (see
:mod:`prunekit.allocation.latency`) and wall time the one to *report*. The thread count and the
load average are recorded with the result because both change CPU latency.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.measure.threads import load_average

__all__ = ["Latency", "Stopwatch", "compare_latency", "measure_latency", "time_runners"]


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p10_ms: float
    p90_ms: float
    batch: int
    repeats: int
    threads: int
    device: str
    min_ms: float  # the fastest run: contention on a shared machine only ever adds time
    cpu_ms: float | None = None  # median CPU time per run, all threads of the process (time.process_time)
    thread_cpu_ms: float | None = None  # median CPU time per run of the timing thread (time.thread_time)
    load_avg: float | None = None  # 1-minute load average when the timing started

    def to_dict(self) -> dict:
        return asdict(self)


class Stopwatch:
    """Wall and CPU seconds since it was made: ``Stopwatch().read() -> {"wall": s, "cpu": s}``.

    CPU time is ``time.process_time`` (every thread of the process); on a busy machine wall time grows
    with the other runnable processes, CPU time does not, so a report that gives both tells a slow
    machine from a slow run.
    """

    def __init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def read(self) -> dict[str, float]:
        return {"wall": round(time.perf_counter() - self.wall0, 2), "cpu": round(time.process_time() - self.cpu0, 2)}


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    example: torch.Tensor,
    batch: int = 1,
    warmup: int = 3,
    repeats: int = 20,
    min_seconds: float = 0.0,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> Latency:
    """Times ``model`` on a batch built by repeating the first sample of ``example``.

    Args:
        model: model to time (put in eval mode for the measurement, then restored).
        example: one example input; its first dimension is the batch.
        batch: batch size to time.
        warmup: untimed runs first.
        repeats: timed runs (at least); more are run until ``min_seconds`` have passed.
        min_seconds: keep timing until this much time has been spent.
        memory_format: layout of the timed batch; ``torch.channels_last`` for a model whose weights
            are channels-last (see :func:`prunekit.export.prepare_inference`).
    """
    return compare_latency([model], example, batch, warmup, repeats, min_seconds, memory_format)[0]


@torch.no_grad()
def compare_latency(
    models: Sequence[nn.Module],
    example: torch.Tensor,
    batch: int = 1,
    warmup: int = 3,
    repeats: int = 20,
    min_seconds: float = 0.0,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> list[Latency]:
    """Times several models (e.g. dense and pruned) on the same batch, alternating run by run.

    On a shared machine the load changes over seconds; interleaving exposes every model to the same
    load, so the ratio of their medians is a fair speed-up even when the absolute times are not.
    Arguments as in :func:`measure_latency`; returns one :class:`Latency` per model. The timing itself is
    :func:`time_runners` (each timed run after an untimed one of the same model).
    """
    if batch < 1 or repeats < 1:
        raise ValueError(f"batch and repeats must be ≥ 1, got batch={batch}, repeats={repeats}")
    x = example[:1].expand(batch, *example.shape[1:]).contiguous(memory_format=memory_format)
    device = next((p.device for p in models[0].parameters()), x.device)
    x = x.to(device)
    was_training = [m.training for m in models]
    try:
        for m in models:
            m.eval()
        runners = {i: functools.partial(m, x) for i, m in enumerate(models)}
        times = time_runners(runners, batch=batch, threads=torch.get_num_threads(), warmup=warmup, repeats=repeats,
                             min_seconds=min_seconds, device=str(device),
                             sync=torch.cuda.synchronize if device.type == "cuda" else None)
    finally:
        for m, flag in zip(models, was_training, strict=True):
            m.train(flag)
    return [times[i] for i in range(len(models))]


def time_runners(runners: Mapping[Any, Callable[[], Any]], *, batch: int, threads: int | None = None,
                 warmup: int = 3, repeats: int = 20, min_seconds: float = 0.0, device: str = "cpu",
                 sync: Callable[[], Any] | None = None) -> dict[Any, Latency]:
    """Times every runner ``repeats`` times (at least; more until ``min_seconds``), alternating run by run: the
    one timing loop of prunekit (models, torch sparse kernels, ONNX Runtime sessions alike).

    Each runner is a no-argument callable that runs one forward pass on a batch already bound to it. Each turn
    is one untimed call and then the timed one: the timed call finds the runner's weights in cache, as a server
    answering request after request would, whatever the runner before it evicted (without it, the first runner
    of a turn measured 1.5× slower than the same computation later in the turn: LeNet-300-100 dense vs masked,
    batch 1). Each timed run records its wall time, the CPU time of the process (``time.process_time``: ONNX
    Runtime with one intra-op thread computes on the calling thread, so its CPU time is counted too) and of the
    calling thread (``time.thread_time``).

    Args:
        runners: name → a callable that runs one forward pass of ``batch`` samples.
        batch: recorded with the result (the runners hold their batch).
        threads: recorded with the result (the caller sets the thread counts); None: torch's.
        warmup: untimed calls of each runner first.
        repeats: timed calls of each runner (at least).
        min_seconds: keep timing until this much time has passed.
        device: recorded with the result.
        sync: called after each run before the clock stops (e.g. ``torch.cuda.synchronize``).

    Returns:
        name → :class:`Latency` (``median_ms`` wall, ``cpu_ms`` process CPU time per run, ``thread_cpu_ms``).
    """
    if not runners:
        raise ConfigError("nothing to time: give at least one runner")
    if batch < 1 or repeats < 1 or warmup < 0:
        raise ConfigError(f"batch and repeats must be ≥ 1 and warmup ≥ 0, got {batch}, {repeats}, {warmup}")
    sync = sync or (lambda: None)
    load = load_average()
    for _ in range(warmup):
        for run in runners.values():
            run()
    sync()
    wall: dict[Any, list[float]] = {k: [] for k in runners}
    cpu: dict[Any, list[float]] = {k: [] for k in runners}
    thread_cpu: dict[Any, list[float]] = {k: [] for k in runners}
    first = next(iter(runners))
    start = time.perf_counter()
    while len(wall[first]) < repeats or time.perf_counter() - start < min_seconds:
        for name, run in runners.items():
            run()  # untimed: brings this runner's weights back into cache
            sync()
            p0, tc0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
            run()
            sync()
            t1, tc1, p1 = time.perf_counter(), time.thread_time(), time.process_time()
            wall[name].append((t1 - t0) * 1e3)
            thread_cpu[name].append((tc1 - tc0) * 1e3)
            cpu[name].append((p1 - p0) * 1e3)
    threads = torch.get_num_threads() if threads is None else threads
    return {k: _summary(wall[k], cpu[k], thread_cpu[k], batch, device, load, threads) for k in runners}


def _summary(times: list[float], cpu: list[float], thread_cpu: list[float], batch: int, device: str,
             load: float | None, threads: int) -> Latency:
    times = sorted(times)
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return Latency(median_ms=statistics.median(times), p10_ms=q[0], p90_ms=q[-1], batch=batch,
                   repeats=len(times), threads=threads, device=device, min_ms=times[0],
                   cpu_ms=statistics.median(cpu), thread_cpu_ms=statistics.median(thread_cpu), load_avg=load)
