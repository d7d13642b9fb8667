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

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import ConfigError, PruningError
from prunekit.graph._labels import LabelStore, _components
from prunekit.graph._trace import Trace, iter_tensors, record

__all__ = ["DependencyGraph", "Group", "Member", "split_inputs"]


@dataclass
class Member:
    """One dim of one parameter or buffer inside a group: ``unit[i]`` is the unit of position i."""

    name: str
    dim: int
    unit: np.ndarray


@dataclass(eq=False)
class Group:
    """Coupled structures pruned together; see the module docstring."""

    name: str
    members: list[Member]
    units: np.ndarray  # root id of every unit, in the order of the leader member
    pinned: np.ndarray  # bool per unit: may not be removed
    exact: bool  # removing an all-zero unit leaves outputs unchanged (no norm or mean over it)
    reasons: list[str] = field(default_factory=list)  # why pinned units are pinned (non-empty if any is)

    @property
    def size(self) -> int:
        return len(self.units)

    @property
    def prunable(self) -> int:
        return int((~self.pinned).sum())

    def __repr__(self) -> str:
        kind = "exact" if self.exact else "inexact"
        return f"Group({self.name!r}, units={self.size}, prunable={self.prunable}, {kind}, members={len(self.members)})"


def split_inputs(example_inputs: Any) -> tuple[tuple, dict]:
    """A tensor -> ``(t,)``; a tuple/list -> positional args; a dict -> keyword args."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, Mapping):
        return (), dict(example_inputs)
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    raise ConfigError(
        f"example_inputs must be a tensor, a tuple of positional inputs or a dict of keyword inputs, "
        f"not {type(example_inputs).__name__}"
    )


class DependencyGraph:
    """Groups of coupled channels of ``model``; build it with :meth:`build`."""

    def __init__(self, model: nn.Module, args: tuple, kwargs: dict) -> None:
        self.model, self.args, self.kwargs = model, args, kwargs
        self.groups: list[Group] = []
        self.tensors: dict[str, torch.Tensor] = {}
        self.owners: dict[str, list[tuple[nn.Module, str]]] = {}
        self.attr_hints: list[tuple[str, np.ndarray]] = []
        self.size_hints: list[tuple[str, str, list[np.ndarray]]] = []  # (module, attr, ids of each piece)
        self.splits: list[tuple[str, np.ndarray, int]] = []
        self.n_ids = 0
        self.buffers: set[str] = set()
        self.pin_reasons: dict[str, int] = {}
        self.output_shapes: list[tuple[int, ...]] = []
        self.seconds = 0.0

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
            except Exception:  # NeedsRealForward, or anything shape-only mode got wrong
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
        graph.output_shapes = [tuple(t.shape) for t in iter_tensors(out)]
        _check_branches(model, trace)
        graph._solve(trace, excluded)
        graph.seconds = time.perf_counter() - t0
        return graph

    def _solve(self, trace: Trace, excluded: set[int]) -> None:
        store: LabelStore = trace.store
        roots = store.resolve()
        store.final_pins(roots)
        inexact = store.final_inexact(roots)
        self.pin_reasons = dict(store.pin_reasons)
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
            self.tensors[ref.name] = ref.tensor
            self.owners[ref.name] = ref.owners
            if not ref.is_param:
                self.buffers.add(ref.name)
        pinned = why[roots] >= 0
        self.n_ids = store.n
        self.attr_hints = [(m, roots[ids].ravel()) for m, _, ids in store.attr_hints if ids.ndim == 1]
        self.size_hints = [(m, a, [roots[p] for p in parts]) for m, a, parts in store.size_hints]
        self.splits = [(sc.module, roots[sc.ids], sc.shrink_axis) for sc in store.splits if sc.shrink_axis >= 0]
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
        for ms in by_group.values():
            leader = _leader(ms)
            allr = np.concatenate([leader[2]] + [r for _, _, r in ms])
            _, first = np.unique(allr, return_index=True)
            units_arr = allr[np.sort(first)]  # in order of first appearance, leader first
            lut[units_arr] = np.arange(len(units_arr))
            group_members = [Member(n, d, lut[r]) for n, d, r in ms]
            name = _unique(_readable(leader[0], leader[1]), names)
            reasons = [why[1][k] for k in sorted(set(why[0][units_arr].tolist())) if k >= 0]
            self.groups.append(Group(name, group_members, units_arr, pinned[units_arr],
                                     not bool(inexact[units_arr].any()), reasons))
        order = {ref.name: k for k, ref in enumerate(trace.params.values())}
        self.groups.sort(key=lambda g: _order(g, order))

    # ------------------------------------------------------------------ queries
    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise ConfigError(f"no group named {name!r}; groups are: {', '.join(g.name for g in self.groups[:20])}"
                          + (" ..." if len(self.groups) > 20 else ""))

    def prunable_groups(self, exact_only: bool = True) -> list[Group]:
        return [g for g in self.groups if g.prunable and (g.exact or not exact_only)]

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
        if isinstance(e, type):
            out.update(id(m) for m in modules.values() if isinstance(m, e))
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
    loose = graph.prunable_groups(exact_only=False) if exact_only else []
    if loose:
        names = ", ".join(g.name for g in loose[:3]) + (" ..." if len(loose) > 3 else "")
        raise PruningError(f"nothing in this model can be pruned exactly: its {len(loose)} prunable groups ({names}) "
                           f"pass through a norm or a mean, so removing even all-zero units changes the output; "
                           f"prune them with exact_only=False (prunekit check --include-norm-groups)")
    reasons = sorted(graph.pin_reasons.items(), key=lambda kv: -kv[1])[:5]
    raise PruningError("nothing in this model can be pruned; pinned by: "
                       + "; ".join(r for r, _ in reasons) + " (exclude or replace those modules)")
