"""Rules for contractions: matmul, einsum and fused scaled-dot-product attention.

Attention needs no dedicated module handler: the query/key contraction couples every feature of a
head into one unit (see :func:`~prunekit.graph._rules._common.contract`), the score-value product
couples the value head with it, and the head split recorded by the reshape rule tells the pruner
which module attributes (``num_heads``...) to rewrite. Grouped-query attention falls out of the
same rules: ``repeat_kv`` (expand + reshape) or SDPA's ``enable_gqa`` maps each key/value head to
its query heads, so a key/value head and its query group form one unit.
"""

from __future__ import annotations

import numpy as np
import torch

from prunekit.graph._labels import Block
from prunekit.graph._rules._common import contract, merge_blocks
from prunekit.graph._trace import Trace, arg, rule

_BATCH = "ABCDEFGH"


def _matmul_letters(na: int, nb: int) -> tuple[str, str, str]:
    nbatch = max(na, nb) - 2
    batch = _BATCH[:max(nbatch, 0)]
    la = "k" if na == 1 else batch[len(batch) - (na - 2):] + "nk"
    lb = "k" if nb == 1 else batch[len(batch) - (nb - 2):] + "km"
    lo = batch + ("n" if na > 1 else "") + ("m" if nb > 1 else "")
    return la, lb, lo


@rule("matmul", "mm", "bmm", "rmatmul")
def matmul(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    a, b = args[0], args[1]
    if tr.op == "rmatmul":
        a, b = b, a
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        tr.pin_all(args, f"{tr.module}: {tr.op} with a non-tensor")
        return
    la, lb, lo = _matmul_letters(a.ndim, b.ndim)
    tr.set(out, contract(tr, [(tuple(a.shape), tr.get(a), la), (tuple(b.shape), tr.get(b), lb)], lo))


@rule("einsum")
def einsum(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    eq = args[0].replace(" ", "")
    ops = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if not arrow:
        rhs = "".join(sorted(c for c in set(lhs) if c.isalpha() and lhs.count(c) == 1))
    nell = max((t.ndim - len(s.replace("...", "")) for s, t in zip(terms, ops, strict=False) if "..." in s), default=0)
    ell = _BATCH[:nell]
    terms = [s.replace("...", ell[nell - (t.ndim - len(s.replace("...", ""))):])
             for s, t in zip(terms, ops, strict=False)]
    rhs = rhs.replace("...", ell)
    if len(set("".join(terms))) != len(set("".join(terms)).union(rhs)) or any(len(set(s)) != len(s) for s in terms):
        tr.pin_all(ops, f"{tr.module}: einsum {eq!r}")
        return
    tr.set(out, contract(tr, [(tuple(t.shape), tr.get(t), s) for s, t in zip(terms, ops, strict=False)], rhs))


def _repeat_heads(blocks: list[Block], axis: int, rep: int) -> list[Block]:
    return [Block(b.dims, np.repeat(b.ids, rep, axis=axis)) if axis in b.dims else b for b in blocks]


def _differs_per_head(mask: torch.Tensor) -> bool:
    """A constant mask (N, heads, L, S) with values that depend on the head pins the heads.

    One that does not (T5's zero position bias, built with the current head count) does not: the
    pruned model is re-run, so a head count baked into its shape still fails loudly.
    """
    if mask.ndim < 3 or mask.shape[-3] == 1:
        return False
    return not bool((mask == mask.narrow(-3, 0, 1)).all())


@rule("scaled_dot_product_attention")
def sdpa(tr: Trace, args: tuple, kwargs: dict, out) -> None:
    q, k, v = args[0], args[1], args[2]
    mask = arg(args, kwargs, 3, "attn_mask")
    nd = q.ndim
    batch = _BATCH[: nd - 2]
    kb, vb = tr.get(k), tr.get(v)
    k_shape, v_shape = list(k.shape), list(v.shape)
    if nd >= 3 and k.shape[-3] != q.shape[-3] and k.shape[-3] > 0:  # grouped-query attention
        rep = q.shape[-3] // k.shape[-3]
        kb, vb = _repeat_heads(kb, nd - 3, rep), _repeat_heads(vb, nd - 3, rep)
        k_shape[-3] = v_shape[-3] = q.shape[-3]
    score_shape = tuple(q.shape[:-1]) + (k.shape[-2],)
    scores = contract(tr, [(tuple(q.shape), tr.get(q), batch + "nd"), (tuple(k_shape), kb, batch + "sd")],
                      batch + "ns")
    if isinstance(mask, torch.Tensor) and (tr.labelled(mask) or _differs_per_head(mask)):
        scores = merge_blocks(tr, [(score_shape, scores), (tuple(mask.shape), tr.get(mask))], score_shape)
    tr.set(out, contract(tr, [(score_shape, scores, batch + "ns"), (tuple(v_shape), vb, batch + "se")],
                         batch + "ne"))
