"""Exporting a (pruned) model to ONNX, verified in ONNX Runtime before it is kept.

torch has two ONNX exporters: the dynamo one (``torch.export`` + onnxscript, the default since
torch 2.9) and the legacy TorchScript tracer (``dynamo=False``). Both have shipped wrong graphs, so
neither is trusted: every export is run in ONNX Runtime on held-out inputs — at a different batch size
than the example, which proves the dynamic batch axis — and compared with PyTorch. The difference of
output k is recorded as

    max_abs_k = max |y_ort − y_torch|        max_rel_k = max_abs_k / max |y_torch|

(relative to the output's scale, so that near-zero logits do not blow it up). An export with
``max_rel_k > rtol`` for any output is refused with that output named. The file is written to a
temporary name in the target directory and renamed only once it has passed, so a refused or failed
export leaves nothing behind.

Example:
    >>> res = export_onnx(model, x[:8], "out/model.onnx")
    >>> res.exporter, res.opset, res.max_rel        # e.g. ('dynamo', 18, 3.1e-07)
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from prunekit.errors import ConfigError, ExportError, OutputExistsError, PrunekitError
from prunekit.export.fold import fold_batchnorm
from prunekit.export.onnx_runtime import as_tuple, ort_session, require_deploy, run_session
from prunekit.registry import Registry

__all__ = ["EXPORTERS", "ExportResult", "OutputDiff", "export_onnx", "held_out_inputs", "plain_copy"]

#: ``exporter(model, args, path, *, input_names, output_names, dynamic_batch, opset)`` by name.
EXPORTERS: Registry = Registry("ONNX exporter")
#: The order ``exporter="auto"`` tries them in: the torch default first.
AUTO_ORDER = ("dynamo", "torchscript")


@dataclass(frozen=True)
class OutputDiff:
    """How far ONNX Runtime's output ``name`` is from PyTorch's on the held-out inputs."""

    name: str
    max_abs: float
    max_rel: float


@dataclass(frozen=True)
class ExportResult:
    """A verified ONNX export.

    Attributes:
        path: the ONNX file.
        exporter: the exporter that produced it (``dynamo`` or ``torchscript``).
        opset: the ONNX opset of the default domain, read from the file.
        outputs: per-output differences to PyTorch on the held-out inputs.
        check_batches: batch sizes of the held-out inputs it was verified on.
        attempts: exporters tried before and what went wrong (``auto`` mode), e.g. a refused mismatch.
    """

    path: str
    exporter: str
    opset: int
    dynamic_batch: bool
    fold_bn: bool
    rtol: float
    outputs: tuple[OutputDiff, ...]
    check_batches: tuple[int, ...]
    attempts: tuple[dict, ...] = field(default_factory=tuple)

    @property
    def max_abs(self) -> float:
        return max(o.max_abs for o in self.outputs)

    @property
    def max_rel(self) -> float:
        return max(o.max_rel for o in self.outputs)

    def to_dict(self) -> dict:
        return {**asdict(self), "max_abs": self.max_abs, "max_rel": self.max_rel}


def _dynamic_dims(args, dynamic_batch: bool, dynamic_sequence: bool) -> list[dict[int, str]]:
    """Per input: its dynamic dimensions by index (0: ``batch``, 1: ``sequence``)."""
    return [{**({0: "batch"} if dynamic_batch else {}), **({1: "sequence"} if dynamic_sequence and a.dim() > 1 else {})}
            for a in args]


@EXPORTERS.register("dynamo")
def _dynamo(model, args, path, *, input_names, output_names, dynamic_batch, opset, dynamic_sequence=False):
    require_deploy("onnxscript", "torch's dynamo ONNX exporter")
    dims = {"batch": torch.export.Dim("batch", min=1), "sequence": torch.export.Dim("sequence", min=2)}
    per_input = _dynamic_dims(args, dynamic_batch, dynamic_sequence)
    shapes = tuple({i: dims[n] for i, n in d.items()} for d in per_input) if any(per_input) else None
    torch.onnx.export(model, args, path, dynamo=True, external_data=False, dynamic_shapes=shapes, verbose=False,
                      input_names=input_names, output_names=output_names, opset_version=opset)


@EXPORTERS.register("torchscript")
def _torchscript(model, args, path, *, input_names, output_names, dynamic_batch, opset, dynamic_sequence=False):
    axes = {**dict(zip(input_names, _dynamic_dims(args, dynamic_batch, dynamic_sequence), strict=True)),
            **{n: {0: "batch"} for n in output_names if dynamic_batch}}
    axes = {k: v for k, v in axes.items() if v} or None
    torch.onnx.export(model, args, path, dynamo=False, input_names=input_names, output_names=output_names,
                      dynamic_axes=axes, opset_version=opset, do_constant_folding=True)


def plain_copy(model: nn.Module, fold_bn: bool = True) -> nn.Module:
    """A copy of ``model`` in eval mode with its masks folded into the weights (mask buffers and the
    hooks that re-apply them removed) and, with ``fold_bn``, its BatchNorms folded into the convs."""
    twin = copy.deepcopy(model).eval()
    for module in twin.modules():
        masks = [n for n, _ in module.named_buffers(recurse=False) if n.endswith("_mask")]
        for name in masks:
            with torch.no_grad():
                getattr(module, name[: -len("_mask")]).mul_(getattr(module, name))
            delattr(module, name)
        if masks:  # the MaskSet pre-hook reads the buffers just removed
            module._forward_pre_hooks.clear()
    if fold_bn and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in twin.modules()):
        twin = fold_batchnorm(twin)
    return twin


def held_out_inputs(example: Sequence[torch.Tensor], batch: int, seed: int = 1234) -> tuple[torch.Tensor, ...]:
    """Inputs like ``example`` (same per-sample shape and dtype, values drawn with the example's
    mean and spread, or integer ids in its range) at batch size ``batch``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for t in example:
        shape = (batch, *t.shape[1:])
        if t.dtype == torch.bool:
            out.append(torch.rand(shape, generator=g) < 0.5)
        elif not t.is_floating_point():
            out.append(torch.randint(int(t.min()), int(t.max()) + 1, shape, generator=g, dtype=t.dtype))
        else:
            mean, std = t.float().mean(), t.float().std().clamp_min(1e-3) if t.numel() > 1 else torch.tensor(1.0)
            out.append((mean + std * torch.randn(shape, generator=g)).to(t.dtype))
    return tuple(out)


