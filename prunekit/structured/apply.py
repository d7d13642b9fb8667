"""Physically removing units: slice every member tensor, fix layer attributes, verify, or roll back.

All changes go through a :class:`_Transaction`; if the pruned model cannot run on the example
inputs (a shape baked into the code, an attribute no adapter knows), every change is undone and a
:class:`~prunekit.errors.PruningError` names the module that failed: never a half-pruned model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import PruningError
from prunekit.graph import HEAD_ATTRS, INNER_ATTRS, DependencyGraph, Group, iter_tensors
from prunekit.structured.adapters import adapter_for, snapshot


class _Transaction:
    def __init__(self) -> None:
        self.log: list[tuple[Any, str, Any, bool]] = []

    def set_item(self, d: dict, key: str, value: Any) -> None:
        self.log.append((d, key, d[key], True))
        d[key] = value

    def set_attr(self, obj: Any, name: str, value: Any) -> None:
        self.log.append((obj, name, getattr(obj, name), False))
        setattr(obj, name, value)

    def rollback(self) -> None:
        for obj, key, old, is_item in reversed(self.log):
            if is_item:
                obj[key] = old
            else:
                setattr(obj, key, old)


def remove_units(graph: DependencyGraph, removal: Mapping[Group, np.ndarray], verify: bool = True) -> None:
    """Removes units (indices into ``group.units``) from the model of ``graph``, in place."""
    removed = np.concatenate([g.units[np.asarray(idx, dtype=np.int64)] for g, idx in removal.items()] or
                             [np.zeros(0, dtype=np.int64)])
    if removed.size == 0:
        return
    removed_mask = np.zeros(graph.n_ids, dtype=bool)
    removed_mask[removed] = True
    keeps: dict[str, list[tuple[int, np.ndarray]]] = {}
    for g in removal:
        gone = removed_mask[g.units]
        for m in g.members:
            keep = ~gone[m.unit]
            if not keep.any():
                raise PruningError(f"pruning would remove every entry of dim {m.dim} of {m.name}; keep at least one")
            keeps.setdefault(m.name, []).append((m.dim, keep))
    tx = _Transaction()
    try:
        _slice_tensors(graph, keeps, tx)
        _rewrite_head_attrs(graph, removed_mask, tx)
        if verify:
            _verify(graph)
    except Exception as e:
        tx.rollback()
        if isinstance(e, PruningError):
            raise
        where, name = failing_module(e, graph.model)
        err = PruningError(
            f"the pruned model failed to run in {where}: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}; the model was left unchanged. Exclude that module "
            f"(exclude=[...]) or the layers feeding it"
        )
        err.module_name = name  # type: ignore[attr-defined]  (lets prune() skip the groups it touches)
        raise err from e
    graph.record_removal(removed_mask)


def _slice_tensors(graph: DependencyGraph, keeps: dict, tx: _Transaction) -> None:
    touched: dict[int, tuple[nn.Module, dict]] = {}
    for name, dims in keeps.items():
        old = graph.tensors[name]
        new = old.detach()
        for dim, keep in sorted(dims, key=lambda dk: dk[1].mean()):  # the most-shrinking dim first: less to copy
            new = new.index_select(dim, torch.from_numpy(np.flatnonzero(keep)).to(new.device))
        if new is old or new.data_ptr() == old.data_ptr():
            new = new.clone()  # index_select already copied; a clone is only needed if nothing was selected
        if isinstance(old, nn.Parameter):
            new = nn.Parameter(new, requires_grad=old.requires_grad)
        for module, attr in graph.owners[name]:
            touched.setdefault(id(module), (module, snapshot(module)))
            store = module._parameters if attr in module._parameters else module._buffers
            tx.set_item(store, attr, new)  # the graph reads its tensors back in record_removal
    for module, old_attrs in touched.values():
        adapter = adapter_for(module)
        if adapter is None:
            continue
        before, cls = snapshot(module), type(module)
        adapter(module, old_attrs)
        for k, v in snapshot(module).items():
            if before.get(k) != v:
                tx.log.append((module, k, before[k], False))
        if type(module) is not cls:  # the adapter switched to a replacement layer (structured.layers)
            tx.log.append((module, "__class__", cls, False))


def _rewrite_head_attrs(graph: DependencyGraph, removed: np.ndarray, tx: _Transaction) -> None:
    modules = dict(graph.model.named_modules())
    modules["<model>"] = graph.model  # how the recorder names the root module in messages and hints
    for mname, ids, axis in graph.splits:
        kept = ~removed[ids]
        if kept.all():
            continue
        others = tuple(a for a in range(ids.ndim) if a != axis)
        along = kept.any(axis=others) if others else kept
        old = list(ids.shape)
        new = list(old)
        new[axis] = int(along.sum())
        module = modules.get(mname)
        if module is None or axis == ids.ndim - 1:
            continue
        _rewrite(module, HEAD_ATTRS, {old[axis]: new[axis]}, tx)
        _rewrite(module, INNER_ATTRS, {int(np.prod(old[axis:])): int(np.prod(new[axis:])),
                                       int(np.prod(old)): int(np.prod(new))}, tx)
    for mname, ids in graph.attr_hints:
        module = modules.get(mname)
        n_new = int((~removed[ids]).sum())
        if module is not None and n_new != len(ids):
            _rewrite(module, INNER_ATTRS, {len(ids): n_new}, tx)
    for mname, attr, parts in graph.size_hints:  # torch.split(x, self.split_indices)
        module = modules.get(mname)
        sizes = [int((~removed[p]).sum()) for p in parts]
        old_sizes = getattr(module, attr, None)
        if module is not None and old_sizes is not None and list(old_sizes) != sizes:
            tx.set_attr(module, attr, type(old_sizes)(sizes))


def _rewrite(module: nn.Module, names: frozenset, mapping: dict[int, int], tx: _Transaction) -> None:
    for k, v in list(vars(module).items()):
        if k in names and isinstance(v, int) and not isinstance(v, bool) and v in mapping and mapping[v] != v:
            tx.set_attr(module, k, mapping[v])


def _verify(graph: DependencyGraph) -> None:
    out = graph.run_shape_only()  # a fallback to a real forward is counted on the graph
    shapes = [tuple(t.shape) for t in iter_tensors(out)]
    if len(shapes) == len(graph.output_shapes):
        for got, want in zip(shapes, graph.output_shapes, strict=True):
            if got[1:] != want[1:]:
                raise PruningError(f"pruning changed an output shape from {want} to {got}; the model was left "
                                   f"unchanged (its outputs are pinned, so a layer bakes a shape: exclude it)")


def failing_module(e: BaseException, model: nn.Module) -> tuple[str, str | None]:
    """The innermost module of the traceback, as (message text, dotted name)."""
    names = {id(m): n for n, m in model.named_modules()}
    tb, where, name = e.__traceback__, "the forward", None
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if isinstance(obj, nn.Module) and id(obj) in names:
            name = names[id(obj)]
            where = f"module {name or '<model>'!r} ({type(obj).__name__})"
        tb = tb.tb_next
    return where, name
