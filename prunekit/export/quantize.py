"""int8 quantisation of an exported ONNX model with ONNX Runtime's quantisation tools.

Two modes, registered in :data:`QUANT_MODES`:

- ``static``: QDQ format, int8 weights per output channel, uint8 activations whose ranges are
  calibrated (min/max) on data the caller gives (Jacob et al. 2018, "Quantization and training of
  neural networks for efficient integer-arithmetic-only inference"; Krishnamoorthi 2018 for
  per-channel weights). ``quant_pre_process`` (shape inference and graph optimisation) runs first,
  as ONNX Runtime recommends. For CNNs. Activations are uint8 (U8S8) because on this project's x86
  CPU (AVX-512 VNNI) the signed S8S8 variant measured slower than fp32 on resnet_mini (0.90 vs 0.51 ms
  at batch 1) while U8S8 was faster (0.34 ms), all timed side by side in ONNX Runtime, 1 thread.
  Convolutions with fewer than :data:`MIN_INT8_CHANNELS` input channels per group (an image stem reading
  1–3 channels) stay fp32 by default — the common practice of keeping the first layer in full precision, and
  here a speed decision: the int8 kernels multiply groups of 4 int8 values, so a 1-channel 3×3 conv spends
  its time re-arranging inputs (1→16 channels on 28×28, batch 32: int8 1.05 ms vs fp32 0.25 ms, ONNX Runtime,
  1 thread; ``bench/results/deploy.md``).
- ``dynamic``: int8 weights, activation ranges computed per batch at run time; no calibration data.
  For Linear-heavy and transformer models, whose activation ranges vary from input to input.

The quantised model's accuracy is *measured* with :func:`prunekit.export.evaluate_onnx`, never assumed.

Example:
    >>> res = quantize_onnx("model.onnx", "model.int8.onnx", "static", calibration=data.x_train[:512])
    >>> evaluate_onnx(res.path, data).accuracy
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from prunekit.errors import ConfigError, ExportError, OutputExistsError
from prunekit.export.onnx_runtime import feeds, ort_session, require_deploy, run_session
from prunekit.registry import Registry

__all__ = ["QUANT_MODES", "QuantizeResult", "narrow_convs", "quantize_onnx"]

#: ``mode(src, dst, calibration, per_channel, batch_size, exclude) -> nodes kept fp32`` by name (``exclude``: node
#: names to keep in fp32, None for the mode's default).
QUANT_MODES: Registry = Registry("int8 quantisation mode")
#: Static int8 keeps a convolution in fp32 when it has fewer input channels per group than this (``keep_fp32="auto"``).
MIN_INT8_CHANNELS = 4


@dataclass(frozen=True)
class QuantizeResult:
    """An int8 ONNX model: where it is, how it was made, and its size beside the fp32 file's."""

    path: str
    source: str
    mode: str
    per_channel: bool
    calibration_samples: int
    size_bytes: int
    fp32_size_bytes: int
    backend: str = "onnxruntime-cpu"
    kept_fp32: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def _calibration_tensor(calibration: Any) -> torch.Tensor:
    if hasattr(calibration, "x_train"):
        return calibration.x_train
    if isinstance(calibration, (tuple, list)) and calibration and isinstance(calibration[0], torch.Tensor):
        return calibration[0]
    if isinstance(calibration, torch.Tensor):
        return calibration
    raise ConfigError(f"calibration must be a tensor of inputs, an (x, y) pair or a DataSplits (its training "
                      f"split is used), got {type(calibration).__name__}")


