"""The dependency graph: groups of coupled channels found from one recorded forward.

A *group* is a set of parameter slices that must be pruned together. It has *units*: unit k of a
group is everything that disappears when one structure is removed.

Example (conv -> BN -> ReLU -> conv)::

    group "conv1" has 8 units; unit 3 = conv1.weight[3], conv1.bias[3], bn.weight[3], bn.bias[3],
    bn.running_mean[3], bn.running_var[3], conv2.weight[:, 3]

An attention block gives a group whose units are heads (q, k, v rows and output-projection columns of
one head); a residual stream gives one group shared by every block that reads and writes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

import prunekit.graph._rules  # noqa: F401  (registers the op rules, whatever else was imported)
from prunekit.errors import ConfigError, PruningError
from prunekit.graph._fake import fallback_reason, shape_only_forward
from prunekit.graph._labels import LabelStore, _components
from prunekit.graph._trace import Trace, record
from prunekit.graph._walk import iter_tensors

__all__ = ["UNIT_KINDS", "DependencyGraph", "Group", "Inputs", "Member", "raise_no_groups", "split_inputs"]

#: What the units of a group can be (:meth:`DependencyGraph.unit_kind`).
UNIT_KINDS = ("heads", "channels")

log = logging.getLogger("prunekit.graph")


def _frozen(a: np.ndarray) -> np.ndarray:
    """``a`` made read-only: the graph's id arrays change only through :meth:`DependencyGraph.record_removal`."""
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Member:
    """One dim of one parameter or buffer inside a group: ``unit[i]`` is the unit of position i (read-only)."""

    name: str
    dim: int
    unit: np.ndarray


@dataclass(frozen=True, eq=False)
class Group:
    """Coupled structures pruned together; see the module docstring.

    Read-only: only the graph renumbers a group, when units were removed (:meth:`DependencyGraph.record_removal`).
    A group is hashed by identity, so it can key a removal plan.
    """

    name: str
    members: tuple[Member, ...]
    units: np.ndarray  # root id of every unit, in the order of the leader member
    pinned: np.ndarray  # bool per unit: may not be removed
    exact: bool  # removing an all-zero unit leaves outputs unchanged (no norm or mean over it)
    reasons: tuple[str, ...] = ()  # why pinned units are pinned (non-empty if any is)

    @property
    def size(self) -> int:
        return len(self.units)

    @property
    def prunable(self) -> int:
        return int((~self.pinned).sum())

    def __repr__(self) -> str:
        kind = "exact" if self.exact else "inexact"
        return f"Group({self.name!r}, units={self.size}, prunable={self.prunable}, {kind}, members={len(self.members)})"


