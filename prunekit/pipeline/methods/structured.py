"""Method ``structured``: score dependency groups → (sensitivity) → allocate a budget → remove units.

The model becomes physically smaller (channels, heads, features removed); the recover stage then fine-tunes
or distils it. ``budget`` says what is KEPT: ``{macs_kept: 0.5}``, ``{params_kept: 0.25}`` or
``{latency_ms: 20, batch: 1}`` (optionally ``tolerance``). ``allocation`` spreads it over the groups
(``uniform``, ``global``, ``sensitivity``, ``search``; see :mod:`prunekit.allocation`). With
``allocation_cost: latency`` the sensitivity greedy ranks steps by latency saved, measured on this machine on
the model as ``measure.inference`` exports it (NetAdapt, Yang et al. 2018).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prunekit.allocation import COST_NAMES, STRATEGY_NAMES, AllocationConfig, LatencyTable, load_latency_table
from prunekit.errors import ConfigError
from prunekit.export import InferenceConfig
from prunekit.importance import Calibration, ImportanceConfig, get, names, score_groups
from prunekit.pipeline.methods._engine import budget_from, check_importance, structured_prune
from prunekit.pipeline.methods.base import PRUNE_METHODS, PruneContext, PruneMethod, PruneOutcome
from prunekit.sensitivity import DEFAULT_RATIOS, SensitivityConfig, analyze
from prunekit.training import evaluate

__all__ = ["StructuredOptions", "LATENCY_ONLY", "SENSITIVITY_ONLY"]

#: Options read only with ``allocation_cost: latency``.
LATENCY_ONLY = ("latency_weight", "latency_passes", "latency_table", "latency_table_batch", "latency_table_repeats")
#: Options read only with ``allocation: sensitivity``.
SENSITIVITY_ONLY = ("sensitivity_ratios", "sensitivity_recalibration", "max_deviation")


@dataclass(frozen=True)
class StructuredOptions:
    """What to remove and how much.

    Attributes:
        importance: group criterion (``l1``, ``l2``, ``taylor``, ``gradient``, ``fpgm``, …).
        budget: what is kept: ``{macs_kept: 0.5}``, ``{params_kept: 0.25}`` or ``{latency_ms: 20, batch: 1}``,
            with an optional relative ``tolerance``.
        allocation: ``uniform``, ``global``, ``sensitivity`` or ``search``.
        calibration_samples: training examples a data-driven criterion scores with.
        sensitivity_ratios, sensitivity_samples, sensitivity_recalibration: the sensitivity analysis (each group
            pruned alone at these ratios on this many validation examples, BatchNorm re-estimated on that many
            training examples first); ``sensitivity_samples`` is also the proxy set of ``search``.
        min_channels, max_ratio, round_to, max_deviation: limits per group (see AllocationConfig).
        reduction, normalize: how member scores combine (see ImportanceConfig).
        exclude: module names whose parameters must not change.
        allocation_cost: ``budget`` (rank steps per MAC/parameter saved) or ``latency`` (per measured ms saved).
        latency_table_batch, latency_table_repeats, latency_passes, latency_weight, latency_table: the latency
            table (batch, timed rounds, re-measurements around the allocation, μ of the blended ranking, a table
            measured earlier); ``allocation_cost: latency`` only.
    """

    importance: str = "taylor"
    budget: dict[str, float] = field(default_factory=lambda: {"macs_kept": 0.5})
    allocation: str = "sensitivity"
    calibration_samples: int = 512
    sensitivity_ratios: list[float] = field(default_factory=lambda: list(DEFAULT_RATIOS))
    sensitivity_samples: int = 500
    sensitivity_recalibration: int = 0
    min_channels: int = 4
    max_ratio: float = 0.9
    round_to: int = 1
    max_deviation: float | None = None
    reduction: str = "mean"
    normalize: str = "mean"
    exclude: list[str] = field(default_factory=list)
    allocation_cost: str = "budget"
    latency_table_batch: int = 256
    latency_table_repeats: int = 5
    latency_weight: float | None = None
    latency_table: str | None = None
    latency_passes: int = 1

    def __post_init__(self) -> None:
        check_importance(self.importance, "group")
        if self.allocation not in STRATEGY_NAMES:
            raise ConfigError(f"unknown allocation {self.allocation!r}; choose one of: {', '.join(STRATEGY_NAMES)}")
        if self.allocation_cost not in COST_NAMES:
            raise ConfigError(f"unknown allocation_cost {self.allocation_cost!r}; choose one of: "
                              f"{', '.join(COST_NAMES)} (budget: rank steps by the budget's own metric saved)")
        self.budget_config()
        self.importance_config()
        self.allocation_config()
        if self.latency_table is not None:
            if self.allocation_cost != "latency":
                raise ConfigError(f"latency_table is read by allocation_cost: latency only (here "
                                  f"{self.allocation_cost!r}): set allocation_cost: latency or remove latency_table")
            self.saved_latency_table().check_covers({}, self.latency_table_batch)
        SensitivityConfig(tuple(self.sensitivity_ratios), max(self.sensitivity_samples, 1))
        if self.sensitivity_recalibration < 0:
            raise ConfigError(f"sensitivity_recalibration must be ≥ 0 training examples (0: off), got "
                              f"{self.sensitivity_recalibration}")
        if self.allocation != "sensitivity":
            given = [k for k in ("sensitivity_ratios", "sensitivity_recalibration")
                     if getattr(self, k) != _DEFAULTS[k]]
            if given:
                raise ConfigError(f"{', '.join(given)} configure the sensitivity analysis of allocation: sensitivity "
                                  f"(here {self.allocation!r}): remove them")
        if get(self.importance).needs_data and self.calibration_samples < 1:
            raise ConfigError(f"criterion {self.importance!r} needs calibration data "
                              f"({', '.join(sorted(get(self.importance).needs))}): set calibration_samples ≥ 1, or "
                              f"choose a data-free criterion: {', '.join(names('group', data_free=True))}")

    def budget_config(self):
        return budget_from(dict(self.budget))

    def saved_latency_table(self) -> LatencyTable | None:
        return None if self.latency_table is None else load_latency_table(self.latency_table)

    def importance_config(self) -> ImportanceConfig:
        return ImportanceConfig(self.importance, self.reduction, self.normalize)

    def allocation_config(self, seed: int = 0, export: InferenceConfig | None = None) -> AllocationConfig:
        return AllocationConfig(self.allocation, self.min_channels, self.max_ratio, self.round_to, seed=seed,
                                cost=self.allocation_cost, latency_batch=self.latency_table_batch,
                                latency_repeats=self.latency_table_repeats, latency_export=export,
                                max_deviation=self.max_deviation, latency_weight=self.latency_weight,
                                latency_passes=self.latency_passes)


_DEFAULTS = {"sensitivity_ratios": list(DEFAULT_RATIOS), "sensitivity_recalibration": 0}


def _sensitivity(ctx: PruneContext, opts: StructuredOptions, cal: Calibration | None) -> Any:
    from prunekit.graph import DependencyGraph

    data, seed = ctx.data, ctx.recipe.seed
    graph = DependencyGraph.build(ctx.model, data.x_train[:1], exclude=tuple(opts.exclude))
    scores = score_groups(graph, opts.importance_config(), cal)
    recal = None
    if opts.sensitivity_recalibration:
        recal = Calibration.from_data(data.x_train, None, opts.sensitivity_recalibration, seed).x
    sens = analyze(graph, data.x_val, data.y_val, scores,
                   SensitivityConfig(tuple(opts.sensitivity_ratios), opts.sensitivity_samples, seed), opts.importance,
                   recal)
    ctx.log(f"sensitivity of {len(sens.curves)} groups measured at {len(opts.sensitivity_ratios)} ratios")
    return sens


def _run(ctx: PruneContext) -> PruneOutcome:
    r, opts, data = ctx.recipe, ctx.recipe.prune.options, ctx.data
    ctx.model.eval()  # scores, sensitivity and allocation see inference-mode BatchNorm
    cal = None
    if opts.calibration_samples and get(opts.importance).needs_data:
        cal = Calibration.from_data(data.x_train, data.y_train, opts.calibration_samples, r.seed)
    sens = _sensitivity(ctx, opts, cal) if opts.allocation == "sensitivity" else None
    x_val, y_val = data.x_val[: opts.sensitivity_samples], data.y_val[: opts.sensitivity_samples]
    inf = r.measure.inference
    export = inf if inf.fold_bn or inf.channels_last else None  # the table times what the report times
    pruning = structured_prune(ctx.model, data.x_train[:4], opts.budget_config(),
                               opts.allocation_config(r.seed, export), opts.importance_config(), cal, sens,
                               (x_val, y_val), opts.exclude,
                               r.measure.latency_repeats, latency_table=opts.saved_latency_table())
    after = evaluate(ctx.model, data.x_test, data.y_test).accuracy
    files = {}
    if sens is not None:
        files["sensitivity.json"] = sens.to_dict()
    if (table := pruning["allocation"].get("latency_table")) is not None:  # reusable as prune.latency_table
        files["latency_table.json"] = table
    return PruneOutcome(recovered=False, report={"allocation": pruning}, files=files, accuracy_after_pruning=after)


PRUNE_METHODS.register("structured")(PruneMethod(
    "structured", StructuredOptions, _run, kind="structured",
    summary="remove channels/heads/features to a MACs, params or latency budget, allocated over dependency groups"))
