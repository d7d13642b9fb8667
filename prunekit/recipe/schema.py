"""The recipe: one YAML file that says what to prune, how, and where the results go.

Example (``recipes/demo.yaml``)::

    model: lenet300
    data: mnist
    train: {epochs: 15, lr: 0.05}
    prune: {criterion: l1, scope: global, target: 0.92, schedule: iterative, steps: 5}
    finetune: {epochs: 3, lr: 0.01}

``model`` and ``data`` may be a name or a mapping (``{name: ..., kwargs/options: ...}``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from prunekit.data import DATASETS
from prunekit.errors import ConfigError, RecipeError
from prunekit.importance import get
from prunekit.models import MODELS
from prunekit.pruners import SCHEDULES
from prunekit.pruners.allocations import allocation_name
from prunekit.pruners.granularity import GRANULARITIES, check_nm, nm_sparsity
from prunekit.pruners.lottery import REWINDS
from prunekit.pruners.regularizers import REGULARIZERS
from prunekit.pruners.unstructured import check_sparsity
from prunekit.recipe.validate import from_dict, to_dict
from prunekit.recovery import RecoveryConfig
from prunekit.training import TrainConfig

__all__ = ["Recipe", "ModelSpec", "DataSpec", "PruneSpec", "MeasureSpec", "LotterySpec", "RegularizeSpec",
           "load_recipe", "parse_recipe", "RECIPE_VERSION"]

RECIPE_VERSION = 1


@dataclass(frozen=True)
class ModelSpec:
    """``name``: a built-in model or ``package.module:factory``; ``checkpoint``: weights to load."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None

    def __post_init__(self) -> None:
        if ":" not in self.name:
            MODELS.get(self.name)