class Inputs:
    """Positional and keyword inputs of one forward together: ``Inputs(image1, image2, flow_init=f)``.

    A plain tensor, tuple or dict also works as ``example_inputs``; this is for a model that takes both kinds.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = tuple(args), dict(kwargs)

    def to_tuple(self) -> tuple:  # what iter_tensors walks
        return (*self.args, *self.kwargs.values())

    def __repr__(self) -> str:
        return f"Inputs({len(self.args)} positional, keywords {sorted(self.kwargs)})"


def split_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    """A tensor -> ``(t,)``; a tuple/list -> positional args; a dict -> keyword args; :class:`Inputs` -> both."""
    if isinstance(example_inputs, Inputs):
        return example_inputs.args, dict(example_inputs.kwargs)
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    raise ConfigError(
        f"example_inputs must be a tensor, a tuple of positional inputs, a dict of keyword inputs or "
        f"prunekit.Inputs(*args, **kwargs), not {type(example_inputs).__name__}"
    )


class DependencyGraph:
    """Groups of coupled channels of ``model``; build it with :meth:`build`.

    Everything it exposes is read-only (tuples, frozen groups, read-only arrays, mapping views); the
    one change it accepts is :meth:`record_removal`, from the code that removed units from the model.

    Unit ids: every channel, head or feature the recorder saw has an integer id in ``range(n_ids)``;
    ``Group.units``, ``Member.unit`` and the hints below hold such ids.
    """

    def __init__(self, model: nn.Module, args: tuple, kwargs: dict) -> None:
        self._model = model
        self._args, self._kwargs = tuple(args), dict(kwargs)
        self._groups: tuple[Group, ...] = ()
        self._tensors: dict[str, torch.Tensor] = {}
        self._owners: dict[str, tuple[tuple[nn.Module, str], ...]] = {}
        self._attr_hints: tuple[tuple[str, np.ndarray], ...] = ()
        self._size_hints: tuple[tuple[str, str, tuple[np.ndarray, ...]], ...] = ()
        self._splits: tuple[tuple[str, np.ndarray, int], ...] = ()
        self._n_ids = 0
        self._buffers: frozenset[str] = frozenset()
        self._pin_reasons: dict[str, int] = {}
        self._output_shapes: tuple[tuple[int, ...], ...] = ()
        self._fallbacks: list[str] = []
        self._seconds = 0.0

    # ------------------------------------------------------------------ read-only views
    @property
    def model(self) -> nn.Module:
        """The model the graph was built on (pruning changes it in place; the graph follows)."""
        return self._model

    @property
    def args(self) -> tuple:
        """The example inputs' positional part."""
        return self._args

    @property
    def kwargs(self) -> Mapping[str, Any]:
        """The example inputs' keyword part (a read-only view)."""
        return MappingProxyType(self._kwargs)

    @property
    def groups(self) -> tuple[Group, ...]:
        """Every group, in the order of their first parameter in the model."""
        return self._groups

    @property
    def tensors(self) -> Mapping[str, torch.Tensor]:
        """Each member's parameter or buffer by qualified name, as the model holds it now."""
        return MappingProxyType(self._tensors)

    @property
    def owners(self) -> Mapping[str, tuple[tuple[nn.Module, str], ...]]:
        """Every ``(module, attribute)`` holding each member tensor (tied weights have several)."""
        return MappingProxyType(self._owners)

    @property
    def buffers(self) -> frozenset[str]:
        """The member names that are buffers (running statistics), not parameters."""
        return self._buffers

    @property
    def pin_reasons(self) -> Mapping[str, int]:
        """Why units are pinned, with how many ids each reason pinned."""
        return MappingProxyType(self._pin_reasons)

    @property
    def output_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Shapes of the model's outputs on the example inputs."""
        return self._output_shapes

    @property
    def n_ids(self) -> int:
        """Size of the unit id space (``np.zeros(graph.n_ids, bool)`` masks ids)."""
        return self._n_ids

    @property
    def splits(self) -> tuple[tuple[str, np.ndarray, int], ...]:
        """``(module, ids, axis)``: a module reshaped its channels into heads along ``axis`` of ``ids``."""
        return self._splits

    @property
    def attr_hints(self) -> tuple[tuple[str, np.ndarray], ...]:
        """``(module, ids)``: a module holds ``len(ids)`` in an attribute that must follow removals."""
        return self._attr_hints

    @property
    def size_hints(self) -> tuple[tuple[str, str, tuple[np.ndarray, ...]], ...]:
        """``(module, attribute, ids of each piece)``: ``torch.split`` sizes held in an attribute."""
        return self._size_hints

    @property
    def seconds(self) -> float:
        """Wall time of :meth:`build`."""
        return self._seconds

    @property
    def shape_only_fallbacks(self) -> int:
        """How many shape-only runs (capture, verification) had to be repeated as real forwards."""
        return len(self._fallbacks)

    @property
    def fallback_reasons(self) -> tuple[str, ...]:
        """Why each of those runs fell back, in order (``"capture: ..."``, ``"forward: ..."``)."""
        return tuple(self._fallbacks)

    def _fell_back(self, stage: str, reason: str, logged: bool = False) -> None:
        if not logged:
            log.debug("%s of %s: shape-only run repeated as a real forward: %s", stage, type(self.model).__name__,
                      reason)
        self._fallbacks.append(f"{stage}: {reason}")

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, model: nn.Module, example_inputs: Any, *, exclude: Iterable[str | type] = ()) -> DependencyGraph:
        """Records one forward of ``model`` on ``example_inputs`` and finds the groups.

        Args:
            model: any ``nn.Module``; it is run once in eval mode under ``torch.no_grad``.
            example_inputs: a tensor, a tuple of positional inputs or a dict of keyword inputs.
            exclude: module names (dotted paths, as in ``named_modules``) or module types whose
                parameters must not change; every group touching them is pinned.

        Raises:
            ConfigError: bad inputs (wrong shape: the message names the module that failed) or an
                excluded name that is not a module of the model.
        """
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, not {type(model).__name__}")
        args, kwargs = split_inputs(example_inputs)
        t0 = time.perf_counter()
        graph = cls(model, args, kwargs)
        excluded = _excluded_modules(model, exclude)
        was_training = model.training
        model.eval()
        holder = [Trace(model)]
        try:
            try:
                out = record(model, args, kwargs, holder[0], shape_only=True)
            except Exception as e:  # NeedsRealForward, or anything shape-only mode got wrong
                graph._fell_back("capture", f"{fallback_reason(e)} in {holder[0].where()}")
                holder[0] = Trace(model)
                out = record(model, args, kwargs, holder[0], shape_only=False)
            trace = holder[0]
        except Exception as e:  # the user's model failed on the user's inputs
            raise ConfigError(
                f"running the model on the example inputs failed in {holder[0].where()}: "
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; pass inputs of the shape "
                f"and type the model expects"
            ) from e
        finally:
            model.train(was_training)
        graph._output_shapes = tuple(tuple(t.shape) for t in iter_tensors(out))
        _check_branches(model, trace)
        graph._solve(trace, excluded)
        graph._seconds = time.perf_counter() - t0
        return graph

    def _solve(self, trace: Trace, excluded: set[int]) -> None:
        store: LabelStore = trace.store
        roots = store.resolve()
        store.final_pins(roots)
        inexact = store.final_inexact(roots)
        self._pin_reasons = dict(store.pin_reasons)
        members: list[tuple[str, int, np.ndarray]] = []
        why = store.pin_why.copy()
        texts = {t: k for k, t in enumerate(store.pin_texts)}
        for (tid, dim), ids in trace.param_dims.items():
            ref = trace.params[tid]
            r = roots[ids]
            if any(id(m) in excluded for m, _ in ref.owners):
                _pin_roots(why, texts, r, f"{ref.name}: excluded")
            elif (r == r[0]).all() and len(r) > 1:
                _pin_roots(why, texts, r, f"{ref.name}: every entry of dim {dim} belongs to one unit")
            elif (r == r[0]).all():
                _pin_roots(why, texts, r, f"{ref.name}: a single entry along dim {dim}")
            members.append((ref.name, dim, r))
            self._tensors[ref.name] = ref.tensor
            self._owners[ref.name] = tuple(ref.owners)
        self._buffers = frozenset(ref.name for ref in trace.params.values()
                                  if not ref.is_param and ref.name in self._tensors)
        pinned = why[roots] >= 0
        self._n_ids = store.n
        self._attr_hints = tuple((m, _frozen(roots[ids].ravel())) for m, _, ids in store.attr_hints if ids.ndim == 1)
        self._size_hints = tuple((m, a, tuple(_frozen(roots[p]) for p in parts)) for m, a, parts in store.size_hints)
        self._splits = tuple((sc.module, _frozen(roots[sc.ids]), sc.shrink_axis)
                             for sc in store.splits if sc.shrink_axis >= 0)
        self._make_groups(members, roots, pinned, inexact, trace, (why, list(texts)))

    def _make_groups(self, members, roots, pinned, inexact, trace: Trace, why: tuple[np.ndarray, list[str]]) -> None:
        if not members:
            return
        a = np.concatenate([np.full(len(r), r[0]) for _, _, r in members])
        b = np.concatenate([r for _, _, r in members])
        comp = _components(len(roots), a, b)
        by_group: dict[int, list[tuple[str, int, np.ndarray]]] = {}
        for m in members:
            by_group.setdefault(int(comp[m[2][0]]), []).append(m)
        names: set[str] = set()
        lut = np.full(len(roots), -1, dtype=np.int64)
        groups: list[Group] = []
        for ms in by_group.values():
            leader = _leader(ms)
            allr = np.concatenate([leader[2]] + [r for _, _, r in ms])
            _, first = np.unique(allr, return_index=True)
            units_arr = allr[np.sort(first)]  # in order of first appearance, leader first
            lut[units_arr] = np.arange(len(units_arr))
            group_members = tuple(Member(n, d, _frozen(lut[r])) for n, d, r in ms)
            name = _unique(_readable(leader[0], leader[1]), names)
            reasons = tuple(why[1][k] for k in sorted(set(why[0][units_arr].tolist())) if k >= 0)
            groups.append(Group(name, group_members, _frozen(units_arr), _frozen(pinned[units_arr]),
                                not bool(inexact[units_arr].any()), reasons))
        order = {ref.name: k for k, ref in enumerate(trace.params.values())}
        self._groups = tuple(sorted(groups, key=lambda g: _order(g, order)))

    # ------------------------------------------------------------------ queries
    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise ConfigError(f"no group named {name!r}; groups are: {', '.join(g.name for g in self.groups[:20])}"
                          + (" ..." if len(self.groups) > 20 else ""))

    def prunable_groups(self, exact_only: bool = True) -> list[Group]:
        return [g for g in self.groups if g.prunable and (g.exact or not exact_only)]

    def unit_kind(self, group: Group) -> str:
        """What the units of ``group`` are: ``"heads"`` (a module reshaped them into attention heads) or
        ``"channels"`` (anything else: FFN neurons of a transformer, channels of a CNN)."""
        if not self._splits:
            return "channels"
        head_ids = np.concatenate([ids.ravel() for _, ids, _ in self._splits])
        return "heads" if np.isin(group.units, head_ids).any() else "channels"

    def run_shape_only(self) -> Any:
        """Runs the model on the example inputs, shape-only, in eval mode; returns its outputs (values made up).

        Used to check that a pruned model still runs; a fallback to a real forward is counted in
        :attr:`shape_only_fallbacks`.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            return shape_only_forward(self.model, self._args, self._kwargs,
                                      on_fallback=lambda why: self._fell_back("forward", why, logged=True))
        finally:
            self.model.train(was_training)

    # ------------------------------------------------------------------ the one change it accepts
    def record_removal(self, removed: np.ndarray) -> None:
        """Renumbers the graph after units were removed from its model (``removed``: bool mask over ids).

        Called by :func:`prunekit.structured.prune_groups` once the model's tensors were sliced: groups
        lose the removed units (the rest are renumbered), head splits and size hints shrink, and the
        member tensors are read back from their modules.
        """
        if removed.shape != (self._n_ids,) or removed.dtype != bool:
            raise ValueError(f"removed must be a bool mask of shape ({self._n_ids},), not {removed.dtype} "
                             f"{removed.shape}")
        for g in self._groups:
            gone = removed[g.units]
            if not gone.any():
                continue
            remap = np.cumsum(~gone) - 1
            members = tuple(Member(m.name, m.dim, _frozen(remap[m.unit[~gone[m.unit]]])) for m in g.members)
            object.__setattr__(g, "members", members)  # frozen for everyone else; identity kept (plans key on it)
            object.__setattr__(g, "units", _frozen(g.units[~gone]))
            object.__setattr__(g, "pinned", _frozen(g.pinned[~gone]))
            for m in members:
                module, attr = self._owners[m.name][0]
                self._tensors[m.name] = module._parameters.get(attr, module._buffers.get(attr))
        splits = []
        for mname, ids, axis in self._splits:
            kept = ~removed[ids]
            others = tuple(a for a in range(ids.ndim) if a != axis)
            along = kept.any(axis=others) if others else kept
            splits.append((mname, _frozen(np.take(ids, np.flatnonzero(along), axis=axis)), axis))
        self._splits = tuple(splits)
        self._attr_hints = tuple((m, _frozen(ids[~removed[ids]])) for m, ids in self._attr_hints)
        self._size_hints = tuple((m, a, tuple(_frozen(p[~removed[p]]) for p in parts))
                                 for m, a, parts in self._size_hints)

    def summary(self) -> str:
        lines = [f"{len(self.groups)} groups, {len(self.prunable_groups())} prunable exactly, "
                 f"{len(self.prunable_groups(False))} prunable"]
        for g in self.groups:
            lines.append(f"  {g.name}: {g.size} units ({g.prunable} prunable, {'exact' if g.exact else 'inexact'}),"
                         f" {len(g.members)} members")
        return "\n".join(lines)


def _pin_roots(why: np.ndarray, texts: dict[str, int], r: np.ndarray, reason: str) -> None:
    new = r[why[r] < 0]
    if new.size:
        why[new] = texts.setdefault(reason, len(texts))


def _leader(ms: Sequence[tuple[str, int, np.ndarray]]) -> tuple[str, int, np.ndarray]:
    for n, d, r in ms:
        if d == 0 and n.endswith("weight"):
            return (n, d, r)
    return ms[0]


def _readable(name: str, dim: int) -> str:
    base = name[: -len(".weight")] if name.endswith(".weight") else name
    return base if dim == 0 else f"{base}[dim{dim}]"


def _unique(name: str, seen: set[str]) -> str:
    out, k = name, 1
    while out in seen:
        k += 1
        out = f"{name}#{k}"
    seen.add(out)
    return out


def _order(g: Group, order: dict[str, int]) -> int:
    return min(order.get(m.name, 0) for m in g.members)


def _excluded_modules(model: nn.Module, exclude: Iterable[str | type]) -> set[int]:
    modules = dict(model.named_modules())
    out: set[int] = set()
    for e in exclude:
        if isinstance(e, type):  # a module of that type and everything inside it, as for a name
            out.update(id(sub) for m in modules.values() if isinstance(m, e) for sub in m.modules())
        elif e in modules:
            out.update(id(m) for m in modules[e].modules())
        else:
            close = [n for n in modules if e.split(".")[-1] in n][:5]
            raise ConfigError(f"exclude: model has no module named {e!r}"
                              + (f"; did you mean one of {close}?" if close else ""))
    return out


def _check_branches(model: nn.Module, trace: Trace) -> None:
    """Refuses a model whose forward branched on data and skipped layers: their channels are unknown."""
    if not trace.branch_sites:
        return
    used = {tid for tid, _ in trace.param_dims}
    skipped = [name for name, m in model.named_modules()
               if any(p is not None for p in m._parameters.values())
               and not any(id(p) in used for p in m._parameters.values() if p is not None)]
    if skipped:
        raise PruningError(
            f"data-dependent control flow at {trace.branch_sites[0]} (a tensor's value decided a Python branch) "
            f"and layers that never ran on the example inputs: {', '.join(skipped[:5])}; pass example inputs that "
            f"take every branch, or exclude those layers and the layers feeding them"
        )


def raise_no_groups(graph: DependencyGraph, exact_only: bool = True) -> None:
    """Raises the :class:`~prunekit.errors.PruningError` for a graph without prunable groups, saying why."""
    loose = graph.prunable_groups(exact_only=False) if exact_only else []
    if loose:
        names = ", ".join(g.name for g in loose[:3]) + (" ..." if len(loose) > 3 else "")
        raise PruningError(f"nothing in this model can be pruned exactly: its {len(loose)} prunable groups ({names}) "
                           f"pass through a norm or a mean, so removing even all-zero units changes the output; "
                           f"prune them with exact_only=False (prunekit check --include-norm-groups)")
    reasons = sorted(graph.pin_reasons.items(), key=lambda kv: -kv[1])[:5]
    raise PruningError("nothing in this model can be pruned; pinned by: "
                       + "; ".join(r for r, _ in reasons) + " (exclude or replace those modules)")
