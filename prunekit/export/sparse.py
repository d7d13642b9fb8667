"""Real CPU speed from unstructured sparsity: sparse kernels where — and only where — they are faster.

A masked model computes with dense weights that happen to hold zeros, so it runs exactly as fast as
the dense one. :func:`sparsify_for_cpu` replaces sufficiently sparse ``nn.Linear`` (and 1×1 conv)
layers by :class:`SparseLinear`, which stores the weight as a ``torch.sparse`` CSR or BSR matrix
(compressed sparse rows / blocks, Buluç et al. 2009) and multiplies with MKL's sparse kernels. Whether
that pays off depends on the layer's shape, its sparsity, the pattern (single weights vs blocks, see
the ``block*`` granularities) and the batch size; so every candidate layer is timed dense and with
each sparse kernel *at the target batch size*, side by side, and replaced only where a sparse kernel
is measured faster; then the whole model is timed with and without the chosen sparse layers, and they
are kept only if the sparse model is faster as a whole. Every decision is recorded in
:class:`SparseDecision`, the whole-model check in :class:`SparsifyResult`.

Example:
    >>> res = sparsify_for_cpu(masked_model, batch_size=1, example_inputs=x[:1])
    >>> [(d.layer, d.sparsity, d.dense_ms, d.sparse_ms, d.chosen) for d in res.decisions]
    >>> torch.allclose(res.model(x), masked_model(x), atol=1e-5)
    True
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError, ExportError
from prunekit.export.onnx_export import plain_copy
from prunekit.measure.latency import time_runners
from prunekit.registry import Registry

__all__ = ["KERNELS", "SparseDecision", "SparseKernel", "SparseLinear", "SparsifyResult", "bsr_blocksize",
           "sparsify_for_cpu"]


@dataclass(frozen=True)
class SparseKernel:
    """One way to multiply by a sparse weight W (out × in): its storage format and the call.

    ``linear`` is ``F.linear(x, W, b)``; ``addmm`` is ``(b + W @ xᵀ)ᵀ``; ``addmv`` is ``b + W @ x`` for a
    single input row (the matrix-vector product; any other batch falls back to ``addmm``). Which is
    faster depends on the batch size: at batch 1 CSR ``addmv`` skips the per-call setup of the
    matrix-matrix path (measured here on a 300×784 layer at 1% density, 1 thread, CPU time: CSR
    ``addmv`` 8 µs, CSR ``linear`` 29 µs, dense ``linear`` 21 µs); ``addmm`` wins at batch 256.
    """

    name: str
    layout: str  # "csr" or "bsr"
    call: str  # "linear", "addmm" or "addmv"


#: The sparse kernels :func:`sparsify_for_cpu` tries, by name.
KERNELS: Registry = Registry("sparse kernel")
for _layout, _call in (("csr", "linear"), ("csr", "addmm"), ("csr", "addmv"), ("bsr", "linear"), ("bsr", "addmm")):
    KERNELS.register(f"{_layout}_{_call}")(SparseKernel(f"{_layout}_{_call}", _layout, _call))


def bsr_blocksize(weight: torch.Tensor, min_sparsity: float, sizes: Sequence[int] = (16, 8, 4)) -> int | None:
    """The largest square block (MKL's BSR needs square ones) dividing both sides of ``weight`` at
    which at least ``min_sparsity`` of the blocks are all zero; None if there is none."""
    rows, cols = weight.shape
    for b in sizes:
        if rows % b or cols % b:
            continue
        alive = (weight != 0).reshape(rows // b, b, cols // b, b).any(dim=3).any(dim=1)
        if 1.0 - alive.float().mean().item() >= min_sparsity:
            return b
    return None


class SparseLinear(nn.Module):
    """``y = x Wᵀ + b`` with W stored sparse (inference only).

    Args:
        weight: the dense (out × in) weight, zeros included.
        bias: the bias or None.
        kernel: a name in :data:`KERNELS`.
        blocksize: the square block of a ``bsr`` kernel.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, kernel: str, blocksize: int | None = None):
        super().__init__()
        self.kernel = KERNELS.get(kernel)
        if self.kernel.layout == "bsr" and not blocksize:
            raise ConfigError(f"kernel {kernel!r} needs a blocksize")
        w = weight.detach().reshape(weight.shape[0], -1)
        self.in_features, self.out_features, self.blocksize = w.shape[1], w.shape[0], blocksize
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore")
            sparse = w.to_sparse_bsr((blocksize, blocksize)) if self.kernel.layout == "bsr" else w.to_sparse_csr()
            sparse = _int32_indices(sparse)
        self._call = self.kernel.call  # a plain attribute: the forward runs per sample at batch 1
        self.register_buffer("weight", sparse)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.register_buffer("bias_col", None if bias is None else bias.detach().reshape(-1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._call == "addmv" and x.dim() == 2 and x.shape[0] == 1:  # the lean path: every op costs µs here
            if self.bias is None:
                return torch.mv(self.weight, x[0]).unsqueeze(0)
            return torch.addmv(self.bias, self.weight, x[0]).unsqueeze(0)
        flat = x.reshape(-1, self.in_features)
        if self._call == "linear":
            y = F.linear(flat, self.weight, self.bias)
        elif self.bias_col is None:
            y = torch.mm(self.weight, flat.T).T
        else:
            y = torch.addmm(self.bias_col, self.weight, flat.T).T
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        nnz = self.weight.values().count_nonzero().item()
        return (f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel.name}, "
                f"blocksize={self.blocksize}, density={nnz / (self.in_features * self.out_features):.3f}")


def _int32_indices(sparse: torch.Tensor) -> torch.Tensor:
    """The same CSR/BSR matrix with int32 indices: MKL's sparse kernels take int32, and torch converts int64
    ones on every call (measured: 10 vs 14 µs for a 300×784 CSR ``addmv`` at 0.7% density)."""
    if sparse.values().numel() >= 2**31 - 1:
        return sparse
    make = torch.sparse_bsr_tensor if sparse.layout == torch.sparse_bsr else torch.sparse_csr_tensor
    return make(sparse.crow_indices().to(torch.int32), sparse.col_indices().to(torch.int32), sparse.values(),
                sparse.shape)


class SparseConv1x1(nn.Module):
    """A 1×1 convolution (stride 1, no padding, one group) as a :class:`SparseLinear` over channels."""

    def __init__(self, linear: SparseLinear):
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.movedim(1, -1)).movedim(-1, 1)


