"""Running exported models in ONNX Runtime: sessions, accuracy and latency measured *in the runtime*.

ONNX Runtime (the maintained CPU runtime with int8 kernels) is an optional dependency: everything
here imports it lazily, and asking for it without the ``[deploy]`` extra installed raises one
:class:`~prunekit.errors.MissingDependencyError` that names the extra.

Example:
    >>> acc = evaluate_onnx("model.onnx", (x_test, y_test)).accuracy
    >>> fp32, int8 = compare_onnx_latency(["model.onnx", "model.int8.onnx"], x_test[:1], batch=256)
    >>> fp32.median_ms / int8.median_ms      # the int8 speed-up, both timed under the same load
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunekit.errors import ConfigError, MissingDependencyError
from prunekit.measure.latency import Latency, time_runners

__all__ = ["OnnxEval", "compare_onnx_latency", "evaluate_onnx", "ort_session", "require_deploy", "run_session"]

#: The modules the ``[deploy]`` extra installs, and what each is for.
DEPLOY_MODULES = {"onnx": "the ONNX format", "onnxruntime": "running and quantising ONNX models",
                  "onnxscript": "torch's dynamo ONNX exporter"}


def require_deploy(module: str = "onnxruntime", what: str = "exporting to ONNX") -> Any:
    """Imports ``module`` (one of :data:`DEPLOY_MODULES`), or raises a :class:`MissingDependencyError`
    that names the ``[deploy]`` extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{what} needs {module!r} ({DEPLOY_MODULES.get(module, 'deployment')}), which is not installed; "
            f"install the deploy extra: pip install 'prunekit[deploy]'") from e


def ort_session(path: str | Path, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session for ``path`` with ``threads`` intra-op threads (and one inter-op
    thread, sequential execution), all graph optimisations on."""
    ort = require_deploy("onnxruntime", "running an ONNX model")
    if not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be an integer ≥ 1, got {threads!r}")
    if not Path(path).is_file():
        raise ConfigError(f"no ONNX model at {str(path)!r}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def as_tuple(inputs: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)


def feeds(session: Any, inputs: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, np.ndarray]:
    """The session's input dict for ``inputs`` (given in the order of the model's forward)."""
    tensors = as_tuple(inputs)
    names = [i.name for i in session.get_inputs()]
    if len(names) != len(tensors):
        raise ConfigError(f"the ONNX model takes {len(names)} input(s) ({', '.join(names)}), got {len(tensors)}")
    return {n: t.detach().cpu().contiguous().numpy() for n, t in zip(names, tensors, strict=True)}


def run_session(session: Any, inputs: torch.Tensor | Sequence[torch.Tensor]) -> list[np.ndarray]:
    """All outputs of ``session`` on ``inputs``."""
    return session.run(None, feeds(session, inputs))


@dataclass(frozen=True)
class OnnxEval:
    """Accuracy of an ONNX model measured in ONNX Runtime."""

    accuracy: float
    n: int
    path: str
    backend: str = "onnxruntime-cpu"

    def to_dict(self) -> dict:
        return asdict(self)


def _split(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(data, "x_test") and hasattr(data, "y_test"):
        return data.x_test, data.y_test
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], data[1]
    raise ConfigError(f"data must be a DataSplits (its test split is used) or an (x, y) pair, "
                      f"got {type(data).__name__}")


def evaluate_onnx(path: str | Path, data: Any, batch_size: int = 256, threads: int = 1) -> OnnxEval:
    """Top-1 accuracy of the ONNX model at ``path`` on ``data`` (a ``DataSplits``'s test split, or an
    ``(x, y)`` pair), run in ONNX Runtime — for an int8 model this is the measured accuracy."""
    x, y = _split(data)
    if len(x) != len(y) or len(x) == 0:
        raise ConfigError(f"data has {len(x)} inputs and {len(y)} labels; need the same, non-zero number")
    session = ort_session(path, threads)
    correct = 0
    for i in range(0, len(x), batch_size):
        logits = run_session(session, x[i:i + batch_size])[0]
        correct += int((np.argmax(logits, axis=-1) == y[i:i + batch_size].numpy()).sum())
    return OnnxEval(accuracy=correct / len(x), n=len(x), path=str(path))


def compare_onnx_latency(paths: Sequence[str | Path], example: torch.Tensor | Sequence[torch.Tensor],
                         batch: int = 1, threads: int = 1, warmup: int = 3, repeats: int = 20,
                         min_seconds: float = 0.0) -> list[Latency]:
    """Times several ONNX models (e.g. fp32 and int8) in ONNX Runtime on the same batch, alternating
    run by run so that the load of a shared machine hits all alike; the ratio of the medians is the
    fair speed-up.

    Args:
        paths: the ONNX files.
        example: one example input (or a tuple); the first sample is repeated to ``batch``.
        batch: batch size to time.
        threads: ONNX Runtime intra-op threads of every session (recorded in the result).
        warmup: untimed runs of each session first.
        repeats: timed runs of each session (at least).
        min_seconds: keep timing until this much time has passed.
    """
    if batch < 1 or repeats < 1:
        raise ConfigError(f"batch and repeats must be ≥ 1, got batch={batch}, repeats={repeats}")
    x = tuple(t[:1].expand(batch, *t.shape[1:]).contiguous() for t in as_tuple(example))
    sessions = [ort_session(p, threads) for p in paths]
    runners = {i: functools.partial(s.run, None, feeds(s, x)) for i, s in enumerate(sessions)}
    times = time_runners(runners, batch=batch, threads=threads, warmup=warmup, repeats=repeats,
                         min_seconds=min_seconds, device="onnxruntime-cpu")
    return [times[i] for i in range(len(sessions))]
