"""Rules for layers with weights: conv, transposed conv, linear, norms, embeddings, PReLU.

The rules work on tensors, not modules: a weight is recognised by identity wherever it is used
(``F.linear(x, self.qkv.weight)`` in Swin is the same as calling the Linear).
"""

from __future__ import annotations

import numpy as np
import torch

from prunekit.graph._labels import Block, _varies
from prunekit.graph._rules._common import contract, merge, merge_blocks
from prunekit.graph._trace import Trace, arg, rule


def dim_ids(tr: Trace, t, d: int) -> np.ndarray | None:
    """1-D ids of dim ``d`` of ``t`` (other dims of a joint block are coupled away), or None."""
    if not isinstance(t, torch.Tensor):
        return None
    d %= t.ndim
    for b in tr.get(t):
        if d in b.dims:
            ids = b.ids
            others = tuple(o for o in b.dims if o != d)
            if others:
                ids = tr.store.couple_along(ids, others)
            return ids.reshape(-1)
    return None


def _as_dim(ids: np.ndarray, d: int, ndim: int) -> Block:
    shape = [1] * ndim
    shape[d] = ids.size
    return Block((d,), ids.reshape(shape))


def _pin_other_dims(tr: Trace, t, keep: tuple[int, ...], why: str) -> None:
    """Pins blocks whose ids vary along a dim outside ``keep``.

    A block may span a dim without varying along it: a weight standardised per filter
    (``ScaledStdConv2d``: ``weight.reshape(1, out, -1)`` and back) carries its input-channel ids over
    the kernel dims, but every kernel position of an input channel is still that one channel.
    """
    for b in tr.get(t):
        if any(d not in keep and b.ids.shape[d] > 1 and _varies(b.ids, d) for d in b.dims):
            tr.store.pin(b.ids, why)


def _couple_or_pin(tr: Trace, a: np.ndarray | None, b: np.ndarray | None, why: str) -> None:
    if a is not None and b is not None:
        tr.store.couple(a, b)
    elif a is not None:
        tr.store.pin(a, why)
    elif b is not None:
        tr.store.pin(b, why)


def _out_ids(tr: Trace, w_ids: np.ndarray | None, n: int, why: str) -> np.ndarray:
    if w_ids is not None:
        return w_ids
    ids = tr.store.fresh((n,))
    tr.store.pin(ids, why)
    return ids


