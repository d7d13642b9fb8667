"""Deploying a pruned model beside its dense original in ONNX Runtime, measured the same way.

:func:`deploy_onnx` is what a recipe's ``export`` stage and ``prunekit export`` do: export the pruned
and the dense model (each verified, see :func:`~prunekit.export.export_onnx`), optionally quantise the
pruned one to int8 (:func:`~prunekit.export.quantize_onnx`), measure every file's accuracy *in ONNX
Runtime* on the test split and time the files side by side in one session loop per batch size. The
result follows the report contract of issue 13: ``deployed`` (the pruned, quantised, exported model)
and ``dense_deployed`` (the dense model exported the same way, fp32, same runtime), each with
``accuracy``, ``latency_ms`` keyed by batch size, ``size_bytes``, ``backend`` and ``path``.

Example:
    >>> rep = deploy_onnx(pruned, dense, data, "runs/x/deploy", int8="static")
    >>> rep["dense_deployed"]["latency_ms"]["1"] / rep["deployed"]["latency_ms"]["1"]   # the speed-up
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from prunekit.errors import ConfigError, OutputExistsError
from prunekit.export.onnx_export import export_onnx
from prunekit.export.onnx_runtime import compare_onnx_latency, evaluate_onnx
from prunekit.export.quantize import QUANT_MODES, quantize_onnx

__all__ = ["DEPLOY_FILES", "deploy_onnx"]

#: The files :func:`deploy_onnx` writes: the dense fp32 model, the pruned fp32 model, the pruned int8 model.
DEPLOY_FILES = {"dense": "dense.onnx", "pruned": "model.onnx", "int8": "model.int8.onnx"}


def _entry(path: str, acc, latency: dict, backend: str, root: Path) -> dict:
    return {"accuracy": acc.accuracy, "latency_ms": latency, "size_bytes": os.path.getsize(path), "backend": backend,
            "path": os.path.relpath(path, root)}


def deploy_onnx(model: nn.Module, dense: nn.Module | None, data: Any, directory: str | Path, *,
                int8: str | None = None, batches: Sequence[int] = (1, 256), threads: int = 1, repeats: int = 20,
                calibration_samples: int = 512, relative_to: str | Path | None = None, exporter: str = "auto",
                force: bool = False) -> dict:
    """Exports ``model`` (and ``dense``) to ``directory`` and measures them in ONNX Runtime.

    Args:
        model: the pruned model (masked or physically smaller).
        dense: the dense model it came from, exported the same way (fp32) as the baseline; None: skipped.
        data: a ``DataSplits``: the test split measures accuracy, the training split calibrates static int8,
            ``x_test`` gives the example and held-out inputs of the export check.
        directory: where the ``.onnx`` files go (:data:`DEPLOY_FILES`).
        int8: ``static``, ``dynamic`` or None (fp32 only).
        batches: batch sizes to time.
        threads: ONNX Runtime intra-op threads.
        relative_to: the directory the reported ``path`` fields are relative to (default ``directory``).
        exporter: as in :func:`~prunekit.export.export_onnx` (``auto``, ``dynamo`` or ``torchscript``).
        force: replace existing files.

    Returns:
        ``{"deployed", "dense_deployed", "pruned_fp32", "exports", "quantize", "threads"}``: the first three
        in the report contract's form (``dense_deployed`` absent without ``dense``).
    """
    if int8 is not None:
        QUANT_MODES.get(int8)
    if not batches or any(not isinstance(b, int) or b < 1 for b in batches):
        raise ConfigError(f"batches must be positive integers, got {list(batches)}")
    directory = Path(directory)
    paths = {k: directory / v for k, v in DEPLOY_FILES.items() if (k != "int8" or int8) and (k != "dense" or dense)}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise OutputExistsError(f"{', '.join(existing)} exist(s); pass force=True (--force) to replace")
    example, root = data.x_test[:8], Path(relative_to or directory)
    exports = {"pruned": export_onnx(model, example, paths["pruned"], exporter=exporter, force=force).to_dict()}
    if dense is not None:
        exports["dense"] = export_onnx(dense, example, paths["dense"], exporter=exporter, force=force).to_dict()
    quant = None
    if int8:
        quant = quantize_onnx(paths["pruned"], paths["int8"], int8, force=force,
                              calibration=data.x_train[:calibration_samples] if int8 == "static" else None).to_dict()
    files = {k: str(p) for k, p in paths.items()}
    acc = {k: evaluate_onnx(p, data, threads=threads) for k, p in files.items()}
    latency: dict[str, dict[str, float]] = {k: {} for k in files}
    for b in batches:
        for k, t in zip(files, compare_onnx_latency(list(files.values()), example, batch=b, threads=threads,
                                                    repeats=repeats), strict=True):
            latency[k][str(b)] = t.median_ms
    fp32 = f"onnxruntime-cpu fp32, {threads} thread(s)"
    deployed_key = "int8" if int8 else "pruned"
    out = {"deployed": _entry(files[deployed_key], acc[deployed_key], latency[deployed_key],
                              f"onnxruntime-cpu int8 {int8}, {threads} thread(s)" if int8 else fp32, root),
           "pruned_fp32": _entry(files["pruned"], acc["pruned"], latency["pruned"], fp32, root),
           "exports": exports, "quantize": quant, "threads": threads}
    if dense is not None:
        out["dense_deployed"] = _entry(files["dense"], acc["dense"], latency["dense"], fp32, root)
    return out
