"""Deploying a pruned model beside its dense original, every variant measured the same way in one run.

:func:`deploy_onnx` is what a recipe's ``export`` stage and ``prunekit export`` do: export the pruned and the dense
model (each verified, see :func:`~prunekit.export.export_onnx`), optionally quantise the pruned one to int8
(:func:`~prunekit.export.quantize_onnx`), measure every file's accuracy *in ONNX Runtime* on the test split, and time
the ONNX files and the PyTorch models (the dense and the pruned model in eager mode, and any
:class:`TorchVariant` given, e.g. the pruned model with sparse kernels) side by side, run by run, in one loop per
batch size (:func:`~prunekit.measure.time_runners`: wall and CPU time). The result follows the report
contract of issue 13: ``deployed`` (the pruned, quantised, exported model) and ``dense_deployed`` (the dense model
exported the same way, fp32, same runtime), each with ``accuracy``, ``latency_ms`` keyed by batch size,
``size_bytes``, ``backend`` and ``path``; ``table`` holds every variant (``cpu_ms``, ``zipped_bytes`` too).

Example:
    >>> rep = deploy_onnx(pruned, dense, data, "runs/x/deploy", int8="static")
    >>> rep["dense_deployed"]["latency_ms"]["1"] / rep["deployed"]["latency_ms"]["1"]   # the speed-up
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, OutputExistsError
from prunekit.export.deploy_data import DeployData, ImageDeploy, TextDeploy, as_deploy_data
from prunekit.export.onnx_export import export_onnx, plain_copy
from prunekit.export.onnx_runtime import feeds, ort_session
from prunekit.export.quantize import QUANT_MODES, quantize_onnx
from prunekit.export.sparse import torch_threads
from prunekit.measure.latency import time_runners
from prunekit.measure.size import dense_bytes, zip_bytes

__all__ = ["DEPLOY_FILES", "TorchVariant", "deploy_onnx", "torch_accuracy", "zipped_size"]

#: The files :func:`deploy_onnx` writes: the dense fp32 model, the pruned fp32 model, the pruned int8 model.
DEPLOY_FILES = {"dense": "dense.onnx", "pruned": "model.onnx", "int8": "model.int8.onnx"}


@dataclass(frozen=True)
class TorchVariant:
    """A PyTorch model timed beside the ONNX files.

    Attributes:
        label: the row's name in the table, e.g. ``pruned, torch sparse kernels``.
        model: the model, or one per batch size (e.g. the sparse kernels chosen for that batch).
        backend: what runs it, e.g. ``torch sparse CSR (MKL) fp32, 1 thread(s)``.
        size_bytes: its size on disk, if it is stored in a file of its own (else the fp32 safetensors size).
        path: that file.
    """

    label: str
    model: nn.Module | Mapping[int, nn.Module]
    backend: str
    size_bytes: int | None = None
    path: str | None = None

    def at(self, batch: int) -> nn.Module:
        return self.model[batch] if isinstance(self.model, Mapping) else self.model


def zipped_size(payload: bytes | str | Path) -> int:
    """Bytes of ``payload`` (or of the file at that path) in a zip archive, deflate level 9."""
    data = payload if isinstance(payload, bytes) else Path(payload).read_bytes()
    return len(zip_bytes(data, "model"))


def torch_accuracy(model: nn.Module, data: Any, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on the test split of ``data`` (on the CPU, eval mode)."""
    return ImageDeploy(data, batch_size).torch_metrics(model)["accuracy"]


def _torch_row(v: TorchVariant, data: DeployData, batches: Sequence[int]) -> dict:
    model = v.at(batches[0])
    state = model.state_dict()
    if any(k.endswith("_mask") for k in state):  # the masked model: its weights with the masks folded in
        state = plain_copy(model, False).state_dict()
    payload = dense_bytes({k: (t if t.layout == torch.strided else t.to_dense()).detach().cpu().contiguous()
                           for k, t in state.items() if t is not None})
    size = v.size_bytes if v.size_bytes is not None else len(payload)
    zipped = zipped_size(Path(v.path)) if v.path else zipped_size(payload)
    return {"label": v.label, "backend": v.backend, **data.torch_metrics(model), "size_bytes": size,
            "zipped_bytes": zipped, "path": v.path, "latency_ms": {}, "cpu_ms": {}}


def _time_all(rows: dict, sessions: dict, variants: dict, data: DeployData, batches, threads, repeats) -> None:
    for b in batches:
        x = data.batch(b)
        runners = {k: functools.partial(data.wrap(v.at(b)).eval(), *x) for k, v in variants.items()}
        runners.update({k: functools.partial(s.run, None, feeds(s, x)) for k, s in sessions.items()})
        with torch_threads(threads):
            times = time_runners(runners, batch=b, threads=threads, repeats=repeats)
        for k, t in times.items():
            rows[k]["latency_ms"][str(b)] = t.median_ms
            rows[k]["cpu_ms"][str(b)] = t.cpu_ms
            rows[k]["load_avg"] = t.load_avg