def _flat_outputs(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _flat_outputs(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flat_outputs(o)]
    raise ExportError(f"the model returns a {type(out).__name__}; ONNX export needs tensors "
                      "(or tuples/lists/dicts of them)")


def _compare(session, check_sets, references, output_names) -> tuple[OutputDiff, ...]:
    worst = {n: (0.0, 0.0) for n in output_names}
    for inputs, ref in zip(check_sets, references, strict=True):
        got = run_session(session, inputs)
        if len(got) != len(ref):
            raise ExportError(f"ONNX Runtime returned {len(got)} outputs, PyTorch {len(ref)}")
        for name, g, r in zip(output_names, got, ref, strict=True):
            g = torch.from_numpy(g).to(torch.float64)
            r = r.detach().to(torch.float64)
            if g.shape != r.shape:
                raise ExportError(f"output {name!r} has shape {tuple(g.shape)} in ONNX Runtime but "
                                  f"{tuple(r.shape)} in PyTorch (batch {r.shape[0] if r.dim() else '-'})")
            diff = float((g - r).abs().max()) if g.numel() else 0.0
            rel = diff / max(float(r.abs().max()) if r.numel() else 0.0, 1e-12)
            worst[name] = (max(worst[name][0], diff), max(worst[name][1], rel))
    return tuple(OutputDiff(n, a, r) for n, (a, r) in worst.items())


def _opset(path: str) -> int:
    onnx = require_deploy("onnx", "reading an ONNX model")
    proto = onnx.load(path, load_external_data=False)
    return next(int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _check_args(path: Path, force: bool, exporter: str, rtol: float) -> tuple[str, ...]:
    if path.exists() and not force:
        raise OutputExistsError(f"{str(path)!r} exists; choose another path or pass force=True to replace it")
    if path.is_dir():
        raise ConfigError(f"{str(path)!r} is a directory; give the ONNX file's path, e.g. {str(path / 'model.onnx')!r}")
    if not (isinstance(rtol, (int, float)) and rtol > 0):
        raise ConfigError(f"rtol must be a positive number, got {rtol!r}")
    if exporter == "auto":
        return AUTO_ORDER
    EXPORTERS.get(exporter)
    return (exporter,)


def export_onnx(model: nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor], path: str | Path, *,
                dynamic_batch: bool = True, dynamic_sequence: bool = False, opset: int | None = None,
                fold_bn: bool = True,
                check_inputs: torch.Tensor | Sequence[torch.Tensor] | None = None, rtol: float = 1e-4,
                exporter: str = "auto", force: bool = False) -> ExportResult:
    """Exports ``model`` to ONNX at ``path`` and verifies it in ONNX Runtime (see the module docstring).

    Args:
        model: a masked or physically pruned model (not modified: a copy is exported, its masks folded
            in and, with ``fold_bn``, its BatchNorms folded into the convs).
        example_inputs: one input batch (or a tuple, in the order of ``forward``).
        path: the ``.onnx`` file to write; its directory is created.
        dynamic_batch: make dimension 0 of every input and output dynamic.
        dynamic_sequence: make dimension 1 of every input dynamic too (token ids and masks of any length); the
            export is then also checked on inputs of another length.
        opset: ONNX opset; ``None``: the exporter's default (the one used is recorded).
        check_inputs: held-out inputs to verify on, besides the generated ones (at the example's batch
            size + 3, when ``dynamic_batch``, to prove the dynamic axis).
        rtol: the largest accepted ``max_rel`` of any output.
        exporter: ``dynamo``, ``torchscript`` or ``auto`` (dynamo, then torchscript if dynamo fails or
            does not match; each failed try is recorded in ``attempts``).
        force: replace an existing file.

    Raises:
        MissingDependencyError: onnx/onnxruntime are not installed (the ``[deploy]`` extra).
        OutputExistsError: ``path`` exists and ``force`` is false.
        ExportError: no exporter produced a model that matches PyTorch; names the failing output.
    """
    path = Path(path)
    order = _check_args(path, force, exporter, rtol)
    require_deploy("onnx")
    require_deploy("onnxruntime")
    example = as_tuple(example_inputs)
    if example[0].dim() == 0:
        raise ConfigError("example_inputs must have a batch dimension")
    if dynamic_batch and example[0].shape[0] == 1:  # torch.export specialises size-1 dims
        example = tuple(t.expand(2, *t.shape[1:]).contiguous() for t in example)
    twin = plain_copy(model, fold_bn)
    check_sets = [as_tuple(check_inputs)] if check_inputs is not None else []
    batch = example[0].shape[0] + 3 if dynamic_batch else example[0].shape[0]
    check_sets.append(held_out_inputs(example, batch))
    if dynamic_sequence and example[0].dim() > 1 and example[0].shape[1] > 2:
        shorter = tuple(t[:, : max(2, t.shape[1] // 2)] if t.dim() > 1 else t for t in example)
        check_sets.append(held_out_inputs(shorter, batch, seed=4321))
    with torch.no_grad():
        references = [_flat_outputs(twin(*c)) for c in check_sets]
        n_out = len(_flat_outputs(twin(*example)))
    input_names = ["input"] if len(example) == 1 else [f"input_{i}" for i in range(len(example))]
    output_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    path.parent.mkdir(parents=True, exist_ok=True)
    attempts = []
    for name in order:
        try:
            outputs, opset_used = _try(EXPORTERS.get(name), twin, example, path, input_names, output_names,
                                       (dynamic_batch, dynamic_sequence), opset, check_sets, references, rtol)
        except PrunekitError as e:
            if isinstance(e, ConfigError) or len(order) == 1:
                raise
            attempts.append({"exporter": name, "error": str(e)})
            continue
        return ExportResult(str(path), name, opset_used, dynamic_batch, fold_bn, rtol, outputs,
                            tuple(c[0].shape[0] for c in check_sets), tuple(attempts))
    raise ExportError("no exporter produced a model that matches PyTorch: "
                      + "; ".join(f"{a['exporter']}: {a['error']}" for a in attempts))


def _try(export: Callable, twin, example, path: Path, input_names, output_names, dynamic, opset,
         check_sets, references, rtol) -> tuple[tuple[OutputDiff, ...], int]:
    """One exporter: writes a temporary file beside ``path``, verifies it, renames it to ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        try:
            # with grad on, nn.TransformerEncoder takes its exportable path, not the fused fast path
            with warnings.catch_warnings(), torch.enable_grad():
                warnings.simplefilter("ignore")
                for p in twin.parameters():
                    p.requires_grad_(p.is_floating_point())
                export(twin, example, tmp, input_names=input_names, output_names=output_names,
                       dynamic_batch=dynamic[0], dynamic_sequence=dynamic[1], opset=opset)
        except Exception as e:  # the exporters raise many types; the message is what helps
            raise ExportError(f"{export.__name__.strip('_')} export failed: {type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else ''} (fix: write that op with "
                              "standard torch ops, or try the other exporter: exporter='dynamo' / 'torchscript')"
                              ) from e
        try:
            session = ort_session(tmp)
        except Exception as e:  # onnxruntime raises its own types for ops it cannot load
            raise ExportError(f"ONNX Runtime cannot load the exported model (an op or type without a CPU kernel): "
                              f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__} (fix: try the "
                              "other exporter or another opset, or replace that op)") from e
        outputs = _compare(session, check_sets, references, output_names)
        bad = [o for o in outputs if not o.max_rel <= rtol]
        if bad:
            raise ExportError("export does not match PyTorch: " + ", ".join(
                f"output {o.name!r} max_rel {o.max_rel:.3g} > rtol {rtol:g} (max_abs {o.max_abs:.3g})" for o in bad))
        opset_used = _opset(tmp)
        os.replace(tmp, path)
        return outputs, opset_used
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
