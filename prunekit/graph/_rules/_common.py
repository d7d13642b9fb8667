"""Helpers shared by the op rules: broadcasting blocks, coupling them, contracting them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prunekit.graph._labels import Block
from prunekit.graph._trace import Trace


def aligned_blocks(tr: Trace, t, out_shape: Sequence[int]) -> list[Block]:
    return align(tr.get(t), out_shape)


def align(blocks: list[Block], out_shape: Sequence[int]) -> list[Block]:
    """Blocks of ``t`` broadcast to ``out_shape``; dims where ``t`` is broadcast lose their label.

    A single-channel gate multiplied into C channels is not coupled with any of them.
    """
    nd = len(out_shape)
    res = []
    for b in blocks:
        b = b.aligned(nd)
        ids = b.ids
        for d in b.dims:
            if ids.shape[d] != out_shape[d]:
                ids = ids.take([0], axis=d)
        keep = tuple(d for d in b.dims if ids.shape[d] == out_shape[d])
        if keep:
            res.append(Block(keep, ids))
    return res


def shape_of(t, nd: int) -> tuple[int, ...]:
    return (1,) * (nd - t.ndim) + tuple(t.shape)


def couple_blocks(tr: Trace, blocks: list[Block]) -> list[Block]:
    """Couples blocks over the same (or nested) dims elementwise; returns the merged blocks."""
    merged: dict[tuple[int, ...], np.ndarray] = {}
    for b in sorted(blocks, key=lambda b: -len(b.dims)):
        for dims, ids in merged.items():
            if set(b.dims) <= set(dims) or set(dims) <= set(b.dims):
                tr.store.couple(ids, b.ids)
        if not any(set(b.dims) <= set(d) for d in merged):
            merged[b.dims] = b.ids
    return [Block(d, i) for d, i in merged.items()]


def check_sizes(tr: Trace, per: list[tuple[tuple[int, ...], list[Block]]], skip: Sequence[int] = ()) -> None:
    """Pins (unless whole heads are pruned) labelled dims that meet an unlabelled dim of size > 1."""
    for i, (_, blocks) in enumerate(per):
        for j, (shape_j, blocks_j) in enumerate(per):
            if i == j:
                continue
            lab_j = {d for b in blocks_j for d in b.dims}
            for b in blocks:
                for d in b.dims:
                    if d not in skip and shape_j[d] > 1 and d not in lab_j:
                        tr.store.pin_if_varies(b.ids, d, f"{tr.module}: {tr.op} meets a fixed-size dim")


def merge(tr: Trace, tensors: list, out_shape: Sequence[int], skip: Sequence[int] = ()) -> list[Block]:
    """Elementwise semantics (add, mul, where, ...): couple the inputs, return the output blocks."""
    return merge_blocks(tr, [(tuple(t.shape), tr.get(t)) for t in tensors], out_shape, skip)


def merge_blocks(tr: Trace, items: list[tuple[tuple[int, ...], list[Block]]], out_shape: Sequence[int],
                 skip: Sequence[int] = ()) -> list[Block]:
    """:func:`merge` over (shape, blocks) pairs, for intermediates that are never materialised."""
    nd = len(out_shape)
    per = [((1,) * (nd - len(s)) + tuple(s), align(bl, out_shape)) for s, bl in items]
    check_sizes(tr, per, skip)
    return couple_blocks(tr, [b for _, bl in per for b in bl])


def contract(
    tr: Trace,
    operands: list[tuple[tuple[int, ...], list[Block], str]],
    out_letters: str,
) -> list[Block]:
    """Einsum semantics over labelled blocks.

    ``operands`` are (shape, blocks, letters). Blocks over the same letters are coupled
    elementwise (a query's head features with the key's); a block that keeps some letters but is
    summed over others is coupled along the summed ones, so attention scores carry one id per head
    and every feature of a head becomes one unit (heads are pruned whole, head_dim never shrinks).
    """
    sizes: dict[str, int] = {}
    for shape, _, letters in operands:
        for s, c in zip(shape, letters, strict=False):
            sizes[c] = max(sizes.get(c, 1), s)
    allc = "".join(sorted(sizes))
    per, lettered = [], []
    for shape, blocks, letters in operands:
        g_shape = tuple(shape[letters.index(c)] if c in letters else 1 for c in allc)
        g_blocks = []
        for b in blocks:
            arr = _to_letters(b, letters, allc)
            dims = tuple(allc.index(letters[d]) for d in b.dims)
            dims = tuple(d for d in dims if arr.shape[d] == sizes[allc[d]])
            if dims:
                g_blocks.append(Block(tuple(sorted(dims)), _squash(arr, dims)))
        per.append((g_shape, g_blocks))
        lettered.extend(g_blocks)
    check_sizes(tr, per)
    merged = couple_blocks(tr, lettered)
    out = []
    for b in merged:
        summed = tuple(d for d in b.dims if allc[d] not in out_letters)
        kept = tuple(d for d in b.dims if allc[d] in out_letters)
        if not kept:
            continue
        ids = tr.store.couple_along(b.ids, summed) if summed else b.ids
        perm = [allc.index(c) for c in out_letters]
        arr = ids.transpose(perm + [i for i in range(len(allc)) if allc[i] not in out_letters])
        arr = arr.reshape(arr.shape[: len(out_letters)])
        out.append(Block(tuple(sorted(out_letters.index(allc[d]) for d in kept)), arr))
    return out


def _to_letters(b: Block, letters: str, allc: str) -> np.ndarray:
    order = sorted(range(len(letters)), key=lambda i: allc.index(letters[i]))
    arr = b.ids.transpose(order)
    shape = [1] * len(allc)
    for i, li in enumerate(order):
        shape[allc.index(letters[li])] = arr.shape[i]
    return arr.reshape(shape)


def _squash(arr: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    for d in range(arr.ndim):
        if d not in dims and arr.shape[d] > 1:
            arr = arr.take([0], axis=d)
    return arr
