"""The configs of :func:`prunekit.prune_` (re-exported as ``prunekit.UnstructuredConfig`` and
``prunekit.StructuredConfig``): frozen dataclasses validated on construction. They live in the methods
layer because the methods take them directly (:class:`~prunekit.pruners.UnstructuredPruner`,
:func:`~prunekit.pruners.select_units`, :func:`~prunekit.pruners.check_model`): one config per idea,
no internal twin validating the same fields again.

One meaning per number: ``sparsity`` is the fraction REMOVED (of the prunable weights, or of the
prunable units of a structured model); a :class:`~prunekit.allocation.Budget` says what is KEPT
(``macs_kept``, ``params_kept``, ``latency_ms``). One word for how a target is spread over layers:
``allocation``.

Example:
    >>> UnstructuredConfig(sparsity=0.9, importance="l1", allocation="global")
    >>> StructuredConfig(budget=Budget(macs_kept=0.5), importance="taylor", allocation="sensitivity")
    >>> StructuredConfig(budget=0.5)
    Traceback (most recent call last):
    ConfigError: StructuredConfig.budget must be a prunekit.Budget, e.g. Budget(macs_kept=0.5); got 0.5
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prunekit.allocation.budget import Budget
from prunekit.errors import ConfigError, strict_fields
from prunekit.graph import UNIT_KINDS
from prunekit.importance import NORMALIZATIONS, REDUCTIONS, get
from prunekit.pruners.granularity import GRANULARITIES, check_nm, nm_sparsity
from prunekit.pruners.solvers import LAYER_SOLVERS
from prunekit.sensitivity import DEFAULT_RATIOS

__all__ = ["UNSTRUCTURED_ALLOCATIONS", "STRUCTURED_ALLOCATIONS", "LayerwiseConfig", "UnstructuredConfig",
           "StructuredConfig", "sparsity_for"]

#: How an unstructured target is spread over layers (``uniform``: every layer the same sparsity;
#: ``global``: one score threshold over all layers; ``ratios``: a sparsity per layer pattern;
#: ``threshold``: every weight scoring below a value goes; ``row``: every output row of every layer the
#: same sparsity, Wanda's comparison group).
UNSTRUCTURED_ALLOCATIONS = ("uniform", "global", "ratios", "threshold", "row")
#: How a structured target is spread over groups (``sensitivity`` and ``search`` need a budget).
STRUCTURED_ALLOCATIONS = ("uniform", "global", "sensitivity", "search")

#: Fields that belong to the other config kind: why, and what to write instead.
_OTHER_KIND = {
    "UnstructuredConfig": {
        "budget": "budgets (MACs, parameters, latency kept) remove whole channels: use "
                  "StructuredConfig(budget=Budget(...)); unstructured pruning takes sparsity=",
        "round_to": "round_to rounds kept channels: use StructuredConfig",
        "min_channels": "min_channels bounds kept channels: use StructuredConfig",
        "criterion": "the criterion is called importance=: write importance=",
        "scope": "the spread over layers is called allocation= (scope 'layer' is allocation 'uniform')",
        "target": "the target is sparsity= (the fraction removed)",
    },
    "StructuredConfig": {
        "granularity": "granularities shape masks of unstructured pruning: use UnstructuredConfig(granularity=...)",
        "nm": "N:M patterns are masks: use UnstructuredConfig(granularity='nm', nm=(2, 4))",
        "include_bias": "include_bias masks biases: use UnstructuredConfig",
        "ratios": "per-layer ratios are an UnstructuredConfig allocation; a structured model takes a budget",
        "threshold": "a score threshold is an UnstructuredConfig allocation",
        "criterion": "the criterion is called importance=: write importance=",
        "scope": "the spread over groups is called allocation=",
        "strategy": "the spread over groups is called allocation=",
        "ratio": "the fraction of units removed is sparsity=",
        "target": "a structured target is sparsity= (fraction removed) or budget=Budget(macs_kept=...)",
    },
}


def _choice(owner: str, what: str, value: Any, choices: tuple[str, ...] | list[str]) -> None:
    if value not in choices:
        raise ConfigError(f"{owner}.{what}={value!r} is not one of: {', '.join(choices)}")


def _fraction(owner: str, what: str, value: Any, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{owner}.{what}={value!r}: give the fraction {meaning}, in [0, 1) (0.9 removes 90%)")


def _patterns(owner: str, value: Any) -> tuple:
    if isinstance(value, str):
        raise ConfigError(f"{owner}.exclude must be a list of names or patterns, e.g. exclude=({value!r},); "
                          f"got the string {value!r}")
    return tuple(value)


def _nm_fixed_sparsity(owner: str, nm: tuple, sparsity: float | None) -> float:
    """The sparsity 1 − N/M that granularity 'nm' fixes; a different ``sparsity`` given beside it is an error."""
    check_nm("nm", (1, nm[1] if len(nm) == 2 else 1), nm)
    want = nm_sparsity(nm)
    if sparsity is not None and abs(sparsity - want) > 1e-9:
        raise ConfigError(f"{owner}: granularity 'nm' {nm[0]}:{nm[1]} fixes sparsity at 1 − N/M = {want:g}; got "
                          f"sparsity={sparsity}: leave sparsity out or set it to {want:g}")
    return want


def _importance(owner: str, value: Any, kind: str) -> None:
    try:
        get(value, kind)
    except ConfigError as e:
        raise ConfigError(f"{owner}.importance: {e}") from None


def _per_kind(owner: str, value: Mapping) -> dict[str, float]:
    """``{"heads": 0.5, "channels": 0.25}``, checked: known kinds, fractions that keep a unit of every group."""
    out = {}
    for kind, frac in value.items():
        if kind not in UNIT_KINDS:
            raise ConfigError(f"{owner}.sparsity[{kind!r}]: unknown kind of unit; kinds are {', '.join(UNIT_KINDS)} "
                              f"(e.g. sparsity={{'heads': 0.5, 'channels': 0.5}})")
        if isinstance(frac, (int, float)) and not isinstance(frac, bool) and frac >= 1:
            what = "head of every attention layer" if kind == "heads" else "unit of every group"
            raise ConfigError(f"{owner}.sparsity[{kind!r}]={frac!r} would remove every {what} (or more than it "
                              f"has); a layer keeps at least one: give a fraction below 1, e.g. 0.5 (12 heads -> 6)")
        _fraction(owner, f"sparsity[{kind!r}]", frac, f"of the {kind} removed")
        out[kind] = float(frac)
    if not out:
        raise ConfigError(f"{owner}.sparsity={{}} prunes nothing: give e.g. {{'heads': 0.5, 'channels': 0.5}}")
    return out


def sparsity_for(config: StructuredConfig, kind: str) -> float:
    """The fraction of units of ``kind`` that ``config.sparsity`` removes (0 for a kind its mapping leaves out)."""
    s = config.sparsity
    if isinstance(s, Mapping):
        return s.get(kind, 0.0)
    return 0.0 if s is None else float(s)


@strict_fields(_OTHER_KIND["UnstructuredConfig"])
@dataclass(frozen=True)
class UnstructuredConfig:
    """Masks single weights (or vectors, kernels, filters, N:M runs) of Linear and Conv layers.

    Attributes:
        sparsity: fraction of the prunable weights REMOVED, in [0, 1); :func:`prunekit.prune_` needs it
            with allocations ``uniform``, ``global`` and ``row`` (for granularity ``nm`` it is 1 − N/M and may be
            left out); a schedule driving an :class:`~prunekit.pruners.UnstructuredPruner` may give its
            targets step by step instead.
        importance: a criterion with a single-weight form (``prunekit.list_criteria("weight")``).
        allocation: ``uniform`` (every layer the same sparsity), ``global`` (one threshold over all
            layers), ``ratios`` (``ratios`` gives a sparsity per parameter-name pattern), ``threshold``
            (every weight scoring below ``threshold`` goes) or ``row`` (every output row of every layer the
            same sparsity: Wanda's per-output comparison group; granularity ``element``).
        ratios: allocation ``ratios`` only: ``{"conv*.weight": 0.5, ...}`` (fnmatch patterns).
        threshold: allocation ``threshold`` only: the score below which weights go.
        granularity: ``element``, ``vector``, ``kernel``, ``filter`` or ``nm``.
        nm: (N, M) of granularity ``nm``: N of every M consecutive input weights kept.
        exclude: parameter- or module-name patterns left dense, e.g. ``("fc.*",)``.
        include_bias: also prune biases.
        seed: seeds criterion ``random``.
        permanent: fold the masks into the weights (plain state dict; fine-tuning may regrow them)
            instead of leaving them on the model, where hooks keep pruned weights at zero.
    """

    sparsity: float | None = None
    importance: str = "l1"
    allocation: str = "global"
    ratios: Mapping[str, float] = field(default_factory=dict)
    threshold: float | None = None
    granularity: str = "element"
    nm: tuple[int, int] = (2, 4)
    exclude: tuple[str, ...] = ()
    include_bias: bool = False
    seed: int = 0
    permanent: bool = False

    def __post_init__(self) -> None:
        own = "UnstructuredConfig"
        _importance(own, self.importance, "weight")
        _choice(own, "allocation", self.allocation, UNSTRUCTURED_ALLOCATIONS)
        _choice(own, "granularity", self.granularity, GRANULARITIES.names())
        object.__setattr__(self, "exclude", _patterns(own, self.exclude))
        object.__setattr__(self, "nm", tuple(self.nm))
        object.__setattr__(self, "ratios", dict(self.ratios))
        if self.granularity == "nm":
            _nm_fixed_sparsity(own, self.nm, self.sparsity)
        elif self.allocation in ("uniform", "global", "row"):
            if self.allocation == "row" and self.granularity != "element":
                raise ConfigError(f"{own}: allocation 'row' ranks single weights within each output row; it needs "
                                  f"granularity 'element', got {self.granularity!r}")
            if self.sparsity is not None:
                _fraction(own, "sparsity", self.sparsity, "of the prunable weights removed")
        elif self.sparsity is not None:
            raise ConfigError(f"{own}: allocation {self.allocation!r} sets the sparsity per layer itself; remove "
                              f"sparsity={self.sparsity} (or use allocation 'global' / 'uniform')")
        self._check_allocation_inputs(own)

    def _check_allocation_inputs(self, own: str) -> None:
        if (self.allocation == "ratios") != bool(self.ratios):
            raise ConfigError(f"{own}: ratios= goes with allocation 'ratios' and it needs them (e.g. "
                              f"ratios={{'conv*.weight': 0.5}}); got allocation {self.allocation!r}, ratios "
                              f"{self.ratios or 'none'}")
        for name, r in self.ratios.items():
            _fraction(own, f"ratios[{name!r}]", r, "of that layer's weights removed")
        if (self.allocation == "threshold") != (self.threshold is not None):
            raise ConfigError(f"{own}: threshold= goes with allocation 'threshold' and it needs one; got "
                              f"allocation {self.allocation!r}, threshold {self.threshold!r}")


@strict_fields(_OTHER_KIND["StructuredConfig"])
@dataclass(frozen=True)
class StructuredConfig:
    """Removes whole channels, neurons and heads: the model becomes smaller and dense.

    Set exactly one target: ``sparsity`` (fraction of the prunable units REMOVED, per group with
    allocation ``uniform``, over all groups with ``global``) or ``budget`` (what the pruned model KEEPS:
    ``Budget(macs_kept=0.5)``, ``Budget(params_kept=0.25)``, ``Budget(latency_ms=20)``).

    ``sparsity`` may also give one fraction per kind of unit (:data:`prunekit.graph.UNIT_KINDS`):
    ``{"heads": 0.5, "channels": 0.5}`` removes half the attention heads of every attention layer
    (BERT's 12 → 6) and half the neurons of every other group (a transformer's FFN); a kind left out
    is not pruned. With ``global`` each kind is ranked over all its groups.

    Attributes:
        importance: a criterion with a group form (``prunekit.list_criteria("group")``).
        allocation: ``uniform``, ``global``, ``sensitivity`` (greedy on measured sensitivity curves;
            budget only) or ``search`` (evolutionary search scored on the calibration data; budget only).
            Both of the last two evaluate on the ``calibration`` passed to :func:`prunekit.prune_`.
        round_to: kept units per group are a multiple of this (or the whole group).
        min_channels, max_ratio: budget only: every group keeps at least ``min_channels`` units and
            loses at most ``max_ratio`` of them.
        exclude: module names or types whose parameters must not change.
        exact_only: skip groups whose removal is not output-preserving even for zero weights (a
            transformer's hidden size passes through norms and means).
        reduction, normalize: how the per-member scores of a group combine (see
            :class:`prunekit.importance.ImportanceConfig`).
        sensitivity_ratios: allocation ``sensitivity``: the ratios each group's curve is measured at.
        population, generations: allocation ``search``: its size.
        seed: seeds ``random``, sampling and the search.
    """

    sparsity: float | Mapping[str, float] | None = None
    budget: Budget | None = None
    importance: str = "l2"
    allocation: str = "uniform"
    round_to: int = 1
    min_channels: int = 1
    max_ratio: float = 0.9
    exclude: tuple = ()
    exact_only: bool = True
    reduction: str = "mean"
    normalize: str = "mean"
    sensitivity_ratios: tuple[float, ...] = DEFAULT_RATIOS
    population: int = 12
    generations: int = 6
    seed: int = 0

    def __post_init__(self) -> None:
        own = "StructuredConfig"
        if (self.sparsity is None) == (self.budget is None):
            raise ConfigError(f"{own} needs exactly one target: sparsity= (fraction of units removed) or "
                              f"budget=Budget(macs_kept=...|params_kept=...|latency_ms=...); got "
                              f"{'both' if self.sparsity is not None else 'neither'}")
        if self.budget is not None and not isinstance(self.budget, Budget):
            raise ConfigError(f"{own}.budget must be a prunekit.Budget, e.g. Budget(macs_kept=0.5); got "
                              f"{self.budget!r}")
        if isinstance(self.sparsity, Mapping):
            object.__setattr__(self, "sparsity", _per_kind(own, self.sparsity))
        elif self.sparsity is not None:
            _fraction(own, "sparsity", self.sparsity, "of the prunable units removed")
        if self.sparsity is not None:
            if self.allocation in ("sensitivity", "search"):
                raise ConfigError(f"{own}: allocation {self.allocation!r} spreads a budget; give "
                                  f"budget=Budget(macs_kept=...) instead of sparsity=, or allocation 'uniform' "
                                  f"or 'global'")
        if self.budget is not None and not self.exact_only:
            raise ConfigError(f"{own}: a budget is allocated over the exactly prunable groups only; exact_only=False "
                              f"goes with sparsity= (or keep exact_only=True)")
        _importance(own, self.importance, "group")
        _choice(own, "allocation", self.allocation, STRUCTURED_ALLOCATIONS)
        _choice(own, "reduction", self.reduction, sorted(REDUCTIONS))
        _choice(own, "normalize", self.normalize, sorted(NORMALIZATIONS))
        object.__setattr__(self, "exclude", _patterns(own, self.exclude))
        object.__setattr__(self, "sensitivity_ratios", tuple(self.sensitivity_ratios))
        for what in ("round_to", "min_channels", "population", "generations"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{own}.{what} must be a positive integer, got {v!r}")
        if not 0 < self.max_ratio < 1:
            raise ConfigError(f"{own}.max_ratio must be in (0, 1), got {self.max_ratio!r}")


@strict_fields({"importance": "a layer-wise prune picks its scores with solver= (magnitude, wanda, sparsegpt); "
                              "UnstructuredConfig takes importance=",
                "allocation": "every layer gets the same sparsity; the comparison group is compare= (layer, row, "
                              "block)",
                "method": "the layer-wise method is called solver=: write solver=",
                "budget": "a layer-wise prune takes sparsity= or granularity='nm'"})
@dataclass(frozen=True)
class LayerwiseConfig:
    """One-shot post-training pruning of every Linear layer, layer by layer on calibration inputs.

    As SparseGPT (Frantar & Alistarh 2023) and Wanda (Sun et al. 2023) prune large language models: the
    calibration batch runs up to the first block of the model's repeated blocks (e.g. a transformer's
    ``encoder.layer``); each block's Linear layers are pruned from the inputs they receive there, and the
    *pruned* block's outputs become the next block's inputs. Linear layers outside the blocks are pruned
    last, from one pass of the pruned model. Every layer reaches the same sparsity.

    Attributes:
        solver: ``magnitude``, ``wanda`` or ``sparsegpt`` (:data:`prunekit.pruners.solvers.LAYER_SOLVERS`).
        sparsity: fraction of each layer's weights REMOVED, in [0, 1); for granularity ``nm`` 1 − N/M (may be
            left out).
        granularity: ``element`` (unstructured) or ``nm``.
        nm: (N, M) of granularity ``nm``: N of every M consecutive inputs kept in each row.
        compare: the group whose scores are ranked: ``layer``, ``row`` (magnitude, wanda) or ``block``
            (sparsegpt's column blocks); None: the solver's default (magnitude ``layer``, wanda ``row``,
            sparsegpt ``block``).
        blocksize: sparsegpt: columns per lazy batch update and per mask choice (B = 128 in the paper).
        damp: sparsegpt: λ = damp · mean diag(XᵀX) added to the Hessian's diagonal (0.01 in the paper).
        sequential: True: block by block on the pruned blocks' outputs; False: every layer from one pass of
            the dense model.
        blocks: the dotted name of the ModuleList (or Sequential) of blocks; None: the list with the most
            (≥ 2) blocks that hold Linear layers, or, if there is none, the whole model as one block.
        exclude: module-name patterns (fnmatch) of Linear layers left dense, e.g. ``("lm_head",)``.
        permanent: fold the masks into the weights instead of leaving them on the model.
    """

    solver: str = "sparsegpt"
    sparsity: float | None = None
    granularity: str = "element"
    nm: tuple[int, int] = (2, 4)
    compare: str | None = None
    blocksize: int = 128
    damp: float = 0.01
    sequential: bool = True
    blocks: str | None = None
    exclude: tuple[str, ...] = ()
    permanent: bool = False

    def __post_init__(self) -> None:
        own = "LayerwiseConfig"
        solver = LAYER_SOLVERS.get(self.solver)
        _choice(own, "granularity", self.granularity, ("element", "nm"))
        object.__setattr__(self, "exclude", _patterns(own, self.exclude))
        object.__setattr__(self, "nm", tuple(self.nm))
        if self.granularity == "nm":
            object.__setattr__(self, "sparsity", _nm_fixed_sparsity(own, self.nm, self.sparsity))
            if self.blocksize % self.nm[1]:
                raise ConfigError(f"{own}.blocksize={self.blocksize} must be a multiple of M={self.nm[1]}")
        elif self.sparsity is None:
            raise ConfigError(f"{own} needs sparsity= (the fraction of each layer's weights removed, e.g. 0.5) or "
                              f"granularity='nm' with nm=(2, 4)")
        else:
            _fraction(own, "sparsity", self.sparsity, "of each layer's weights removed")
        if self.compare is not None:
            _choice(own, f"compare (solver {self.solver!r})", self.compare, solver.compares)
        if isinstance(self.blocksize, bool) or not isinstance(self.blocksize, int) or self.blocksize < 1:
            raise ConfigError(f"{own}.blocksize must be a positive integer, got {self.blocksize!r}")
        if not 0 <= self.damp < 10:
            raise ConfigError(f"{own}.damp must be in [0, 10) (a fraction of the mean Hessian diagonal), got "
                              f"{self.damp!r}")
