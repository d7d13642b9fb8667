"""One call that measures everything a report shows about a model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from prunekit.measure.latency import compare_latency, measure_latency
from prunekit.measure.macs import count_macs
from prunekit.measure.params import count_params, layer_sparsity
from prunekit.measure.size import size_on_disk

__all__ = ["measure_model", "time_side_by_side"]


def measure_model(
    model: nn.Module,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    latency_batches: list[int] = (1, 256),
    latency_repeats: int = 20,
    latency_model: nn.Module | None = None,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> dict:
    """Accuracy, loss, parameter and MAC counts, sizes and latency of ``model``.

    Args:
        latency_model: the model that is timed, when it differs from ``model``: e.g. its inference
            export (:func:`prunekit.export.prepare_inference`); every other figure is ``model``'s.
        memory_format: layout of the timed batches (``torch.channels_last`` for a channels-last export).

    Returns:
        A JSON-ready dict with ``accuracy`` (fraction), ``loss``, ``params``, ``nonzero_params``,
        ``macs``, ``nonzero_macs`` (one sample), ``size_bytes``, ``size_compressed_bytes``,
        ``latency_ms`` (median, keyed by batch size), ``latency`` (full timing records) and
        ``layer_sparsity``.
    """
    from prunekit.training import evaluate  # training imports measure-free code only

    device = next(model.parameters()).device
    example = x_test[:1].to(device)
    ev = evaluate(model, x_test, y_test)
    params = count_params(model)
    macs = count_macs(model, example)
    size = size_on_disk(model)
    timed = model if latency_model is None else latency_model
    timings = {str(b): measure_latency(timed, example, batch=b, repeats=latency_repeats,
                                       memory_format=memory_format)
               for b in latency_batches}
    return {
        "accuracy": ev.accuracy,
        "loss": ev.loss,
        "params": params.total,
        "nonzero_params": params.nonzero,
        "macs": macs.dense,
        "nonzero_macs": macs.nonzero,
        "size_bytes": size.dense_bytes,
        "size_compressed_bytes": size.compressed_bytes,
        "latency_ms": {b: t.median_ms for b, t in timings.items()},
        "latency": {b: t.to_dict() for b, t in timings.items()},
        "layer_sparsity": layer_sparsity(model),
    }


def time_side_by_side(models: Sequence[nn.Module], records: Sequence[dict], example: torch.Tensor,
                      latency_batches: Sequence[int], latency_repeats: int,
                      memory_format: torch.memory_format = torch.contiguous_format) -> None:
    """Times ``models`` (e.g. dense and pruned) alternately run by run at each batch size
    (:func:`~prunekit.measure.latency.compare_latency`), so machine load hits all alike; fills
    ``latency_ms`` and ``latency`` of the matching ``records`` (dicts from :func:`measure_model`)."""
    for rec in records:
        rec["latency_ms"], rec["latency"] = {}, {}
    for b in latency_batches:
        times = compare_latency(list(models), example, batch=b, repeats=latency_repeats, memory_format=memory_format)
        for rec, t in zip(records, times, strict=True):
            rec["latency_ms"][str(b)] = t.median_ms
            rec["latency"][str(b)] = {**t.to_dict(), "interleaved": True}
