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

from prunekit.criteria import WEIGHT_CRITERIA
from prunekit.data import DATASETS
from prunekit.errors import ConfigError, RecipeError
from prunekit.models import MODELS
from prunekit.pruners import SCHEDULES, SCOPES
from prunekit.pruners.unstructured import check_sparsity
from prunekit.recipe.validate import from_dict, to_dict
from prunekit.training import TrainConfig

__all__ = ["Recipe", "ModelSpec", "DataSpec", "PruneSpec", "MeasureSpec", "load_recipe",
           "parse_recipe", "RECIPE_VERSION"]

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
class PruneSpec:
    """How to prune (see :class:`prunekit.pruners.UnstructuredConfig` for the shared fields).

    Attributes:
        target: final sparsity of the prunable weights, in [0, 1).
        schedule: ``one_shot``, ``iterative`` (prune → fine-tune, ``steps`` times) or ``gradual``
            (Zhu & Gupta's cubic schedule during the fine-tuning run).
        steps: pruning steps of the iterative and gradual schedules.
        gradual_start, gradual_end: where gradual pruning begins and ends, as fractions of the
            fine-tuning run.
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

    def __post_init__(self) -> None:
        WEIGHT_CRITERIA.get(self.criterion)
        SCOPES.get(self.scope)
        SCHEDULES.get(self.schedule)
        check_sparsity(self.target, "target")
        if self.steps < 1:
            raise ConfigError(f"steps must be ≥ 1, got {self.steps}")
        if not 0.0 <= self.gradual_start < self.gradual_end <= 1.0:
            raise ConfigError(f"need 0 ≤ gradual_start < gradual_end ≤ 1, got "
                              f"{self.gradual_start} and {self.gradual_end}")
        if self.scope == "threshold" and (self.threshold is None or self.schedule != "one_shot"):
            raise ConfigError("scope 'threshold' needs a threshold value and schedule 'one_shot'")


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

    def __post_init__(self) -> None:
        if self.version != RECIPE_VERSION:
            raise ConfigError(f"version {self.version} is not supported; this prunekit reads "
                              f"version {RECIPE_VERSION}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def parse_recipe(raw: Any, source: str = "recipe") -> Recipe:
    """Validates parsed YAML and returns a :class:`Recipe` (raises :class:`RecipeError`)."""
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = dict(raw)
    for key in ("model", "data"):
        if isinstance(raw.get(key), str):
            raw[key] = {"name": raw[key]}
    return from_dict(Recipe, raw, source)


def load_recipe(path: str | Path) -> Recipe:
    """Reads and validates a recipe file."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe file {str(p)!r} does not exist")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RecipeError(f"{p}: not valid YAML{where}: {problem}") from None
    return parse_recipe(raw, p.name)