def deploy_onnx(model: nn.Module, dense: nn.Module | None, data: Any, directory: str | Path, *,
                int8: str | None = None, batches: Sequence[int] = (1, 256), threads: int = 1, repeats: int = 20,
                calibration_samples: int = 512, relative_to: str | Path | None = None, exporter: str = "auto",
                force: bool = False, variants: Mapping[str, TorchVariant] | None = None) -> dict:
    """Exports ``model`` (and ``dense``) to ``directory`` and measures every variant (see the module docstring).

    Args:
        model: the pruned model (masked or physically smaller).
        dense: the dense model it came from, exported the same way (fp32) as the baseline; None: skipped.
        data: a ``DataSplits`` (the test split measures accuracy, the training split calibrates static int8,
            ``x_test`` gives the example and held-out inputs of the export check) or a
            :class:`~prunekit.export.deploy_data.DeployData` (e.g. :class:`~prunekit.export.TextDeploy` for a
            Hugging Face encoder: accuracy and cosine to the dense model's embeddings).
        directory: where the ``.onnx`` files go (:data:`DEPLOY_FILES`).
        int8: ``static``, ``dynamic`` or None (fp32 only).
        batches: batch sizes to time.
        threads: ONNX Runtime intra-op threads, and torch's while timing.
        relative_to: the directory the reported ``path`` fields are relative to (default ``directory``).
        exporter: as in :func:`~prunekit.export.export_onnx` (``auto``, ``dynamo`` or ``torchscript``).
        force: replace existing files.
        variants: more PyTorch models to time in the same loop, by table key.

    Returns:
        ``{"deployed", "dense_deployed", "pruned_fp32", "table", "exports", "quantize", "threads"}``: the first
        three in the report contract's form (``dense_deployed`` absent without ``dense``); ``table``: every variant
        by key (``dense_torch``, ``dense``, ``pruned_torch``, ``pruned``, ``int8`` and the ``variants``).
    """
    if int8 is not None:
        QUANT_MODES.get(int8)
    if not batches or any(not isinstance(b, int) or b < 1 for b in batches):
        raise ConfigError(f"batches must be positive integers, got {list(batches)}")
    data = as_deploy_data(data)
    if int8 is not None and int8 != "dynamic" and data.calibration() is None:
        raise ConfigError(f"int8 {int8!r} calibrates on training inputs, which this data does not provide: use "
                          "int8='dynamic' (transformer encoders)")
    directory = Path(directory)
    paths = {k: directory / v for k, v in DEPLOY_FILES.items() if (k != "int8" or int8) and (k != "dense" or dense)}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise OutputExistsError(f"{', '.join(existing)} exist(s); pass force=True (--force) to replace")
    example, root = data.example(), Path(relative_to or directory)
    if isinstance(data, TextDeploy) and dense is not None and data.reference is None:
        data.reference = data.embeddings(dense)
    exp = functools.partial(export_onnx, dynamic_sequence=data.dynamic_sequence, exporter=exporter, force=force)
    exports = {"pruned": exp(data.wrap(model), example, paths["pruned"]).to_dict()}
    if dense is not None:
        exports["dense"] = exp(data.wrap(dense), example, paths["dense"]).to_dict()
    quant = None
    if int8:
        calibration = data.calibration()[:calibration_samples] if int8 == "static" else None
        quant = quantize_onnx(paths["pruned"], paths["int8"], int8, force=force, calibration=calibration).to_dict()
    eager = f"PyTorch eager fp32, {threads} thread(s)"
    torch_variants = {**({"dense_torch": TorchVariant("dense, PyTorch", dense, eager)} if dense is not None else {}),
                      "pruned_torch": TorchVariant("pruned, PyTorch (masked, dense kernels)", model, eager),
                      **(variants or {})}
    fp32 = f"onnxruntime-cpu fp32, {threads} thread(s)"
    labels = {"dense": ("dense, ONNX Runtime", fp32), "pruned": ("pruned, ONNX Runtime", fp32),
              "int8": (f"pruned, ONNX Runtime int8 {int8}", f"onnxruntime-cpu int8 {int8}, {threads} thread(s)")}
    rows = {k: _torch_row(v, data, batches) for k, v in torch_variants.items()}
    for r in rows.values():
        r["path"] = os.path.relpath(r["path"], root) if r["path"] else None
    for k, p in paths.items():
        rows[k] = {"label": labels[k][0], "backend": labels[k][1],
                   **data.onnx_metrics(ort_session(p, threads)), "size_bytes": os.path.getsize(p),
                   "zipped_bytes": zipped_size(p), "path": os.path.relpath(p, root), "latency_ms": {}, "cpu_ms": {}}
    sessions = {k: ort_session(p, threads) for k, p in paths.items()}
    _time_all(rows, sessions, torch_variants, data, batches, threads, repeats)
    order = ["dense_torch", "dense", "pruned_torch", "pruned", "int8", *(variants or {})]
    table = {k: rows[k] for k in order if k in rows}
    out = {"deployed": table["int8" if int8 else "pruned"], "pruned_fp32": table["pruned"], "table": table,
           "exports": exports, "quantize": quant, "threads": threads}
    if dense is not None:
        out["dense_deployed"] = table["dense"]
    return out
