"""Rules for elementwise ops, reductions and spatial ops (pooling, resizing, padding)."""

from __future__ import annotations

import torch

from prunekit.graph._labels import Block
from prunekit.graph._rules._common import merge
from prunekit.graph._trace import Trace, arg, iter_tensors, rule

_ELEMENTWISE = """add sub mul div true_divide floor_divide rsub radd rmul rtruediv rdiv rfloordiv pow rpow
iadd isub imul itruediv idiv ipow where maximum minimum fmax fmin clamp clip clamp_min clamp_max lerp
addcmul addcdiv eq ne lt gt le ge logical_and logical_or logical_not logical_xor and or xor rand ror
masked_fill neg abs exp exp2 log log2 log1p expm1 sqrt rsqrt reciprocal sin cos tan tanh sigmoid relu relu6
leaky_relu elu selu celu gelu silu mish hardswish hardsigmoid hardtanh softplus softsign tanhshrink
threshold erf erfc erfinv sign sgn square floor ceil round trunc frac dropout dropout1d dropout2d
dropout3d alpha_dropout feature_alpha_dropout nan_to_num isnan isinf isfinite logsigmoid copy
hardshrink softshrink rrelu atan asin acos sinh cosh invert bitwise_not mod fmod remainder rmod
float_power xlogy""".split()

_SAME_AS_FIRST = """to type type_as float half double bfloat16 int long bool contiguous clone detach
requires_grad cpu cuda zeros_like ones_like full_like empty_like rand_like randn_like fill zero normal
uniform get.data get.real pin_memory""".split()


@rule(*_ELEMENTWISE)
def elementwise(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    if not isinstance(out, torch.Tensor):
        tr.pin_all((args, kwargs), f"{tr.module}: {tr.op} with non-tensor output")
        return
    tensors = [t for t in iter_tensors((args, kwargs))]
    tr.set(out, merge(tr, tensors, tuple(out.shape)))


@rule(*_SAME_AS_FIRST)
def same_as_first(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x = args[0]
    if isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor) and x.shape == out.shape:
        tr.set(out, list(tr.get(x)))
    elif isinstance(out, torch.Tensor):
        tr.pin_all(args, f"{tr.module}: {tr.op} changed the shape")


def _dims(dim, ndim: int) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, int):
        dim = (dim,)
    return tuple(sorted(d % ndim for d in dim))


_EXACT_SUMS = {"sum", "nansum"}
_ORDER_DEPENDENT = {"argmax", "argmin", "topk", "sort", "argsort", "kthvalue", "median", "cumsum", "cumprod",
                    "cummax", "cummin", "logcumsumexp", "nanmedian", "mode"}


@rule("sum", "nansum", "mean", "nanmean", "amax", "amin", "max", "min", "var", "std", "var_mean", "std_mean",
      "norm", "logsumexp", "prod", "all", "any", "count_nonzero", "vector_norm", *_ORDER_DEPENDENT)
def reduction(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x = args[0]
    if tr.op in ("max", "min", "maximum", "minimum") and isinstance(arg(args, kwargs, 1, "other"), torch.Tensor):
        return elementwise(tr, args, kwargs, out)
    dim = arg(args, kwargs, 2 if tr.op in ("norm", "vector_norm") else 1, "dim", kwargs.get("axis"))
    if tr.op in ("topk", "kthvalue"):
        dim = arg(args, kwargs, 2, "dim", -1)
    if tr.op in ("sort", "argsort", "cumsum", "cumprod", "cummax", "cummin", "logcumsumexp") and dim is None:
        dim = -1
    if isinstance(dim, str) or not isinstance(x, torch.Tensor):
        tr.pin_all(args, f"{tr.module}: {tr.op} over named dims")
        return
    red = _dims(dim, x.ndim) if x.ndim else ()
    outs = [o for o in iter_tensors(out)]
    blocks = []
    for b in tr.get(x):
        hit = tuple(d for d in b.dims if d in red)
        if not hit:
            blocks.append(b)
            continue
        if tr.op in _ORDER_DEPENDENT:
            tr.store.pin(b.ids, f"{tr.module}: {tr.op} over channels depends on their order")
            continue
        if tr.op not in _EXACT_SUMS:
            tr.store.mark_inexact(b.ids)
        kept = tuple(d for d in b.dims if d not in red)
        if kept:
            blocks.append(Block(kept, tr.store.couple_along(b.ids, hit)))
    for o in outs:
        if o.ndim == x.ndim:
            tr.set(o, [b for b in blocks if all(b.ids.shape[d] in (1, o.shape[d]) for d in range(o.ndim))])
        elif o.ndim == x.ndim - len(red):
            tr.set(o, [_squeeze(b, red) for b in blocks])


def _squeeze(b: Block, red: tuple[int, ...]) -> Block:
    ids = b.ids.reshape([s for d, s in enumerate(b.ids.shape) if d not in red])
    dims = tuple(d - sum(r < d for r in red) for d in b.dims)
    return Block(dims, ids)


@rule("softmax", "log_softmax", "normalize", "softmin")
def softmax(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x = args[0]
    default = 1 if tr.op == "normalize" else None
    dim = arg(args, kwargs, 2 if tr.op == "normalize" else 1, "dim", default)
    blocks = tr.get(x)
    if dim is None:
        dim = 0 if x.ndim in (0, 1, 3) else 1
    for b in blocks:
        if dim % x.ndim in b.dims and tr.op == "normalize":  # zeros stay zeros: exact if one unit (cosine attention)
            tr.store.mark_inexact_if_varies(b.ids, dim % x.ndim)
        elif dim % x.ndim in b.dims:
            tr.store.mark_inexact(b.ids)
    tr.set(out, list(blocks))


_SPATIAL = """avg_pool1d avg_pool2d avg_pool3d max_pool1d max_pool2d max_pool3d max_pool1d_with_indices
max_pool2d_with_indices max_pool3d_with_indices adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d
adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d adaptive_max_pool1d_with_indices
adaptive_max_pool2d_with_indices lp_pool1d lp_pool2d interpolate upsample upsample_nearest upsample_bilinear
pad constant_pad_nd roll flip fliplr flipud rot90 grid_sample""".split()


@rule(*_SPATIAL)
def spatial(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    """Ops that act on spatial dims only: labels pass if every labelled dim keeps its size and place."""
    x = args[0]
    outs = [o for o in iter_tensors(out)]
    moved: tuple[int, ...] = ()
    if tr.op in ("roll", "flip", "rot90"):
        dims = arg(args, kwargs, 2 if tr.op == "roll" else 1, "dims", None)
        if tr.op == "rot90":
            dims = arg(args, kwargs, 2, "dims", (0, 1))
        moved = _dims(dims, x.ndim) if dims is not None else tuple(range(x.ndim))
    for t in iter_tensors(args[1:]):
        tr.pin_tensor(t, f"{tr.module}: {tr.op} argument")
    for o in outs:
        blocks = []
        for b in tr.get(x):
            if o.ndim == x.ndim and all(o.shape[d] == x.shape[d] and d not in moved for d in b.dims):
                blocks.append(b)
            else:
                tr.store.pin(b.ids, f"{tr.module}: {tr.op} changes a labelled dim")
        tr.set(o, blocks)
