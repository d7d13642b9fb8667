"""Rules for ops that move elements without computing: reshape, permute, index, cat, split."""

from __future__ import annotations

import numpy as np
import torch

from prunekit.graph._labels import Block, SplitConstraint
from prunekit.graph._rules._common import aligned_blocks, check_sizes, couple_blocks, merge, shape_of
from prunekit.graph._trace import Trace, arg, iter_tensors, rule


def _groups(a: tuple[int, ...], b: tuple[int, ...]) -> list[tuple[list[int], list[int]]] | None:
    """Pairs of contiguous dim runs of equal element count between shapes ``a`` and ``b``."""
    i = j = 0
    res: list[tuple[list[int], list[int]]] = []
    while i < len(a) or j < len(b):
        if i < len(a) and a[i] == 1 and (j >= len(b) or b[j] != 1):
            res.append(([i], []))
            i += 1
        elif j < len(b) and b[j] == 1 and (i >= len(a) or a[i] != 1):
            res.append(([], [j]))
            j += 1
        elif i < len(a) and j < len(b) and a[i] == 1 and b[j] == 1:
            res.append(([i], [j]))
            i, j = i + 1, j + 1
        else:
            if i >= len(a) or j >= len(b):
                return None
            gi, gj, pi, pj = [i], [j], a[i], b[j]
            i, j = i + 1, j + 1
            while pi != pj:
                if pi < pj and i < len(a):
                    pi *= a[i]
                    gi.append(i)
                    i += 1
                elif pj < pi and j < len(b):
                    pj *= b[j]
                    gj.append(j)
                    j += 1
                else:
                    return None
            res.append((gi, gj))
    return res


def reshape_blocks(tr: Trace, x, blocks: list[Block], new_shape: tuple[int, ...]) -> list[Block] | None:
    """Labels after a row-major reshape of ``x`` to ``new_shape``; records split constraints."""
    old = tuple(x.shape)
    groups = _groups(old, new_shape)
    if groups is None or 0 in old:
        return None
    out = []
    for b in blocks:
        touched = [g for g in groups if set(g[0]) & set(b.dims)]
        full = list(b.ids.shape)
        for gi, _ in touched:
            for d in gi:
                full[d] = old[d]
        arr = np.ascontiguousarray(np.broadcast_to(b.ids, full))
        shape, dims = [], []
        for gi, gj in groups:
            hit = (gi, gj) in touched
            for d in gj:
                shape.append(new_shape[d] if hit else 1)
                if hit:
                    dims.append(d)
        arr = arr.reshape(shape)
        for _, gj in touched:
            if len([d for d in gj if new_shape[d] > 1]) >= 2:
                _record_split(tr, arr, gj)
        if dims:
            out.append(Block(tuple(dims), arr))
    return out


def _record_split(tr: Trace, arr: np.ndarray, gj: list[int]) -> None:
    sub = arr
    for d in range(arr.ndim):
        if d not in gj:
            sub = sub.take([0], axis=d)
    sub = sub.reshape([arr.shape[d] for d in gj])
    varying = sum(1 for ax in range(sub.ndim) if sub.shape[ax] > 1 and (sub != sub.take([0], axis=ax)).any())
    if varying >= 2:
        tr.store.splits.append(SplitConstraint(sub, tr.module, tr.op))


@rule("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as", "ravel",
      "atleast_2d", "atleast_3d")