@dataclass(frozen=True)
class DataSpec:
    """``name``: a built-in dataset, ``imagefolder:PATH`` or ``tensors:PATH``."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        DATASETS.get(self.name.split(":", 1)[0])


@dataclass(frozen=True)
class LotterySpec:
    """Options of the ``lottery`` schedule (its target is ``prune.target``, its rounds ``prune.steps``).

    Attributes:
        rewind: ``init`` (θ₀, Frankle & Carbin 2019) or ``iteration`` (θ_k, Frankle et al. 2020).
        rewind_step: k, the optimiser step of the dense run to rewind to (``iteration`` only).
        control: also train the final mask from a random re-initialisation (report key ``control``).
    """

    rewind: str = "init"
    rewind_step: int = 0
    control: bool = True

    def __post_init__(self) -> None:
        if self.rewind not in REWINDS:
            raise ConfigError(f"unknown rewind {self.rewind!r}; choose one of: {', '.join(REWINDS)}")
        if self.rewind == "iteration" and self.rewind_step < 1:
            raise ConfigError(f"rewind 'iteration' needs rewind_step ≥ 1 (optimiser steps into the dense run), "
                              f"got {self.rewind_step}; or use rewind: init")


@dataclass(frozen=True)
class RegularizeSpec:
    """A sparsity penalty added to the dense training loss (``kind: none`` for none).

    Attributes:
        kind: ``none``, ``l1`` (λ‖θ‖₁), ``group_lasso`` (λΣ√|g|‖W_g‖₂ over filters) or ``bn_l1``
            (λΣ|γ|, network slimming: the pruning step then masks the BN channels with the smallest |γ|).
        strength: λ.
    """

    kind: str = "none"
    strength: float = 1e-4

    def __post_init__(self) -> None:
        if self.kind != "none":
            REGULARIZERS.get(self.kind)
        if not self.strength >= 0:
            raise ConfigError(f"strength (λ) must be ≥ 0, got {self.strength}")


@dataclass(frozen=True)
class PruneSpec:
    """How to prune (see :class:`prunekit.pruners.UnstructuredConfig` for the shared fields).

    Attributes:
        target: final sparsity of the prunable weights, in [0, 1).
        schedule: ``one_shot``, ``iterative`` (prune → fine-tune, ``steps`` times), ``gradual``
            (Zhu & Gupta's cubic schedule during the fine-tuning run), ``lottery`` (iterative
            magnitude pruning with rewinding, ``steps`` rounds), ``at_init`` (prune before training
            with ``snip``/``synflow``, then train the sparse net with the ``train`` settings) or
            ``soft_filter`` (He et al. 2018 during the fine-tuning run; granularity ``filter``).
        steps: pruning steps of the iterative, gradual and lottery schedules.
        gradual_start, gradual_end: where gradual pruning begins and ends, as fractions of the
            fine-tuning run.
        granularity: mask shape: ``element``, ``vector``, ``kernel``, ``filter`` or ``nm``.
        nm: [N, M] of the ``nm`` granularity (the target must then be 1 − N/M).
        iterations: scoring rounds of ``at_init`` (default: 1 for snip, 100 for synflow).
        remove_channels: after pruning, physically remove the channels that filter masks left dead.
        lottery: options of the ``lottery`` schedule.
        calibration_samples: training examples the data-driven criteria (``gradient``, ``taylor``,
            ``hessian``, ``loss_change``, ``apoz``, ``mean_activation``, ``mi``) score with, re-scored at
            every pruning step of the trained model.
        recalibrate_bn: schedules ``one_shot`` and ``iterative``: training examples on which the BatchNorm
            statistics are re-estimated after every pruning step, before fine-tuning (adaptive BN; masked
            weights shift the statistics every later BatchNorm sees); 0: off.
    """

    criterion: str = "l1"
    scope: str = "global"
    target: float = 0.9
    schedule: str = "iterative"
    steps: int = 5
    ratios: dict[str, float] = field(default_factory=dict)
    threshold: float | None = None
    exclude: list[str] = field(default_factory=list)
    include_bias: bool = False
    gradual_start: float = 0.0
    gradual_end: float = 0.75
    granularity: str = "element"
    nm: list[int] = field(default_factory=lambda: [2, 4])
    iterations: int | None = None
    remove_channels: bool = False
    lottery: LotterySpec = field(default_factory=LotterySpec)
    calibration_samples: int = 512
    recalibrate_bn: int = 0

    def __post_init__(self) -> None:
        get(self.criterion, "weight")
        allocation_name(self.scope)
        SCHEDULES.get(self.schedule)
        GRANULARITIES.get(self.granularity)
        self._check_combinations()
        check_sparsity(self.target, "target")
        if self.steps < 1:
            raise ConfigError(f"steps must be ≥ 1, got {self.steps}")
        if self.calibration_samples < 1:
            raise ConfigError(f"calibration_samples must be ≥ 1, got {self.calibration_samples}")
        if not 0.0 <= self.gradual_start < self.gradual_end <= 1.0:
            raise ConfigError(f"need 0 ≤ gradual_start < gradual_end ≤ 1, got "
                              f"{self.gradual_start} and {self.gradual_end}")
        if self.scope == "threshold" and (self.threshold is None or self.schedule != "one_shot"):
            raise ConfigError("scope 'threshold' needs a threshold value and schedule 'one_shot'")

    def _check_combinations(self) -> None:
        if self.granularity == "nm":
            if len(self.nm) != 2:
                raise ConfigError(f"nm must be [N, M], got {self.nm}")
            check_nm("nm", (1, self.nm[1]), tuple(self.nm))
            want = nm_sparsity(tuple(self.nm))
            if abs(self.target - want) > 1e-9:
                raise ConfigError(f"granularity 'nm' with nm {self.nm} fixes the sparsity at 1 − N/M = {want:g}, "
                                  f"but target is {self.target}; set target: {want:g}")
        if self.schedule == "soft_filter" and self.granularity != "filter":
            raise ConfigError(f"schedule 'soft_filter' zeroes whole filters: set granularity: filter "
                              f"(got {self.granularity!r})")
        if self.schedule == "at_init" and self.iterations is not None and self.iterations < 1:
            raise ConfigError(f"iterations must be ≥ 1, got {self.iterations}")
        if self.iterations is not None and self.schedule != "at_init":
            raise ConfigError(f"iterations counts the scoring rounds of schedule 'at_init'; remove it or "
                              f"set schedule: at_init (got schedule {self.schedule!r})")
        if get(self.criterion).at_init and self.schedule != "at_init":
            raise ConfigError(f"criterion {self.criterion!r} scores weights at initialisation: set "
                              f"schedule: at_init (got {self.schedule!r})")
        if self.recalibrate_bn < 0:
            raise ConfigError(f"recalibrate_bn must be ≥ 0 training examples (0: off), got {self.recalibrate_bn}")
        if self.recalibrate_bn and self.schedule not in ("one_shot", "iterative"):
            raise ConfigError(f"recalibrate_bn re-estimates BatchNorm statistics after the pruning steps of schedules "
                              f"one_shot and iterative; schedule {self.schedule!r} trains right after pruning (its "
                              f"BatchNorm statistics follow): remove recalibrate_bn")
        if self.remove_channels and self.granularity != "filter":
            raise ConfigError("remove_channels removes the channels that filter masks left dead: set "
                              f"granularity: filter (got {self.granularity!r})")


@dataclass(frozen=True)
class MeasureSpec:
    latency_batches: list[int] = field(default_factory=lambda: [1, 256])
    latency_repeats: int = 20

    def __post_init__(self) -> None:
        if not self.latency_batches or any(b < 1 for b in self.latency_batches):
            raise ConfigError(f"latency_batches must be positive batch sizes, got {self.latency_batches}")
        if self.latency_repeats < 1:
            raise ConfigError(f"latency_repeats must be ≥ 1, got {self.latency_repeats}")


@dataclass(frozen=True)
class Recipe:
    """A whole pruning job: train dense → prune (with fine-tuning) → measure → report."""

    model: ModelSpec
    data: DataSpec
    version: int = RECIPE_VERSION
    name: str = "run"
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneSpec = field(default_factory=PruneSpec)
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, lr=0.01))
    measure: MeasureSpec = field(default_factory=MeasureSpec)
    regularize: RegularizeSpec = field(default_factory=RegularizeSpec)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)

    def __post_init__(self) -> None:
        if self.version != RECIPE_VERSION:
            raise ConfigError(f"version {self.version} is not supported; this prunekit reads "
                              f"version {RECIPE_VERSION}")
        self._check_combinations()

    def _check_combinations(self) -> None:
        trained = self.train.epochs > 0
        if self.prune.schedule in ("lottery", "at_init") and not trained:
            raise ConfigError(f"prune.schedule {self.prune.schedule!r} rewinds to the weights stored before "
                              "training, so it needs a dense run: set train.epochs ≥ 1 (a checkpoint alone "
                              "has no stored initial state)")
        if self.recovery.method == "distill" and not trained and self.model.checkpoint is None:
            raise ConfigError("recovery.method 'distill' needs a teacher, but the dense model is untrained "
                              "(train.epochs is 0 and model.checkpoint is unset): set train.epochs ≥ 1 or "
                              "model.checkpoint, or use recovery.method: finetune")
        if self.regularize.kind == "bn_l1" and (self.prune.schedule != "one_shot" or
                                                self.prune.granularity != "element"):
            raise ConfigError("regularize.kind 'bn_l1' (network slimming) prunes BatchNorm channels by |γ| "
                              "after training: use prune.schedule: one_shot with the default granularity")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def parse_recipe(raw: Any, source: str = "recipe", cls: type | None = None) -> Any:
    """Validates parsed YAML and returns a :class:`Recipe` (or ``cls``; raises :class:`RecipeError`)."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = dict(raw)
    for key in ("model", "data"):
        if isinstance(raw.get(key), str):
            raw[key] = {"name": raw[key]}
    return from_dict(cls or Recipe, raw, source)


def read_yaml(path: str | Path) -> Any:
    """Parses a recipe file; a missing file or bad YAML is a one-line :class:`RecipeError`."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe file {str(p)!r} does not exist")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{p}: not valid YAML{where}: {problem}") from None


def load_recipe(path: str | Path) -> Recipe:
    """Reads and validates a recipe file."""
    return parse_recipe(read_yaml(path), Path(path).name)
