"""Channel labels: the bookkeeping behind the dependency graph.

Every prunable position of a tensor (a channel, a neuron, a head's feature) carries an integer id.
A *block* labels one or more dims of a tensor jointly: ``ids`` has the tensor's rank, full size on
the labelled dims and size 1 elsewhere, so numpy broadcasting lines it up with the tensor.

Ops *couple* ids (a residual add couples channel i of both branches), *pin* them (a model output,
an op we cannot follow), or mark them *inexact* (a mean or a norm reduces over them, so removing a
zero channel changes the result). Couplings are collected as id pairs and solved at the end by a
vectorised union-find; an equivalence class of ids is one prunable *unit*.

Example:
    conv1 (8 out) -> relu -> conv2: conv1's output ids 0..7 flow unchanged through relu and are
    coupled with conv2's input ids 8..15, so unit k = {conv1.weight[k], conv1.bias[k],
    conv2.weight[:, k]}.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Block:
    """Joint labels of the dims ``dims`` of one tensor (see the module docstring)."""

    dims: tuple[int, ...]
    ids: np.ndarray

    def aligned(self, ndim: int) -> Block:
        """The block of the same tensor broadcast to rank ``ndim`` (leading dims added)."""
        extra = ndim - self.ids.ndim
        if extra == 0:
            return self
        return Block(tuple(d + extra for d in self.dims), self.ids.reshape((1,) * extra + self.ids.shape))


@dataclass
class SplitConstraint:
    """A labelled dim reshaped into several factors (heads x head_dim, groups x channels).

    After pruning, the kept positions must still form a rectangle over the factors, so at most one
    factor may shrink; see :meth:`LabelStore.resolve`.
    """

    ids: np.ndarray
    module: str
    op: str
    shrink_axis: int = -1  # decided at resolve time; -1 = no axis (nothing varies)


@dataclass
class LabelStore:
    """Allocates ids and collects couplings, pins, inexact marks and split constraints."""

    n: int = 0
    pairs_a: list[np.ndarray] = field(default_factory=list)
    pairs_b: list[np.ndarray] = field(default_factory=list)
    pinned: list[tuple[np.ndarray, str]] = field(default_factory=list)
    pinned_if: list[tuple[np.ndarray, int, str]] = field(default_factory=list)
    pin_reasons: dict[str, int] = field(default_factory=dict)
    inexact: list[np.ndarray] = field(default_factory=list)
    inexact_if: list[tuple[np.ndarray, int]] = field(default_factory=list)
    splits: list[SplitConstraint] = field(default_factory=list)
    attr_hints: list[tuple[str, int, np.ndarray]] = field(default_factory=list)
    size_hints: list[tuple[str, str, list[np.ndarray]]] = field(default_factory=list)
    pin_why: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    pin_texts: list[str] = field(default_factory=list)

    def fresh(self, shape: tuple[int, ...]) -> np.ndarray:
        size = int(np.prod(shape)) if shape else 1
        ids = np.arange(self.n, self.n + size, dtype=np.int64).reshape(shape)
        self.n += size
        return ids

    def couple(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = np.broadcast_arrays(a, b)
        a, b = a.ravel(), b.ravel()
        keep = a != b
        if keep.any():
            self.pairs_a.append(a[keep])
            self.pairs_b.append(b[keep])

    def couple_along(self, ids: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        """Couples all ids along ``axes`` and returns the array reduced to size 1 there."""
        first = ids
        for ax in axes:
            first = first.take([0], axis=ax)
        self.couple(ids, first)
        return first

    def pin(self, ids: np.ndarray, reason: str) -> None:
        self.pinned.append((np.asarray(ids).ravel(), reason))
        self.pin_reasons[reason] = self.pin_reasons.get(reason, 0) + 1

    def pin_if_varies(self, ids: np.ndarray, axis: int, reason: str) -> None:
        """Pins ``ids`` unless, once solved, they do not vary along ``axis`` (whole heads pruned).

        Used where a dim of fixed size meets a labelled dim: a constant tensor of size D added to
        queries, or a slice with constant bounds. Pruning whole heads leaves such a dim intact.
        """
        self.pinned_if.append((ids, axis, reason))

    def final_pins(self, roots: np.ndarray) -> np.ndarray:
        """Boolean mask over ids: True where the id's unit may not be pruned.

        Also fills ``pin_why`` (per root: index into ``pin_texts`` of the first reason that pinned
        it, -1 if free), so every pinned unit can say why.
        """
        why = np.full(self.n, -1, dtype=np.int64)
        texts: dict[str, int] = {}

        def mark(ids: np.ndarray, reason: str) -> None:
            r = roots[ids]
            new = r[why[r] < 0]
            if new.size:
                why[new] = texts.setdefault(reason, len(texts))

        for ids, reason in self.pinned:
            mark(ids, reason)
        for ids, axis, reason in self.pinned_if:
            if ids.shape[axis] > 1 and _varies(roots[ids], axis):
                mark(ids.ravel(), reason)
                self.pin_reasons[reason] = self.pin_reasons.get(reason, 0) + 1
        self.pin_why, self.pin_texts = why, list(texts)
        return why[roots] >= 0

    def mark_inexact(self, ids: np.ndarray) -> None:
        self.inexact.append(np.asarray(ids).ravel())

    def mark_inexact_if_varies(self, ids: np.ndarray, axis: int) -> None:
        """Marks ``ids`` inexact unless, once solved, they are one unit along ``axis``.

        For an op that maps zeros to zeros and reduces along ``axis`` only (``F.normalize`` over a head's
        features in cosine attention): when the whole reduced dim is one unit, removing it removes
        the reduction with it, and the other units never see it.
        """
        self.inexact_if.append((ids, axis))

    def final_inexact(self, roots: np.ndarray) -> np.ndarray:
        """Boolean mask over ids: True where the id's unit passes through a norm or mean of other units."""
        inexact = np.zeros(self.n, dtype=bool)
        for ids in self.inexact:
            inexact[ids] = True
        for ids, axis in self.inexact_if:
            if ids.shape[axis] > 1 and _varies(roots[ids], axis):
                inexact[ids.ravel()] = True
        return np.isin(roots, roots[inexact])

    def roots(self) -> np.ndarray:
        """Component representative (smallest id) of every id."""
        if not self.pairs_a:
            return np.arange(self.n, dtype=np.int64)
        return _components(self.n, np.concatenate(self.pairs_a), np.concatenate(self.pairs_b))

    def resolve(self, max_rounds: int = 8) -> np.ndarray:
        """Solves the couplings, then enforces split constraints until nothing changes.

        A split whose ids vary along two or more factors is made rectangular by letting only the
        innermost varying factor shrink and coupling positions across the other varying factors:
        a channel shuffle (groups x channels) then prunes the same position in every group. Heads
        need no constraint here: attention couples all features of a head (see the matmul rule),
        so only the heads factor varies.
        """
        roots = self.roots()
        for _ in range(max_rounds):
            changed = False
            for sc in self.splits:
                r = roots[sc.ids]
                varying = [ax for ax in range(r.ndim) if r.shape[ax] > 1 and _varies(r, ax)]
                sc.shrink_axis = varying[-1] if varying else -1
                if len(varying) >= 2:
                    self.couple_along(sc.ids, tuple(varying[:-1]))
                    changed = True
            if not changed:
                return roots
            roots = self.roots()
        return roots


def _varies(r: np.ndarray, axis: int) -> bool:
    return bool((r != r.take([0], axis=axis)).any())


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components by min-label propagation with pointer jumping (numpy only)."""
    parent = np.arange(n, dtype=np.int64)
    while True:
        ra, rb = parent[a], parent[b]
        diff = ra != rb
        if not diff.any():
            return parent
        ra, rb = ra[diff], rb[diff]
        low = np.minimum(ra, rb)
        np.minimum.at(parent, ra, low)
        np.minimum.at(parent, rb, low)
        while True:
            nxt = parent[parent]
            if np.array_equal(nxt, parent):
                break
            parent = nxt