def _is_pointwise(m: nn.Module) -> bool:
    return (isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and all(k == 1 for k in m.kernel_size)
            and all(s == 1 for s in m.stride) and all(p == 0 for p in m.padding) and m.groups == 1
            and m.padding_mode == "zeros")


def _sparse_module(module: nn.Module, kernel: str, blocksize: int | None) -> nn.Module:
    lin = SparseLinear(module.weight, module.bias, kernel, blocksize)
    return lin if isinstance(module, nn.Linear) else SparseConv1x1(lin)


@dataclass(frozen=True)
class SparseDecision:
    """What :func:`sparsify_for_cpu` measured and chose for one layer.

    Attributes:
        layer: module name; ``kind``: ``linear`` or ``conv1x1``; ``shape``: weight (out, in).
        sparsity: fraction of zero weights.
        dense_ms: median CPU ms (the process's) of the dense layer at ``batch``; ``sparse_ms``: of the fastest sparse
            kernel (``kernel``, with ``blocksize`` for BSR); ``kernels_ms``: every kernel tried.
        chosen: ``dense`` or the kernel that replaced the layer.
    """

    layer: str
    kind: str
    shape: tuple[int, int]
    sparsity: float
    batch: int
    dense_ms: float
    sparse_ms: float | None
    kernel: str | None
    blocksize: int | None
    kernels_ms: dict
    chosen: str

    @property
    def speedup(self) -> float | None:
        return self.dense_ms / self.sparse_ms if self.sparse_ms else None

    def to_dict(self) -> dict:
        return {**asdict(self), "speedup": self.speedup}


