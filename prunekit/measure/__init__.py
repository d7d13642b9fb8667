"""Measurement: every number prunekit reports comes from here.

Parameters and sparsity (:mod:`.params`), MACs (:mod:`.macs`), size on disk (:mod:`.size`),
latency (:mod:`.latency`), accuracy and loss (:mod:`prunekit.training.evaluate`).
"""

from prunekit.measure.latency import Latency, compare_latency, measure_latency
from prunekit.measure.macs import MacCount, count_macs
from prunekit.measure.params import ParamCount, count_params, global_sparsity, layer_sparsity
from prunekit.measure.size import SizeOnDisk, size_on_disk

__all__ = [
    "Latency",
    "MacCount",
    "ParamCount",
    "SizeOnDisk",
    "count_macs",
    "count_params",
    "global_sparsity",
    "layer_sparsity",
    "compare_latency",
    "measure_latency",
    "size_on_disk",
]