def _reader(session: Any, x: torch.Tensor, batch_size: int) -> Any:
    """An ONNX Runtime ``CalibrationDataReader`` over ``x`` in batches."""
    quant = require_deploy("onnxruntime.quantization", "int8 quantisation")

    class _Reader(quant.CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[dict] = (feeds(session, x[i:i + batch_size]) for i in range(0, len(x), batch_size))

        def get_next(self) -> dict | None:
            return next(self._batches, None)

        def rewind(self) -> None:
            self.__init__()

    return _Reader()


def narrow_convs(path: str | Path, min_channels: int = MIN_INT8_CHANNELS) -> list[str]:
    """Names of the ``Conv`` nodes of the ONNX model at ``path`` that have one group and fewer than
    ``min_channels`` input channels (their weight, an initializer, is ``(out, in, *kernel)``)."""
    onnx = require_deploy("onnx", "reading an ONNX model")
    graph = onnx.load(str(path)).graph
    dims = {t.name: list(t.dims) for t in graph.initializer}
    out = []
    for node in graph.node:
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        w = dims.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if w is not None and len(w) >= 3 and groups == 1 and w[1] < min_channels:
            out.append(node.name)
    return out


@QUANT_MODES.register("static")
def _static(src: str, dst: str, calibration: torch.Tensor | None, per_channel: bool, batch_size: int,
            exclude: list[str] | None) -> list[str]:
    quant = require_deploy("onnxruntime.quantization", "int8 quantisation")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = dst + ".pre.onnx"
    try:
        quant_pre_process(src, pre)
        exclude = narrow_convs(pre) if exclude is None else exclude  # names of the pre-processed graph
        reader = _reader(ort_session(pre), calibration, batch_size)
        quant.quantize_static(pre, dst, reader, quant_format=quant.QuantFormat.QDQ, per_channel=per_channel,
                              activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8,
                              calibrate_method=quant.CalibrationMethod.MinMax, nodes_to_exclude=exclude)
    finally:
        if os.path.exists(pre):
            os.remove(pre)
    return exclude


@QUANT_MODES.register("dynamic")
def _dynamic(src: str, dst: str, calibration: torch.Tensor | None, per_channel: bool, batch_size: int,
             exclude: list[str] | None) -> list[str]:
    quant = require_deploy("onnxruntime.quantization", "int8 quantisation")
    quant.quantize_dynamic(src, dst, per_channel=per_channel, weight_type=quant.QuantType.QInt8,
                           nodes_to_exclude=exclude or [])
    return exclude or []


#: Modes that calibrate activation ranges on data.
NEEDS_CALIBRATION = {"static"}


def quantize_onnx(src: str | Path, dst: str | Path, mode: str = "static", *, calibration: Any = None,
                  per_channel: bool | None = None, max_samples: int = 512, batch_size: int = 64,
                  keep_fp32: str | Sequence[str] = "auto", force: bool = False) -> QuantizeResult:
    """Quantises the ONNX model ``src`` to int8 at ``dst`` (see the module docstring for the modes).

    Args:
        src: an fp32 ONNX file (e.g. from :func:`prunekit.export.export_onnx`).
        dst: the int8 file to write (written under a temporary name, renamed when it loads and runs).
        mode: ``static`` (CNNs) or ``dynamic`` (Linear-heavy / transformer models).
        calibration: for ``static``: input tensors, an ``(x, y)`` pair or a ``DataSplits`` (its training
            split); the first ``max_samples`` are used.
        per_channel: per-output-channel weight scales; default: on for static, off for dynamic.
        keep_fp32: node names to leave in fp32; ``"auto"``: for ``static``, the convolutions with fewer than
            :data:`MIN_INT8_CHANNELS` input channels (:func:`narrow_convs`), none for ``dynamic``.
        force: replace an existing ``dst``.

    Raises:
        ConfigError: unknown mode, or ``static`` without calibration data.
        OutputExistsError: ``dst`` exists and ``force`` is false.
        ExportError: ONNX Runtime could not quantise the model, or the result does not load and run.
    """
    quantizer: Callable = QUANT_MODES.get(mode)
    src, dst = Path(src), Path(dst)
    if mode in NEEDS_CALIBRATION and calibration is None:
        raise ConfigError(f"int8 mode {mode!r} calibrates activation ranges on data, but no calibration data was "
                          "given: pass calibration= (e.g. the training split), or use mode='dynamic'")
    if not src.is_file():
        raise ConfigError(f"no ONNX model at {str(src)!r}; export one first with export_onnx")
    if dst.exists() and not force:
        raise OutputExistsError(f"{str(dst)!r} exists; choose another path or pass force=True to replace it")
    x = _calibration_tensor(calibration)[:max_samples] if calibration is not None else None
    per_channel = mode == "static" if per_channel is None else per_channel
    require_deploy("onnxruntime.quantization", "int8 quantisation")
    if isinstance(keep_fp32, str) and keep_fp32 != "auto":
        raise ConfigError(f"keep_fp32 must be 'auto' or a list of ONNX node names, got {keep_fp32!r}")
    exclude = None if keep_fp32 == "auto" else list(keep_fp32)
    if exclude:
        onnx = require_deploy("onnx", "reading an ONNX model")
        names = {n.name for n in onnx.load(str(src), load_external_data=False).graph.node}
        if unknown := [n for n in exclude if n not in names]:
            raise ConfigError(f"keep_fp32 names node(s) {unknown} that {str(src)!r} does not have; its nodes: "
                              f"{sorted(names)[:20]}{' ...' if len(names) > 20 else ''}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        try:
            kept = quantizer(str(src), tmp, x, per_channel, batch_size, exclude)
            session = ort_session(tmp)
            if x is not None:
                run_session(session, x[:2])
        except Exception as e:  # onnxruntime raises its own types; say which model and mode failed
            raise ExportError(f"ONNX Runtime could not quantise {str(src)!r} to int8 ({mode}): "
                              f"{type(e).__name__}: {e}") from e
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return QuantizeResult(str(dst), str(src), mode, per_channel, 0 if x is None else len(x),
                          dst.stat().st_size, src.stat().st_size, kept_fp32=tuple(kept))