@rule("conv1d", "conv2d", "conv3d")
def conv(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x, w, bias = arg(args, kwargs, 0, "input"), arg(args, kwargs, 1, "weight"), arg(args, kwargs, 2, "bias")
    groups = arg(args, kwargs, 6, "groups", 1)
    c = 1 if x.ndim == w.ndim else 0
    why = f"{tr.module}: conv input channels are fixed"
    _pin_other_dims(tr, w, (0, 1), f"{tr.module}: conv kernel dims")
    _pin_other_dims(tr, x, (c,), f"{tr.module}: conv over labelled spatial dims")
    x_in, w_in, w_out = dim_ids(tr, x, c), dim_ids(tr, w, 1), dim_ids(tr, w, 0)
    o = _out_ids(tr, w_out, w.shape[0], f"{tr.module}: conv weight is not a parameter")
    cin, ipg = x.shape[c], w.shape[1]
    if groups == 1:
        _couple_or_pin(tr, x_in, w_in, why)
    elif ipg == 1:  # depthwise: input channel k feeds output channels k*m .. k*m+m-1
        if w_in is not None:
            tr.store.pin(w_in, f"{tr.module}: depthwise kernel")
        if x_in is None:
            tr.store.pin(o, why)
        else:
            tr.store.couple(x_in.reshape(groups, 1), o.reshape(groups, -1))
    else:  # grouped: the same position in every group goes together, groups stay equal
        opg = w.shape[0] // groups
        tr.store.couple_along(o.reshape(groups, opg), (0,))
        if x_in is None:
            if w_in is not None:
                tr.store.pin(w_in, why)
        else:
            per_group = x_in.reshape(groups, cin // groups)
            tr.store.couple_along(per_group, (0,))
            _couple_or_pin(tr, per_group[0], w_in, why)
    b_ids = dim_ids(tr, bias, 0)
    if b_ids is not None:
        tr.store.couple(b_ids, o)
    tr.set(out, [_as_dim(o, c, out.ndim)])


@rule("conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def conv_transpose(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x, w, bias = arg(args, kwargs, 0, "input"), arg(args, kwargs, 1, "weight"), arg(args, kwargs, 2, "bias")
    groups = arg(args, kwargs, 6, "groups", 1)
    c = 1 if x.ndim == w.ndim else 0
    why = f"{tr.module}: transposed conv input channels are fixed"
    _pin_other_dims(tr, w, (0, 1), f"{tr.module}: conv kernel dims")
    _pin_other_dims(tr, x, (c,), f"{tr.module}: conv over labelled spatial dims")
    x_in, w_in, w_out = dim_ids(tr, x, c), dim_ids(tr, w, 0), dim_ids(tr, w, 1)
    if groups == 1:
        _couple_or_pin(tr, x_in, w_in, why)
        o = _out_ids(tr, w_out, w.shape[1], f"{tr.module}: weight is not a parameter")
    elif w.shape[1] == 1 and w.shape[0] == groups:  # depthwise transposed conv
        if w_out is not None:
            tr.store.pin(w_out, f"{tr.module}: depthwise kernel")
        o = _out_ids(tr, w_in, w.shape[0], f"{tr.module}: weight is not a parameter")
        _couple_or_pin(tr, x_in, w_in, why)
    else:
        tr.pin_all(args, f"{tr.module}: grouped transposed conv")
        o = tr.store.fresh((out.shape[c],))
        tr.store.pin(o, f"{tr.module}: grouped transposed conv")
    b_ids = dim_ids(tr, bias, 0)
    if b_ids is not None:
        tr.store.couple(b_ids, o)
    tr.set(out, [_as_dim(o, c, out.ndim)])


@rule("linear")
def linear(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x, w, bias = arg(args, kwargs, 0, "input"), arg(args, kwargs, 1, "weight"), arg(args, kwargs, 2, "bias")
    last = x.ndim - 1
    _pin_other_dims(tr, w, (0, 1), f"{tr.module}: linear weight")
    passing = [b for b in tr.get(x) if last not in b.dims]
    x_in, w_in = dim_ids(tr, x, last), dim_ids(tr, w, 1)
    _couple_or_pin(tr, x_in, w_in, f"{tr.module}: linear input features are fixed")
    o = _out_ids(tr, dim_ids(tr, w, 0) if w.ndim == 2 else None, out.shape[-1], f"{tr.module}: weight not a parameter")
    b_ids = dim_ids(tr, bias, 0)
    if b_ids is not None:
        tr.store.couple(b_ids, o)
    tr.set(out, passing + [_as_dim(o, out.ndim - 1, out.ndim)] if out.ndim else [])


@rule("addmm", "baddbmm", "addbmm")
def addmm(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    n1, n2 = ("mat1", "mat2") if tr.op == "addmm" else ("batch1", "batch2")
    bias, a, b = arg(args, kwargs, 0, "input"), arg(args, kwargs, 1, n1), arg(args, kwargs, 2, n2)
    letters = "zyx"[: a.ndim - 2] + "nk", "zyx"[: b.ndim - 2] + "km"
    out_letters = ("zyx"[: a.ndim - 2] if tr.op == "baddbmm" else "") + "nm"
    prod = contract(tr, [(tuple(a.shape), tr.get(a), letters[0]), (tuple(b.shape), tr.get(b), letters[1])],
                    out_letters)
    items = [(tuple(out.shape), prod)]
    if isinstance(bias, torch.Tensor):
        items.append((tuple(bias.shape), tr.get(bias)))
    tr.set(out, merge_blocks(tr, items, tuple(out.shape)))


@rule("batch_norm", "instance_norm")
def batch_norm(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x = args[0]
    c = 1 if x.ndim > 1 else 0
    names = ("running_mean", "running_var", "weight", "bias")
    params = [arg(args, kwargs, i + 1, n) for i, n in enumerate(names)]
    x_in = None
    for b in tr.get(x):
        if c in b.dims and b.dims == (c,):
            x_in = b.ids.reshape(-1)
        else:
            tr.store.mark_inexact(b.ids)  # statistics over those dims
    for p in params:
        if p is not None:  # no running stats (training=True) or no affine: nothing to keep in step
            _couple_or_pin(tr, x_in, dim_ids(tr, p, 0), f"{tr.module}: normalised channels are fixed")
    tr.set(out, list(tr.get(x)))


@rule("layer_norm", "rms_norm")
def layer_norm(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x, shape = args[0], arg(args, kwargs, 1, "normalized_shape")
    k = len(shape) if isinstance(shape, (tuple, list, torch.Size)) else 1
    w = arg(args, kwargs, 2, "weight")
    b = arg(args, kwargs, 3, "bias") if tr.op == "layer_norm" else None
    for bl in tr.get(x):
        if any(d >= x.ndim - k for d in bl.dims):
            tr.store.mark_inexact(bl.ids)
    tensors = [t for t in (x, w, b) if isinstance(t, torch.Tensor)]
    tr.set(out, merge(tr, tensors, tuple(out.shape)))


@rule("group_norm")
def group_norm(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x, g = args[0], arg(args, kwargs, 1, "num_groups")
    w, b = arg(args, kwargs, 2, "weight"), arg(args, kwargs, 3, "bias")
    x_in = dim_ids(tr, x, 1)
    if x_in is not None and g != x.shape[1]:
        tr.store.mark_inexact(x_in)
        if g > 1:
            tr.store.couple_along(x_in.reshape(g, -1), (0,))
    for p in (w, b):
        _couple_or_pin(tr, x_in, dim_ids(tr, p, 0), f"{tr.module}: normalised channels are fixed")
    tr.set(out, [_as_dim(x_in, 1, out.ndim)] if x_in is not None else [])


@rule("embedding")
def embedding(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    ids_in, w = arg(args, kwargs, 0, "input"), arg(args, kwargs, 1, "weight")
    tr.pin_tensor(ids_in, f"{tr.module}: embedding indices")
    rows = dim_ids(tr, w, 0)
    if rows is not None:
        tr.store.pin(rows, f"{tr.module}: embedding rows (vocabulary)")
    cols = dim_ids(tr, w, 1)
    tr.set(out, [_as_dim(cols, out.ndim - 1, out.ndim)] if cols is not None else [])


@rule("prelu")
def prelu(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x, w = arg(args, kwargs, 0, "input"), arg(args, kwargs, 1, "weight")
    if w.numel() > 1:
        _couple_or_pin(tr, dim_ids(tr, x, 1), dim_ids(tr, w, 0), f"{tr.module}: prelu channels are fixed")
    tr.set(out, list(tr.get(x)))


@rule("multi_head_attention_forward")
def multi_head_attention(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    """Functional calls only: modules are recorded through ``PrunedMultiheadAttention``'s plain-op forward."""
    tr.pin_all((args, kwargs), f"{tr.module}: F.multi_head_attention_forward keeps embed_dim == heads * head_dim")