@dataclass
class SparsifyResult:
    """The model with sparse layers where they were measured faster, every decision, the largest output
    difference to the masked model on the example inputs, and the whole-model check.

    Attributes:
        dense_ms, sparse_ms: median CPU ms of the whole model with dense kernels and with the chosen sparse layers,
            timed side by side at the batch size (None when no layer was chosen).
        applied: the sparse layers were kept: False when the whole sparse model was not measured faster than the
            dense one (then ``model`` has dense kernels throughout, and the per-layer ``chosen`` stays as measured).
    """

    model: nn.Module
    decisions: list[SparseDecision]
    max_abs_diff: float
    threads: int
    dense_ms: float | None = None
    sparse_ms: float | None = None
    applied: bool = False

    def replaced(self) -> list[str]:
        """The layers that use sparse kernels in ``model``."""
        return [d.layer for d in self.decisions if d.chosen != "dense"] if self.applied else []

    def to_dict(self) -> dict:
        return {"decisions": [d.to_dict() for d in self.decisions], "replaced": self.replaced(),
                "max_abs_diff": self.max_abs_diff, "threads": self.threads, "dense_ms": self.dense_ms,
                "sparse_ms": self.sparse_ms, "applied": self.applied}


@contextlib.contextmanager
def torch_threads(n: int):
    """Runs the block with ``n`` torch intra-op threads, restoring the previous count after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _layer_inputs(model: nn.Module, names: list[str], example: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """The first input each named layer sees when ``model`` runs on ``example``."""
    seen: dict[str, torch.Tensor] = {}

    def record(name: str) -> Callable:
        def hook(_module, args, _out) -> None:  # returns None: a forward hook's return value replaces the output
            seen.setdefault(name, args[0].detach())
        return hook

    hooks = [model.get_submodule(n).register_forward_hook(record(n)) for n in names]
    try:
        with torch.no_grad():
            model(*example)
    finally:
        for h in hooks:
            h.remove()
    return seen


def _time_layer(name: str, module: nn.Module, x: torch.Tensor, batch: int, min_sparsity: float,
                kernels: Sequence[str], repeats: int) -> tuple[SparseDecision, nn.Module | None]:
    w = module.weight.detach().reshape(module.weight.shape[0], -1)
    sparsity = 1.0 - w.count_nonzero().item() / w.numel()
    block = bsr_blocksize(w, min_sparsity)
    candidates = {k: _sparse_module(module, k, block) for k in kernels
                  if (KERNELS.get(k).layout == "csr" or block is not None)
                  and (KERNELS.get(k).call != "addmv" or batch == 1)}  # addmv is addmm beyond batch 1
    sample = x[:1]
    with torch.no_grad():
        want = module(sample)
        for k, m in list(candidates.items()):
            if not torch.allclose(m(sample), want, rtol=1e-4, atol=1e-5):  # never keep a kernel that is wrong
                del candidates[k]
    times = _time_models({"dense": module, **candidates}, sample, batch, repeats)
    dense_ms = times.pop("dense")
    kernels_ms = times
    best = min(kernels_ms, key=kernels_ms.get) if kernels_ms else None
    faster = best is not None and kernels_ms[best] < dense_ms
    kind = "linear" if isinstance(module, nn.Linear) else "conv1x1"
    decision = SparseDecision(name, kind, tuple(w.shape), sparsity, batch, dense_ms, kernels_ms.get(best), best,
                              block if best and best.startswith("bsr") else None, kernels_ms,
                              best if faster else "dense")
    return decision, candidates[best] if faster else None


def sparsify_for_cpu(model: nn.Module, batch_size: int, example_inputs: torch.Tensor | Sequence[torch.Tensor], *,
                     min_sparsity: float = 0.5, kernels: Sequence[str] | None = None, threads: int = 1,
                     repeats: int = 20, atol: float = 1e-4) -> SparsifyResult:
    """A copy of ``model`` (masks folded in) whose sparse Linear / 1×1-conv layers use a sparse kernel
    wherever one is measured faster than the dense layer at ``batch_size`` (see the module docstring).

    Args:
        model: a masked or plain model; not modified.
        batch_size: the batch size the model will serve; every layer is timed at it.
        example_inputs: one input batch (or tuple) to find each layer's input shape and to check outputs.
        min_sparsity: layers with a smaller fraction of zero weights are not tried.
        kernels: names in :data:`KERNELS` to try (default: all).
        threads: torch intra-op threads while timing (and for which the decisions hold).
        repeats: timed runs per candidate (alternating dense and sparse; medians compared).
        atol: the largest accepted output difference to ``model`` on ``example_inputs``.

    Raises:
        ConfigError: a bad argument. ExportError: the sparse model's outputs differ from the model's.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer ≥ 1, got {batch_size!r}")
    if not 0.0 <= min_sparsity < 1.0:
        raise ConfigError(f"min_sparsity must be in [0, 1), got {min_sparsity!r}")
    kernels = list(KERNELS.names() if kernels is None else kernels)
    for k in kernels:
        KERNELS.get(k)
    example = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    twin = plain_copy(model, fold_bn=False)
    names = [n for n, m in twin.named_modules() if (isinstance(m, nn.Linear) or _is_pointwise(m))
             and (m.weight == 0).float().mean().item() >= min_sparsity]
    inputs = _layer_inputs(twin, names, example)
    decisions, swaps = [], {}
    with torch_threads(threads):
        for n in names:
            if n not in inputs:  # defined but never called
                continue
            decision, replacement = _time_layer(n, twin.get_submodule(n), inputs[n], batch_size, min_sparsity,
                                                kernels, repeats)
            decisions.append(decision)
            if replacement is not None:
                swaps[n] = replacement
    if not swaps:
        return SparsifyResult(twin, decisions, 0.0, threads)
    sparse = copy.deepcopy(twin)
    for n, m in swaps.items():
        sparse.set_submodule(n, m)
    diff = _max_diff(model, sparse, example)
    if not diff <= atol:
        raise ExportError(f"the sparse model's outputs differ from the masked model's by {diff:.3g} > atol {atol:g} "
                          f"(replaced layers: {', '.join(swaps)})")
    if len(example) > 1:  # the whole-model timing builds single-input batches; the per-layer decisions stand
        return SparsifyResult(sparse, decisions, diff, threads, applied=True)
    # layers measured one by one can still lose as a whole (caches, call overhead): check the whole model too
    with torch_threads(threads):
        t = _time_models({"dense": twin, "sparse": sparse}, example[0], batch_size, repeats)
    applied = t["sparse"] < t["dense"]
    return SparsifyResult(sparse if applied else twin, decisions, diff if applied else 0.0, threads,
                          t["dense"], t["sparse"], applied)


@torch.no_grad()
def _time_models(models: dict[str, nn.Module], example: torch.Tensor, batch: int, repeats: int) -> dict[str, float]:
    """Median CPU ms per forward of each model on ``batch`` copies of the first sample, timed side by side
    (:func:`~prunekit.measure.time_runners`: the CPU-time clock, each timed call after an untimed one)."""
    x = example[:1].expand(batch, *example.shape[1:]).contiguous()
    runners = {k: functools.partial(m.eval(), x) for k, m in models.items()}
    return {k: t.cpu_ms for k, t in time_runners(runners, batch=batch, threads=torch.get_num_threads(),
                                                    repeats=repeats).items()}


def _max_diff(a: nn.Module, b: nn.Module, example: tuple[torch.Tensor, ...]) -> float:
    was = a.training
    a.eval()
    try:
        with torch.no_grad():
            ya, yb = a(*example), b(*example)
    finally:
        a.train(was)
    flat: Callable = lambda y: [y] if isinstance(y, torch.Tensor) else [t for o in y for t in flat(o)]
    return max((float((p - q).abs().max()) for p, q in zip(flat(ya), flat(yb), strict=True)), default=0.0)
