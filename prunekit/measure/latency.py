"""Measured inference latency on the current device.

The median of repeated timed runs after warm-up; the thread count is recorded with the result
because CPU latency depends on it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["Latency", "compare_latency", "measure_latency"]


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

    def to_dict(self) -> dict:
        return asdict(self)


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
    Arguments as in :func:`measure_latency`; returns one :class:`Latency` per model.
    """
    if batch < 1 or repeats < 1:
        raise ValueError(f"batch and repeats must be ≥ 1, got batch={batch}, repeats={repeats}")
    x = example[:1].expand(batch, *example.shape[1:]).contiguous(memory_format=memory_format)
    device = next((p.device for p in models[0].parameters()), x.device)
    x = x.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training = [m.training for m in models]
    times: list[list[float]] = [[] for _ in models]
    try:
        for m in models:
            m.eval()
        for _ in range(warmup):
            for m in models:
                m(x)
        sync()
        start = time.perf_counter()
        while len(times[0]) < repeats or time.perf_counter() - start < min_seconds:
            for m, out in zip(models, times, strict=True):
                t0 = time.perf_counter()
                m(x)
                sync()
                out.append((time.perf_counter() - t0) * 1e3)
    finally:
        for m, flag in zip(models, was_training, strict=True):
            m.train(flag)
    return [_summary(t, batch, device) for t in times]


def _summary(times: list[float], batch: int, device: torch.device) -> Latency:
    times = sorted(times)
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return Latency(median_ms=statistics.median(times), p10_ms=q[0], p90_ms=q[-1], batch=batch,
                   repeats=len(times), threads=torch.get_num_threads(), device=str(device), min_ms=times[0])
