"""Measurement: every number prunekit reports comes from here.

Parameters and sparsity (:mod:`.params`), MACs (:mod:`.macs`), size on disk (:mod:`.size`),
latency with CPU time beside wall time (:mod:`.latency`: one timing loop, :func:`time_runners`, for models,
kernels and ONNX Runtime sessions), the thread count it ran at
(:mod:`.threads`), accuracy and loss (:mod:`prunekit.training.evaluate`).
"""

from prunekit.measure.latency import Latency, Stopwatch, compare_latency, measure_latency, time_runners
from prunekit.measure.macs import MacCount, count_macs
from prunekit.measure.params import ParamCount, count_params, global_sparsity, layer_sparsity
from prunekit.measure.size import SizeOnDisk, size_on_disk
from prunekit.measure.threads import ThreadChoice

__all__ = [
    "Latency",
    "MacCount",
    "ParamCount",
    "SizeOnDisk",
    "Stopwatch",
    "ThreadChoice",
    "count_macs",
    "count_params",
    "global_sparsity",
    "layer_sparsity",
    "compare_latency",
    "measure_latency",
    "size_on_disk",
    "time_runners",
]
