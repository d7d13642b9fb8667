"""Budgets (what the pruned model may cost) and the allocation settings.

A budget says what the pruned model KEEPS: a fraction of the dense model's MACs or parameters, or a
measured latency on this machine at a stated batch size:

    Budget(macs_kept=0.5)               # 2× fewer MACs, met within ±2%
    Budget(params_kept=0.25)            # 4× fewer parameters, ±2%
    Budget(latency_ms=20, batch=1)      # 20 ms per batch of 1 on this CPU, ±10%
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prunekit.errors import ConfigError, strict_fields
from prunekit.export import InferenceConfig

__all__ = ["Budget", "AllocationConfig", "COST_NAMES", "STRATEGY_NAMES"]

STRATEGY_NAMES = ("uniform", "global", "sensitivity", "search")
COST_NAMES = ("budget", "latency")


@strict_fields({"macs": "write macs_kept= (the fraction of the dense MACs KEPT; 'macs' meant the same)",
               "params": "write params_kept= (the fraction of the dense parameters KEPT; 'params' meant the same)"})
@dataclass(frozen=True)
class Budget:
    """Exactly one of ``macs_kept``, ``params_kept`` (fractions of the dense model KEPT, in (0, 1)) or
    ``latency_ms`` (measured median at ``batch``) is set.

    Attributes:
        macs_kept: fraction of the dense model's MACs the pruned model keeps (0.5: 2× fewer MACs).
        params_kept: fraction of the dense model's parameters the pruned model keeps.
        latency_ms: measured median latency (ms) per batch of ``batch`` on this machine.
        batch: batch size of the latency measurement.
        tolerance: allowed relative deviation from the target; default 0.02 (MACs, params) or
            0.10 (latency).
    """

    macs_kept: float | None = None
    params_kept: float | None = None
    latency_ms: float | None = None
    batch: int = 1
    tolerance: float | None = None

    def __post_init__(self) -> None:
        set_ = [k for k in _FIELDS if getattr(self, k) is not None]
        if len(set_) != 1:
            raise ConfigError(f"a budget sets exactly one of macs_kept, params_kept, latency_ms (e.g. "
                              f"Budget(macs_kept=0.5) for 2× fewer MACs, Budget(latency_ms=20, batch=1)); got "
                              f"{set_ or 'none'}")
        value = getattr(self, set_[0])
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"budget {set_[0]}={value!r} must be a number")
        if set_[0] != "latency_ms" and not 0 < value < 1:
            raise ConfigError(f"budget {set_[0]}={value!r}: give the fraction of the dense model to KEEP, in "
                              f"(0, 1): {set_[0]}=0.5 means 2× fewer {_FIELDS[set_[0]]}")
        if set_[0] == "latency_ms" and not value > 0:
            raise ConfigError(f"budget latency_ms={value!r} must be a positive number of milliseconds")
        if self.batch < 1:
            raise ConfigError(f"budget batch must be ≥ 1, got {self.batch}")
        if self.tolerance is not None and not 0 < self.tolerance < 1:
            raise ConfigError(f"budget tolerance must be in (0, 1), got {self.tolerance}")

    @property
    def metric(self) -> str:
        """What is counted: ``macs``, ``params`` or ``latency_ms``."""
        return next(_FIELDS[k] for k in _FIELDS if getattr(self, k) is not None)

    @property
    def value(self) -> float:
        """The target: the fraction kept (MACs, params) or milliseconds (latency)."""
        return float(next(getattr(self, k) for k in _FIELDS if getattr(self, k) is not None))

    @property
    def tol(self) -> float:
        if self.tolerance is not None:
            return self.tolerance
        return 0.10 if self.metric == "latency_ms" else 0.02

    def describe(self) -> str:
        if self.metric == "latency_ms":
            return f"latency_ms={self.value:g} at batch {self.batch}"
        return f"{self.metric}_kept={self.value:g} ({1 / self.value:.2f}× fewer {self.metric})"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Budget:
        """A budget from a mapping (a recipe's ``prune.budget``, ``--budget``), e.g. ``{macs_kept: 0.5}``.

        Raises:
            ConfigError: an unknown key; the old keys ``macs`` / ``params`` are named with their new
                spelling (``macs_kept`` / ``params_kept``: they meant the fraction kept already).
        """
        unknown = sorted(set(d) - {*_FIELDS, "batch", "tolerance"})
        if unknown:
            renamed = [f"{k!r} is now {_OLD_KEYS[k]!r}" for k in unknown if k in _OLD_KEYS]
            raise ConfigError(f"unknown budget key(s) {unknown}; valid: macs_kept, params_kept, latency_ms, batch, "
                              f"tolerance (e.g. {{macs_kept: 0.5}} keeps half the MACs)"
                              + (f"; {', '.join(renamed)}, the fraction KEPT" if renamed else ""))
        return cls(**{k: (int(v) if k == "batch" else v) for k, v in d.items()})


#: field → the metric it counts
_FIELDS = {"macs_kept": "macs", "params_kept": "params", "latency_ms": "latency_ms"}
#: old spelling → new field
_OLD_KEYS = {"macs": "macs_kept", "params": "params_kept"}


@dataclass(frozen=True)
class AllocationConfig:
    """How per-group ratios are chosen.

    Attributes:
        strategy: ``uniform`` (one ratio for all groups), ``global`` (rank all units together after
            per-group normalisation), ``sensitivity`` (greedy on measured sensitivity curves: cheapest
            loss rise per MAC saved) or ``search`` (evolutionary search over per-group ratios scored by
            a fast accuracy proxy, in the spirit of AMC, He et al. 2018).
        min_channels: every group keeps at least this many units.
        max_ratio: no group loses more than this fraction of its units.
        max_deviation: ``sensitivity`` only: no group's ratio strays more than this (a fraction of its
            units) from the uniform allocation's ratio; ``None`` leaves the greedy free. Single-layer
            sensitivity curves miss that damage in several layers compounds, so an unbounded greedy can
            empty a layer that looked cheap alone (bench/results/criteria.md, cnn1d at 4×).
        round_to: kept units per group are a multiple of this (or the whole group).
        population, generations: size of the ``search``.
        seed: seeds the search.
        cost: what the ``sensitivity`` greedy divides a step's loss rise by: ``budget`` (the MACs or
            parameters it saves, the budget's own metric) or ``latency`` (the milliseconds it saves,
            read from a table measured on this machine, :mod:`prunekit.allocation.latency`; NetAdapt,
            Yang et al. 2018). The budget itself is met in its own metric either way.
        latency_weight: cost ``latency`` only: ``None`` ranks a step by its loss rise per millisecond
            saved; a number μ ≥ 0 ranks it by (loss rise − μ · ms saved / dense ms) per fraction of the
            budget's metric saved instead, so that among steps with (near) no loss rise the one that saves
            the most time per MAC goes first, rather than any step with no loss rise whatever time it saves.
        latency_passes: cost ``latency`` only: after the first allocation, re-measure the table around
            it (each group's counts timed with every other group at its allocated count) and allocate again,
            ``latency_passes − 1`` times (NetAdapt measures each step in the current network for the same
            reason). Savings are not additive: halving a residual stream saves far more once the
            convolutions inside it are thin than it does in the dense model.
        latency_batch, latency_repeats: batch size and timed runs of the latency table.
        latency_export: how the models of the latency table are exported before timing (BatchNorm
            folded, channels_last: :class:`prunekit.export.InferenceConfig`); ``None`` times them as they are.
    """

    strategy: str = "global"
    min_channels: int = 1
    max_ratio: float = 0.9
    round_to: int = 1
    population: int = 12
    generations: int = 6
    seed: int = 0
    cost: str = "budget"
    max_deviation: float | None = None
    latency_batch: int = 256
    latency_repeats: int = 5
    latency_export: InferenceConfig | None = None
    latency_weight: float | None = None
    latency_passes: int = 1

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGY_NAMES:
            raise ConfigError(f"unknown allocation strategy {self.strategy!r}; choose one of: "
                              f"{', '.join(STRATEGY_NAMES)}")
        if self.cost not in COST_NAMES:
            raise ConfigError(f"unknown allocation cost {self.cost!r}; choose one of: {', '.join(COST_NAMES)}")
        if self.cost == "latency" and self.strategy != "sensitivity":
            raise ConfigError(f"allocation cost 'latency' ranks the steps of strategy 'sensitivity'; strategy "
                              f"{self.strategy!r} does not rank steps by cost: use strategy 'sensitivity' or "
                              f"cost 'budget'")
        if self.latency_weight is not None:
            if self.cost != "latency":
                raise ConfigError(f"latency_weight (recipe: structured.allocation_latency_weight) weighs the latency "
                                  f"saved by a step and needs cost 'latency'; cost is {self.cost!r}: remove "
                                  f"latency_weight or set cost 'latency'")
            if isinstance(self.latency_weight, bool) or not isinstance(self.latency_weight, (int, float)) \
                    or not 0 <= self.latency_weight < float("inf"):
                raise ConfigError(f"latency_weight (recipe: structured.allocation_latency_weight) must be a finite "
                                  f"number ≥ 0 (loss rise per fraction of the dense latency saved) or null, got "
                                  f"{self.latency_weight!r}")
        if isinstance(self.latency_passes, bool) or not isinstance(self.latency_passes, int) or self.latency_passes < 1:
            raise ConfigError(f"latency_passes must be an integer ≥ 1 (1: the table of the dense model only), got "
                              f"{self.latency_passes!r}")
        if self.latency_passes > 1 and self.cost != "latency":
            raise ConfigError(f"latency_passes re-measures the latency table around an allocation and needs cost "
                              f"'latency'; cost is {self.cost!r}: set cost 'latency' or latency_passes 1")
        if self.latency_batch < 1 or self.latency_repeats < 1:
            raise ConfigError(f"latency_batch and latency_repeats must be ≥ 1, got {self.latency_batch}, "
                              f"{self.latency_repeats}")
        if self.min_channels < 1 or self.round_to < 1:
            raise ConfigError(f"min_channels and round_to must be ≥ 1, got {self.min_channels}, {self.round_to}")
        if not 0 < self.max_ratio < 1:
            raise ConfigError(f"max_ratio must be in (0, 1), got {self.max_ratio}")
        if self.max_deviation is not None and not 0 <= self.max_deviation < 1:
            raise ConfigError(f"max_deviation must be in [0, 1) (a fraction of a group's units), got "
                              f"{self.max_deviation!r}")
        if self.max_deviation is not None and self.strategy != "sensitivity":
            raise ConfigError(f"max_deviation bounds strategy 'sensitivity'; strategy {self.strategy!r} does not "
                              f"take it: remove it or use strategy 'sensitivity'")
        if self.population < 2 or self.generations < 1:
            raise ConfigError("search needs population ≥ 2 and generations ≥ 1")