def reshape(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x = args[0]
    if tr.op == "view" and not isinstance(arg(args, kwargs, 1, "size", 0), (int, tuple, list, torch.Size)):
        return tr.set(out, list(tr.get(x)))  # x.view(dtype)
    blocks = reshape_blocks(tr, x, tr.get(x), tuple(out.shape))
    if blocks is None:
        tr.pin_all(x, f"{tr.module}: {tr.op} {tuple(x.shape)} -> {tuple(out.shape)}")
        return
    tr.set(out, blocks)


def _permute_blocks(blocks: list[Block], perm: list[int]) -> list[Block]:
    inv = {p: k for k, p in enumerate(perm)}
    return [Block(tuple(sorted(inv[d] for d in b.dims)), b.ids.transpose(perm)) for b in blocks]


@rule("permute", "transpose", "swapaxes", "swapdims", "movedim", "moveaxis", "t", "get.T", "get.mT", "get.H",
      "get.mH", "adjoint")
def permute(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x = args[0]
    nd = x.ndim
    order = list(range(nd))
    if tr.op == "permute":
        first = arg(args, kwargs, 1, "dims")
        dims = args[1:] if len(args) > 2 or isinstance(first, int) else first
        order = [d % nd for d in dims]
    elif tr.op in ("transpose", "swapaxes", "swapdims"):
        a, b = (d % nd for d in (args[1], args[2]))
        order[a], order[b] = order[b], order[a]
    elif tr.op in ("movedim", "moveaxis"):
        order = list(np.moveaxis(np.arange(nd), arg(args, kwargs, 1, "source"), arg(args, kwargs, 2, "destination")))
    elif tr.op in ("t", "get.T", "get.H"):
        order = order[::-1]
    elif nd >= 2:
        order[-1], order[-2] = order[-2], order[-1]
    tr.set(out, _permute_blocks(tr.get(x), [int(o) for o in order]))


@rule("expand", "expand_as", "broadcast_to")
def expand(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    tr.set(out, aligned_blocks(tr, args[0], tuple(out.shape)))


@rule("repeat", "tile")
def repeat(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x, nd = args[0], out.ndim
    blocks = []
    for b in tr.get(x):
        b = b.aligned(nd)
        reps = [out.shape[d] // b.ids.shape[d] if d in b.dims else 1 for d in range(nd)]
        blocks.append(Block(b.dims, np.tile(b.ids, reps)))
    tr.set(out, blocks)


@rule("repeat_interleave")
def repeat_interleave(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x, reps, dim = args[0], arg(args, kwargs, 1, "repeats"), arg(args, kwargs, 2, "dim")
    if dim is None or not isinstance(reps, int):
        tr.pin_all(x, f"{tr.module}: repeat_interleave without dim")
        return
    dim %= x.ndim
    tr.set(out, [Block(b.dims, np.repeat(b.ids, reps, axis=dim) if dim in b.dims else b.ids) for b in tr.get(x)])


@rule("getitem")
def getitem(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x, idx = args[0], args[1]
    blocks = tr.get(x)
    for t in iter_tensors(idx):
        tr.pin_tensor(t, f"{tr.module}: tensor used as an index")
    idx = idx if isinstance(idx, tuple) else (idx,)
    if len(idx) == 1 and isinstance(idx[0], torch.Tensor) and idx[0].dtype != torch.bool and out.ndim:
        return _gather_rows(tr, blocks, idx[0], out)  # table[index]: a relative-position bias lookup
    if any(isinstance(i, (torch.Tensor, list)) for i in idx) or not isinstance(out, torch.Tensor):
        for b in blocks:
            tr.store.pin(b.ids, f"{tr.module}: advanced indexing of a labelled tensor")
        return
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    full: list = []
    for i in idx:
        if i is Ellipsis:
            full.extend([slice(None)] * (x.ndim - n_real))
        else:
            full.append(i)
    full.extend([slice(None)] * (x.ndim + sum(i is None for i in full) - len(full)))
    res = []
    for b in blocks:
        lab_idx, dims, d, k = [], [], 0, 0
        for i in full:
            if i is None:
                lab_idx.append(None)
                k += 1
                continue
            if d in b.dims:
                if not (isinstance(i, slice) and i == slice(None)):
                    tr.store.pin_if_varies(b.ids, d, f"{tr.module}: slice of a labelled dim with fixed bounds")
                lab_idx.append(i)
                if isinstance(i, slice):
                    dims.append(k)
            else:
                lab_idx.append(0 if isinstance(i, int) else slice(None))
            if isinstance(i, slice):
                k += 1
            d += 1
        arr = b.ids[tuple(lab_idx)]
        if arr.ndim != out.ndim or any(s not in (1, o) for s, o in zip(arr.shape, out.shape, strict=True)):
            tr.store.pin(b.ids, f"{tr.module}: indexing")
            continue
        dims = [k for k in dims if arr.shape[k] == out.shape[k]]
        if dims:
            res.append(Block(tuple(dims), arr))
    tr.set(out, res)


def _gather_rows(tr: Trace, blocks: list[Block], index: torch.Tensor, out) -> None:
    """``x[index]`` with an integer tensor: rows are looked up, other dims keep their labels."""
    res = []
    for b in blocks:
        if 0 in b.dims:
            tr.store.pin(b.ids, f"{tr.module}: rows looked up by an index tensor")
            continue
        ids = b.ids.reshape((1,) * index.ndim + b.ids.shape[1:])
        res.append(Block(tuple(d + index.ndim - 1 for d in b.dims), ids))
    tr.set(out, res)


@rule("select", "narrow")
def select(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x, dim = args[0], arg(args, kwargs, 1, "dim") % args[0].ndim
    if tr.op == "select":
        idx = [slice(None)] * dim + [arg(args, kwargs, 2, "index")]
    else:
        start, length = arg(args, kwargs, 2, "start"), arg(args, kwargs, 3, "length")
        idx = [slice(None)] * dim + [slice(start, start + length)]
    getitem(tr, (x, tuple(idx)), {}, out)


@rule("cat", "concat", "concatenate")
def cat(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    tensors = [t for t in arg(args, kwargs, 0, "tensors") if t.numel() or t.ndim > 1]
    dim = arg(args, kwargs, 1, "dim", 0) % out.ndim
    per = [(shape_of(t, out.ndim), aligned_blocks(tr, t, _cat_shape(t, out, dim))) for t in tensors]
    check_sizes(tr, per, skip=(dim,))
    along = [[b for b in bl if dim in b.dims] for _, bl in per]
    other = [b for _, bl in per for b in bl if dim not in b.dims]
    blocks = couple_blocks(tr, other)
    if any(along):
        parts, dims = [], {dim}
        for t, bl in zip(tensors, along, strict=True):
            if bl:
                ids = bl[0].ids
                dims.update(bl[0].dims)
                for extra in bl[1:]:
                    tr.store.couple(ids, extra.ids)
            else:
                shape = [1] * out.ndim
                shape[dim] = t.shape[dim - (out.ndim - t.ndim)]
                ids = tr.store.fresh(tuple(shape))
                tr.store.pin(ids, f"{tr.module}: cat with an unlabelled tensor")
            parts.append(ids)
        common = [max(p.shape[d] for p in parts) if d != dim else 0 for d in range(out.ndim)]
        parts = [np.broadcast_to(p, [c if d != dim else p.shape[d] for d, c in enumerate(common)]) for p in parts]
        blocks.append(Block(tuple(sorted(dims)), np.concatenate(parts, axis=dim)))
    tr.set(out, blocks)


def _cat_shape(t, out, dim: int) -> tuple[int, ...]:
    s = list(out.shape)
    s[dim] = t.shape[dim - (out.ndim - t.ndim)]
    return tuple(s)


@rule("stack")
def stack(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    tensors = list(arg(args, kwargs, 0, "tensors"))
    dim = arg(args, kwargs, 1, "dim", 0) % out.ndim
    blocks = merge(tr, tensors, tuple(tensors[0].shape))
    tr.set(out, [Block(tuple(d + (d >= dim) for d in b.dims), np.expand_dims(b.ids, dim)) for b in blocks])


@rule("split", "split_with_sizes", "chunk", "unbind", "tensor_split", "hsplit", "vsplit", "unsafe_split", "glu")
def split(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x = args[0]
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    if tr.op == "glu":
        dim = arg(args, kwargs, 1, "dim", -1) % x.ndim
    elif tr.op == "unbind":
        dim = arg(args, kwargs, 1, "dim", 0) % x.ndim
    else:
        dim = arg(args, kwargs, 2, "dim", 0) % x.ndim
    sizes = [1 if tr.op == "unbind" else o.shape[dim] for o in outs]
    if tr.op == "glu":
        sizes = [x.shape[dim] // 2, x.shape[dim] // 2]
    equal = len(set(sizes)) == 1 and tr.op != "unbind"
    sections = arg(args, kwargs, 1, "split_size_or_sections", kwargs.get("split_size", kwargs.get("split_sizes")))
    fixed_size = tr.op in ("split", "unsafe_split") and isinstance(sections, int)
    if fixed_size and not _rewritable(tr, sizes[0]):
        equal = False  # x.split(64): the piece size is a constant the pruner cannot rewrite
    held = _sizes_attr(tr, sections) if tr.op in ("split", "split_with_sizes", "unsafe_split") else None
    per_out: list[list[Block]] = [[] for _ in outs]
    for b in tr.get(x):
        if dim not in b.dims:
            for k in range(len(outs)):
                per_out[k].append(Block(b.dims, b.ids) if tr.op != "unbind" else
                                  Block(tuple(e - (e > dim) for e in b.dims), b.ids.squeeze(dim)))
            continue
        if held is not None:  # the module holds the piece sizes: each piece shrinks on its own
            flat = dim_ids_of(tr, b, dim)
            bounds = np.cumsum([0, *sizes])
            tr.store.size_hints.append((tr.module, held, [flat[a:e] for a, e in zip(bounds, bounds[1:], strict=False)]))
        elif equal:
            shape = list(b.ids.shape)
            shape[dim: dim + 1] = [len(sizes), sizes[0]]
            tr.store.couple_along(b.ids.reshape(shape), (dim,))
            if fixed_size:
                tr.store.attr_hints.append((tr.module, sizes[0], b.ids.take(range(sizes[0]), axis=dim).ravel()))
        else:
            tr.store.pin_if_varies(b.ids, dim, f"{tr.module}: {tr.op} into unequal pieces")
        off = 0
        for k, size in enumerate(sizes):
            part = b.ids.take(range(off, off + size), axis=dim)
            off += size
            if tr.op == "unbind":
                part = part.squeeze(dim)
                dims = tuple(e - (e > dim) for e in b.dims if e != dim)
            else:
                dims = b.dims
            if dims and k < len(per_out):
                per_out[k].append(Block(dims, part))
    for o, bl in zip(outs, per_out, strict=True):
        tr.set(o, bl)


# Module attributes holding a head count or a heads x head_dim size; the pruner rewrites them.
HEAD_ATTRS = frozenset({"num_heads", "num_attention_heads", "n_head", "n_heads", "num_key_value_heads",
                        "num_kv_heads", "n_kv_heads", "heads", "nheads", "num_head"})
INNER_ATTRS = frozenset({"all_head_size", "inner_dim", "split_size", "attn_dim", "kv_dim", "qkv_dim",
                         "inner_size", "dim_inner"})


def _sizes_attr(tr: Trace, sections) -> str | None:
    """The attribute of the running module holding the split sizes ``sections``, if any.

    timm's MambaOut splits with ``torch.split(x, self.split_indices, -1)``: the pruner rewrites
    such an attribute, so unequal pieces may shrink independently. Only names that say they hold
    split sizes count, so a coincidental ``kernel_size`` is never rewritten.
    """
    m = tr.module_obj
    if m is None or not isinstance(sections, (list, tuple)) or len(sections) < 2:
        return None
    for k, v in vars(m).items():
        if (isinstance(v, (list, tuple)) and list(v) == list(sections) and all(type(i) is int for i in v)
                and any(w in k.lower() for w in ("split", "section", "sizes"))):
            return k
    return None


def dim_ids_of(tr: Trace, b: Block, dim: int) -> np.ndarray:
    """1-D ids of ``dim`` of block ``b``; the block's other dims are coupled away."""
    others = tuple(d for d in b.dims if d != dim)
    ids = tr.store.couple_along(b.ids, others) if others else b.ids
    return ids.reshape(-1)


def _rewritable(tr: Trace, size: int) -> bool:
    """Whether the running module holds ``size`` in an attribute the pruner knows how to rewrite."""
    m = tr.module_obj
    return m is not None and any(k in INNER_ATTRS and v == size for k, v in vars(m).items())


@rule("unfold")
def unfold(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    x = args[0]
    if out.ndim == x.ndim + 1 and isinstance(arg(args, kwargs, 1, "dimension"), int):
        dim = args[1] % x.ndim
        blocks = [b for b in tr.get(x) if dim not in b.dims]
        for b in tr.get(x):
            if dim in b.dims:
                tr.store.pin(b.ids, f"{tr.module}: unfold over a labelled dim")
        tr.set(out, [Block(b.dims, b.ids[..., None]) for b in blocks])
    else:
        tr.pin_all(x, f"{tr.module}: F.unfold")
