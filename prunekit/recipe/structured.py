"""Structured recipes: train → score → (sensitivity) → allocate to a budget → prune → fine-tune → report.

A recipe with a top-level ``structured:`` key (``recipes/structured-resnet-mnist.yaml``)::

    model: resnet_mini
    data: mnist
    train: {epochs: 4, lr: 0.05}
    structured: {criterion: taylor, strategy: sensitivity, target: {macs_kept: 0.5}}
    finetune: {epochs: 3, lr: 0.005}
    recovery: {method: distill}                         # optional: fine-tune by distilling the dense model
    inference: {fold_bn: true, channels_last: true}     # optional: latency of the inference export

``target`` is a :class:`~prunekit.allocation.Budget`: ``{macs_kept: 0.5}``, ``{params_kept: 0.25}`` or
``{latency_ms: 20, batch: 1}``. ``allocation_cost: latency`` makes the sensitivity greedy rank steps by
latency saved, measured at ``latency_table_batch`` on the model as ``inference`` exports it (see
:mod:`prunekit.allocation.latency`). :func:`load_any_recipe` reads either kind of recipe.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from prunekit._version import __version__
from prunekit.allocation import (
    COST_NAMES,
    STRATEGY_NAMES,
    AllocationConfig,
    Budget,
    LatencyTable,
    load_latency_table,
    prune_to_budget,
)
from prunekit.data import load_dataset
from prunekit.errors import ConfigError
from prunekit.export import InferenceConfig, prepare_inference
from prunekit.importance import Calibration, ImportanceConfig, get, score_groups
from prunekit.io.checkpoint import atomic_write_text
from prunekit.io.outdir import check_output_dir, staged_output
from prunekit.measure.summary import measure_model, time_side_by_side
from prunekit.models import build_model
from prunekit.recipe.schema import (
    RECIPE_VERSION,
    DataSpec,
    MeasureSpec,
    ModelSpec,
    Recipe,
    parse_recipe,
    read_yaml,
)
from prunekit.recipe.validate import to_dict
from prunekit.recovery import RecoveryConfig, recover
from prunekit.sensitivity import DEFAULT_RATIOS, SensitivityConfig, analyze
from prunekit.structured.serialize import save_pruned
from prunekit.training import TrainConfig, default_device, evaluate, train

__all__ = ["StructuredSpec", "StructuredRecipe", "parse_structured_recipe", "load_any_recipe",
           "run_structured_recipe"]


@dataclass(frozen=True)
class StructuredSpec:
    """What to remove and how much (see :mod:`prunekit.importance` and :mod:`prunekit.allocation`).

    Attributes:
        criterion: importance criterion with a group form (l1, l2, random, gradient, taylor, hessian, apoz,
            mean_activation,
            bn_scale, fpgm, mi, loss_change).
        strategy: allocation strategy (uniform, global, sensitivity, search).
        target: the budget: ``{macs_kept: 0.5}``, ``{params_kept: 0.25}`` (fractions KEPT) or
            ``{latency_ms: 20, batch: 1}``.
        calibration_samples: training examples used by data-driven criteria.
        sensitivity_ratios: ratios of the sensitivity analysis (strategy ``sensitivity``).
        sensitivity_samples: validation examples per sensitivity evaluation (and search proxy).
        sensitivity_recalibration: training examples on which BatchNorm statistics are re-estimated before
            every sensitivity evaluation (adaptive BN, see :func:`prunekit.sensitivity.analyze`); 0: off.
        min_channels, max_ratio, round_to: limits per group (see AllocationConfig).
        max_deviation: strategy ``sensitivity``: no group's ratio strays more than this from the uniform
            allocation's (see AllocationConfig); null: unbounded.
        allocation_cost: what the sensitivity greedy ranks a step's loss rise against: ``budget`` (MACs or
            parameters saved) or ``latency`` (milliseconds saved, from a per-group latency table measured on
            this machine on the model as ``inference`` exports it; NetAdapt, Yang et al. 2018).
        latency_table_batch, latency_table_repeats: batch size and timed rounds of that table.
        latency_passes: ``allocation_cost: latency`` only: 1 ranks by the table of the dense model; k > 1
            re-measures the table around the allocation and allocates again, k − 1 times (AllocationConfig).
        latency_table: path of a table measured earlier (the ``latency_table.json`` every run with
            ``allocation_cost: latency`` writes, or its ``report.json``), used instead of measuring one:
            measure once while the machine is quiet, then every run ranks by the same timings. It must come
            from this model with the same limits and export, at ``latency_table_batch``.
        allocation_latency_weight: ``allocation_cost: latency`` only: null ranks a step by its loss rise per
            millisecond saved; a number μ ≥ 0 ranks it by (loss rise − μ · ms saved / dense ms) per MAC
            saved (AllocationConfig.latency_weight).
        reduction, normalize: how member scores combine (see ImportanceConfig).
        exclude: module names whose parameters must not change.
    """

    criterion: str = "taylor"
    strategy: str = "sensitivity"
    target: dict[str, float] = field(default_factory=lambda: {"macs_kept": 0.5})
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
    allocation_latency_weight: float | None = None
    latency_table: str | None = None
    latency_passes: int = 1

    def __post_init__(self) -> None:
        get(self.criterion, "group")
        if self.strategy not in STRATEGY_NAMES:
            raise ConfigError(f"unknown allocation strategy {self.strategy!r}; choose one of: "
                              f"{', '.join(STRATEGY_NAMES)}")
        if self.allocation_cost not in COST_NAMES:
            raise ConfigError(f"unknown allocation_cost {self.allocation_cost!r}; choose one of: "
                              f"{', '.join(COST_NAMES)} (budget: rank steps by the budget's own metric saved, MACs "
                              f"or params)")
        self.budget()
        self.importance()
        self.allocation()
        if self.latency_table is not None:
            if self.allocation_cost != "latency":
                raise ConfigError(f"latency_table is read by allocation_cost: latency only (here "
                                  f"{self.allocation_cost!r}): set allocation_cost: latency or remove latency_table")
            self.saved_latency_table().check_covers({}, self.latency_table_batch)
        SensitivityConfig(tuple(self.sensitivity_ratios), max(self.sensitivity_samples, 1))
        if self.sensitivity_recalibration < 0:
            raise ConfigError(f"sensitivity_recalibration must be ≥ 0 training examples (0: off), got "
                              f"{self.sensitivity_recalibration}")
        if get(self.criterion).needs_data and self.calibration_samples < 1:
            raise ConfigError(f"criterion {self.criterion!r} needs calibration data "
                              f"({', '.join(sorted(get(self.criterion).needs))}): set "
                              f"calibration_samples ≥ 1, or choose l1, l2, fpgm, bn_scale or random")

    def budget(self) -> Budget:
        t = dict(self.target)
        if "batch" in t:
            t["batch"] = int(t["batch"])
        return Budget.from_dict(t)

    def saved_latency_table(self) -> LatencyTable | None:
        return None if self.latency_table is None else load_latency_table(self.latency_table)

    def importance(self) -> ImportanceConfig:
        return ImportanceConfig(self.criterion, self.reduction, self.normalize)

    def allocation(self, seed: int = 0, export: InferenceConfig | None = None) -> AllocationConfig:
        return AllocationConfig(self.strategy, self.min_channels, self.max_ratio, self.round_to, seed=seed,
                                cost=self.allocation_cost, latency_batch=self.latency_table_batch,
                                latency_repeats=self.latency_table_repeats, latency_export=export,
                                max_deviation=self.max_deviation, latency_weight=self.allocation_latency_weight,
                                latency_passes=self.latency_passes)


@dataclass(frozen=True)
class StructuredRecipe:
    """A structured-pruning job; ``finetune`` usually uses a 10× lower LR than ``train``.

    ``recovery`` says what the fine-tuning minimises (``distill``: the dense model is the teacher);
    ``inference`` how both the dense and the pruned model are exported before their latency is measured.
    """

    model: ModelSpec
    data: DataSpec
    structured: StructuredSpec
    version: int = RECIPE_VERSION
    name: str = "structured"
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, lr=0.005))
    measure: MeasureSpec = field(default_factory=MeasureSpec)
    recovery: RecoveryConfig = field(default_factory=RecoveryConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)

    def __post_init__(self) -> None:
        if self.recovery.method == "distill" and not self.train.epochs and self.model.checkpoint is None:
            raise ConfigError("recovery.method 'distill' needs a trained teacher, but the dense model is neither "
                              "trained (train.epochs: 0) nor loaded (model.checkpoint); use recovery.method: finetune")
        if self.version != RECIPE_VERSION:
            raise ConfigError(f"version {self.version} is not supported; this prunekit reads version "
                              f"{RECIPE_VERSION}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def parse_structured_recipe(raw: Any, source: str = "recipe") -> StructuredRecipe:
    return parse_recipe(raw, source, StructuredRecipe)


def load_any_recipe(path: str | Path) -> Recipe | StructuredRecipe:
    """Reads a recipe file of either kind: a top-level ``structured:`` key makes it structured."""
    raw = read_yaml(path)
    if isinstance(raw, dict) and "structured" in raw:
        return parse_structured_recipe(raw, Path(path).name)
    return parse_recipe(raw, Path(path).name)


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def _prune(recipe: StructuredRecipe, model, data, quiet: bool) -> tuple[Any, dict]:
    s = recipe.structured
    cal = None
    if s.calibration_samples and get(s.criterion).needs_data:
        cal = Calibration.from_data(data.x_train, data.y_train, s.calibration_samples, recipe.seed)
    sens = None
    x_val, y_val = data.x_val[: s.sensitivity_samples], data.y_val[: s.sensitivity_samples]
    if s.strategy == "sensitivity":
        from prunekit.graph import DependencyGraph

        graph = DependencyGraph.build(model, data.x_train[:1], exclude=tuple(s.exclude))
        scores = score_groups(graph, s.importance(), cal)
        recal = None
        if s.sensitivity_recalibration:
            recal = Calibration.from_data(data.x_train, None, s.sensitivity_recalibration, recipe.seed).x
        sens = analyze(graph, data.x_val, data.y_val, scores,
                       SensitivityConfig(tuple(s.sensitivity_ratios), s.sensitivity_samples, recipe.seed), s.criterion,
                       recal)
        _log(f"sensitivity of {len(sens.curves)} groups measured at {len(s.sensitivity_ratios)} ratios", quiet)
    inf = recipe.inference
    export = inf if inf.fold_bn or inf.channels_last else None  # the table times what the report times
    res = prune_to_budget(model, data.x_train[:4], s.budget(), s.allocation(recipe.seed, export), s.importance(), cal,
                          sens, (x_val, y_val), tuple(s.exclude), recipe.measure.latency_repeats,
                          latency_table=s.saved_latency_table())
    return sens, res.to_dict()


def run_structured_recipe(recipe: StructuredRecipe, out: str | Path, force: bool = False, progress: bool = True,
                          quiet: bool = False) -> dict:
    """Carries out ``recipe``; writes report.json, report.md, sensitivity.json, recipe.yaml and the pruned
    model (``model/spec.json`` + ``model/weights.safetensors``, loaded back with
    :func:`prunekit.structured.load_pruned` given the original model) to ``out``."""
    check_output_dir(out, force)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = load_dataset(recipe.data.name, **recipe.data.options)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model.name, data.input_shape, data.num_classes, recipe.model.kwargs,
                        recipe.model.checkpoint).to(default_device())
    if recipe.train.epochs:
        _log(f"training {recipe.model.name} on {recipe.data.name} for {recipe.train.epochs} epochs", quiet)
        train(model, data, recipe.train, seed=recipe.seed, progress=progress, desc="dense")
    timings["train"] = time.perf_counter() - t
    dense = _measure(recipe, model, data)
    _log(f"dense: test accuracy {dense['accuracy']:.2%}, {dense['macs']:,} MACs", quiet)
    reference = copy.deepcopy(model).eval()  # the distillation teacher, and timed beside the pruned model
    teacher = reference if recipe.recovery.method == "distill" else None
    t = time.perf_counter()
    sens, pruning = _prune(recipe, model, data, quiet)
    timings["score_allocate_prune"] = time.perf_counter() - t
    after_prune = evaluate(model, data.x_test, data.y_test).accuracy
    t = time.perf_counter()
    hist = recover(model, data, recipe.finetune, recipe.recovery, teacher, seed=recipe.seed, progress=progress)
    del teacher
    timings["finetune"] = time.perf_counter() - t
    pruned = _measure(recipe, model, data)
    _time_side_by_side(recipe, reference, model, data, dense, pruned)
    del reference
    report = _report(recipe, dense, pruned, pruning, after_prune, hist, timings)
    with staged_output(out, force) as stage:
        atomic_write_text(stage / "report.json", json.dumps(report, indent=2))
        atomic_write_text(stage / "report.md", _markdown(report))
        atomic_write_text(stage / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        if sens is not None:
            atomic_write_text(stage / "sensitivity.json", json.dumps(sens.to_dict(), indent=2))
        if (table := pruning["allocation"].get("latency_table")) is not None:  # for structured.latency_table
            atomic_write_text(stage / "latency_table.json", json.dumps(table, indent=2))
        save_pruned(model, stage / "model")
    _log(f"pruned: {report['macs_reduction']:.2f}× fewer MACs, {report['speedup'].get('256', 0) or 0:.2f}× faster "
         f"at batch 256, test accuracy {pruned['accuracy']:.2%} ({-report['accuracy_drop_pt']:+.2f} pt); "
         f"report in {out}", quiet)
    return report


def _measure(recipe: StructuredRecipe, model, data) -> dict:
    """Every figure but latency, which :func:`_time_side_by_side` measures for both models at the end."""
    return measure_model(model.eval(), data.x_test, data.y_test, latency_batches=[])


def _time_side_by_side(recipe: StructuredRecipe, dense_model, pruned_model, data, dense: dict, pruned: dict) -> None:
    """Latency of the dense and the pruned model (as exported by ``inference``), timed alternately run by
    run so machine load hits both alike; fills ``latency_ms`` and ``latency`` of ``dense`` and ``pruned``."""
    m, inf = recipe.measure, recipe.inference
    export = inf.fold_bn or inf.channels_last
    pair = [prepare_inference(x, inf) if export else x.eval() for x in (dense_model, pruned_model)]
    time_side_by_side(pair, [dense, pruned], data.x_test[:1], m.latency_batches, m.latency_repeats,
                      inf.memory_format)


def _report(recipe, dense, pruned, pruning, after_prune, hist, timings) -> dict:
    drop = lambda d: {k: v for k, v in d.items() if k not in ("layer_sparsity",)}
    return {
        "format_version": 1, "prunekit_version": __version__, "kind": "structured", "name": recipe.name,
        "model": recipe.model.name, "dataset": recipe.data.name, "seed": recipe.seed,
        "structured": to_dict(recipe.structured), "recovery": recipe.recovery.method,
        "inference": to_dict(recipe.inference), "dense": drop(dense), "pruned": drop(pruned),
        "sparsity": 1.0 - pruned["params"] / dense["params"],
        "compression": dense["params"] / pruned["params"],
        "macs_reduction": dense["macs"] / pruned["macs"],
        "speedup": {b: dense["latency_ms"][b] / pruned["latency_ms"][b] for b in dense["latency_ms"]},
        "accuracy_drop_pt": 100 * (dense["accuracy"] - pruned["accuracy"]),
        "accuracy_after_pruning": after_prune,
        "steps": [{"step": i + 1, "phase": "finetune", "val_accuracy": a, "train_loss": loss}
                  for i, (a, loss) in enumerate(zip(hist.val_accuracy, hist.epoch_loss, strict=True))],
        "allocation": pruning, "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }


def _cost_note(r: dict) -> str:
    s = r["structured"]
    if s.get("allocation_cost", "budget") != "latency":
        return ""
    mu = s.get("allocation_latency_weight")
    how = "measured latency saved" if mu is None else f"loss rise − {mu:g}·latency saved (fraction) per MAC saved"
    passes = s.get("latency_passes", 1)
    again = f", the table re-measured around the allocation {passes - 1}×" if passes > 1 else ""
    return f" (steps ranked by {how} at batch {s['latency_table_batch']}{again})"


def _markdown(r: dict) -> str:
    d, p = r["dense"], r["pruned"]
    lines = [f"# {r['name']}: {r['model']} on {r['dataset']} (seed {r['seed']})", "",
             f"Criterion `{r['structured']['criterion']}`, strategy `{r['structured']['strategy']}`, target "
             f"`{r['structured']['target']}`{_cost_note(r)}, recovery `{r.get('recovery', 'finetune')}`. Latency of "
             f"both models as exported for inference: {InferenceConfig(**r.get('inference', {})).describe()}; the two "
             "timed alternately, run by run, after fine-tuning (medians).", "",
             "| | dense | pruned |", "|---|---|---|",
             f"| test accuracy | {d['accuracy']:.2%} | {p['accuracy']:.2%} |",
             f"| parameters | {d['params']:,} | {p['params']:,} |", f"| MACs | {d['macs']:,} | {p['macs']:,} |",
             f"| size (bytes) | {d['size_bytes']:,} | {p['size_bytes']:,} |"]
    for b in d["latency_ms"]:
        lines.append(f"| latency, batch {b} (ms) | {d['latency_ms'][b]:.2f} | {p['latency_ms'][b]:.2f} "
                     f"({r['speedup'][b]:.2f}×) |")
    lines += ["", f"{r['macs_reduction']:.2f}× fewer MACs, {r['compression']:.2f}× fewer parameters, accuracy "
              f"{-r['accuracy_drop_pt']:+.2f} pt ({r['accuracy_after_pruning']:.2%} before fine-tuning).", "",
              "Per-group ratios removed: " + ", ".join(f"{k} {v:.0%}" for k, v in
                                                      r["allocation"]["allocation"]["ratios"].items()), ""]
    return "\n".join(lines)
