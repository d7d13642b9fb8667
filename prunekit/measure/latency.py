"""Measured inference latency on the current device.

The median of repeated timed runs after warm-up; the thread count is recorded with the result
because CPU latency depends on it.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["Latency", "measure_latency"]


@dataclass(frozen=True)
class Latency:
    median_ms: float
    p10_ms: float
    p90_ms: float
    batch: int
    repeats: int
    threads: int
    device: str

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
    if batch < 1 or repeats < 1:
        raise ValueError(f"batch and repeats must be ≥ 1, got batch={batch}, repeats={repeats}")
    x = example[:1].expand(batch, *example.shape[1:]).contiguous(memory_format=memory_format)
    device = next((p.device for p in model.parameters()), x.device)
    x = x.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    was_training = model.training
    model.eval()
    try:
        for _ in range(warmup):
            model(x)
        sync()
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            model(x)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
    finally:
        model.train(was_training)
    times.sort()
    q = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    return Latency(
        median_ms=statistics.median(times),
        p10_ms=q[0],
        p90_ms=q[-1],
        batch=batch,
        repeats=len(times),
        threads=torch.get_num_threads(),
        device=str(device),
    )
