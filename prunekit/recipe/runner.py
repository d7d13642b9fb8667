"""Runs a recipe: train dense → measure → prune on a schedule with recovery → measure → report.

The output directory (written whole or not at all) holds ``report.json``, ``report.md`` with PNG
plots, the pruned model (``model.safetensors`` + ``model.json``) and ``recipe.yaml`` as run.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch
import yaml

from prunekit._version import __version__
from prunekit.data import load_dataset
from prunekit.errors import ConfigError
from prunekit.importance import Calibration
from prunekit.io.checkpoint import atomic_write_text, save_state_dict
from prunekit.io.outdir import check_output_dir, staged_output
from prunekit.measure.summary import measure_model, time_side_by_side
from prunekit.models import build_model
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner
from prunekit.pruners.allocations import allocation_name
from prunekit.pruners.channels import structural_macs
from prunekit.pruners.lottery import WeightSnapshot, capture_at_step
from prunekit.pruners.regularizers import RegularizerConfig, regularized_loss
from prunekit.recipe.regimes import REGIMES, RegimeContext
from prunekit.recipe.schema import Recipe
from prunekit.recovery import recovery_loss
from prunekit.report import have_matplotlib, plot_layer_sparsity, plot_trajectory, render_markdown
from prunekit.training import default_device, train

__all__ = ["run_recipe", "load_pruned", "MODEL_FORMAT_VERSION"]

MODEL_FORMAT_VERSION = 1


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, flush=True)


def run_recipe(recipe: Recipe, out: str | Path, force: bool = False, progress: bool = True,
               quiet: bool = False) -> dict:
    """Carries out ``recipe`` and writes its results to ``out``; returns the report dict."""
    check_output_dir(out, force)  # fail before any training
    timings: dict[str, float] = {}
    t = time.perf_counter()
    data = load_dataset(recipe.data.name, **recipe.data.options)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe.model.name, data.input_shape, data.num_classes, recipe.model.kwargs,
                        recipe.model.checkpoint).to(default_device())
    p = recipe.prune
    pruner = UnstructuredPruner(model, UnstructuredConfig(  # built now: bad layers fail before training
        importance=p.criterion, allocation=allocation_name(p.scope), ratios=p.ratios, threshold=p.threshold,
        exclude=tuple(p.exclude), include_bias=p.include_bias, seed=recipe.seed,
        granularity=p.granularity, nm=tuple(p.nm)))
    needs = pruner.criterion.needs & {"data", "example_inputs"}
    if needs and not pruner.criterion.at_init:  # at_init brings its own batch
        cal = Calibration.from_data(data.x_train, data.y_train, p.calibration_samples, recipe.seed)
        pruner.calibration = (cal.x, cal.y)
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    snapshot = _train_dense(recipe, model, data, pruner, progress, quiet)
    timings["train"] = time.perf_counter() - t
    m = recipe.measure
    dense = measure_model(model, data.x_test, data.y_test, latency_batches=[])  # latency: side by side, below
    dense_model = copy.deepcopy(model).eval()  # no masks yet: every schedule installs them after this point
    _log(f"dense: test accuracy {dense['accuracy']:.2%}, {dense['params']:,} parameters", quiet)

    t = time.perf_counter()
    teacher = dense_model if recipe.recovery.method == "distill" else None
    _log(f"pruning to {p.target:.0%} sparsity ({p.schedule}, {p.criterion}, {p.scope}, {p.granularity})", quiet)
    with recovery_loss(model, recipe.recovery, teacher) as loss_fn:
        ctx = RegimeContext(recipe, model, data, pruner, snapshot, _control_factory(recipe, data), loss_fn, progress)
        result = REGIMES.get(p.schedule)(ctx)
    for r in result.steps:
        _log(f"  step {r['step']}: sparsity {r['sparsity']:.2%}, val accuracy {r['val_accuracy']:.2%}",
             quiet)
    holder = result.pruner or result.masks
    sparsity = holder.sparsity() if result.pruner else holder.global_sparsity()
    holder.make_permanent()
    timings["prune_and_finetune"] = time.perf_counter() - t
    pruned = measure_model(model, data.x_test, data.y_test, latency_batches=[])
    time_side_by_side([dense_model, model], [dense, pruned], data.x_test[:1].to(default_device()),
                      m.latency_batches, m.latency_repeats)
    if p.remove_channels:
        result.extra["structural"] = structural_macs(model, data.x_test[:1].to(default_device()))
    report = _report(recipe, model, dense, pruned, sparsity, result, timings)
    _write_outputs(recipe, model, data, report, out, force)
    _log(f"pruned: sparsity {sparsity:.2%}, compression {report['compression']:.1f}×, test accuracy "
         f"{pruned['accuracy']:.2%} ({-report['accuracy_drop_pt']:+.2f} pt); report in {out}", quiet)
    if "control" in report:
        _log(f"control (same mask, random re-init): test accuracy {report['control']['accuracy']:.2%}", quiet)
    return report


def _control_factory(recipe: Recipe, data):
    """Builds a fresh, randomly initialised model (never the checkpoint): the lottery control."""
    return lambda: build_model(recipe.model.name, data.input_shape, data.num_classes, recipe.model.kwargs)


def _train_dense(recipe: Recipe, model, data, pruner, progress: bool, quiet: bool) -> WeightSnapshot | None:
    """Dense training (with the sparsity penalty if any); returns θ₀, or θ_k for lottery rewinding."""
    snapshot = WeightSnapshot.capture(model) if recipe.train.epochs else None
    lot = recipe.prune.lottery
    box: dict = {}
    on_step = None
    if recipe.prune.schedule == "lottery" and lot.rewind == "iteration":
        on_step = capture_at_step(lot.rewind_step, model, box)
    loss_fn = None
    if recipe.regularize.kind != "none":
        reg = RegularizerConfig(recipe.regularize.kind, recipe.regularize.strength)
        loss_fn = regularized_loss(model, reg, pruner.names)
    if recipe.train.epochs:
        _log(f"training {recipe.model.name} on {recipe.data.name} for {recipe.train.epochs} epochs", quiet)
        train(model, data, recipe.train, seed=recipe.seed, progress=progress, desc="dense", on_step=on_step,
              loss_fn=loss_fn)
    if on_step is not None:
        if "snapshot" not in box:
            raise ConfigError(f"prune.lottery.rewind_step {lot.rewind_step} is beyond the dense run; choose a "
                              "step within train.epochs × steps per epoch")
        snapshot = box["snapshot"]
    return snapshot


def _report(recipe: Recipe, model, dense: dict, pruned: dict, sparsity: float, result, timings) -> dict:
    p, m = recipe.prune, recipe.measure
    report = {
        "format_version": 1,
        "prunekit_version": __version__,
        "name": recipe.name,
        "model": recipe.model.name,
        "dataset": recipe.data.name,
        "seed": recipe.seed,
        "prune": {"criterion": p.criterion, "scope": p.scope, "schedule": p.schedule,
                  "target": p.target, "steps": p.steps, "granularity": p.granularity},
        "recovery": recipe.recovery.method,
        "regularize": {"kind": recipe.regularize.kind, "strength": recipe.regularize.strength},
        "measure": {"latency_repeats": m.latency_repeats},
        "dense": dense,
        "pruned": pruned,
        "sparsity": sparsity,
        "compression": pruned["params"] / max(pruned["nonzero_params"], 1),
        "accuracy_drop_pt": 100 * (dense["accuracy"] - pruned["accuracy"]),
        "steps": result.steps,
        "layer_shapes": {n: list(p_.shape) for n, p_ in model.named_parameters() if p_.dim() >= 2},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    if p.granularity == "nm":
        report["prune"]["nm"] = list(p.nm)
    report.update(result.extra)
    return report


def _extra_markdown(report: dict) -> str:
    lines = []
    if "control" in report:
        c = report["control"]
        lines += ["", "## Lottery ticket vs control", "",
                  "| | test accuracy |", "|---|---|",
                  f"| dense | {report['dense']['accuracy']:.2%} |",
                  f"| ticket (rewound to {report['lottery']['rewind']}, retrained) | "
                  f"{report['pruned']['accuracy']:.2%} |",
                  f"| control (same mask, random re-initialisation, same training) | {c['accuracy']:.2%} |", ""]
    if "structural" in report:
        s = report["structural"]
        lines += ["", "## With dead channels removed", "",
                  f"MACs / sample {s['macs']:,} (dense {report['dense']['macs']:,}), parameters {s['params']:,}; "
                  f"units removed per group: {s['removed']}.", ""]
    return "\n".join(lines)


def _write_outputs(recipe: Recipe, model, data, report: dict, out, force: bool) -> None:
    with staged_output(out, force) as stage:
        plots = {}
        if have_matplotlib():
            plot_trajectory(report["steps"], report["dense"]["accuracy"], stage / "accuracy_vs_sparsity.png")
            plot_layer_sparsity(report["pruned"]["layer_sparsity"], stage / "layer_sparsity.png")
            plots = {"Accuracy vs sparsity": "accuracy_vs_sparsity.png",
                     "Per-layer sparsity": "layer_sparsity.png"}
        meta = {
            "format_version": MODEL_FORMAT_VERSION,
            "prunekit_version": __version__,
            "model": recipe.model.name,
            "model_kwargs": recipe.model.kwargs,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "sparsity": report["sparsity"],
        }
        save_state_dict(model.state_dict(), stage / "model.safetensors", meta)
        atomic_write_text(stage / "model.json", json.dumps(meta, indent=2))
        atomic_write_text(stage / "recipe.yaml", yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        atomic_write_text(stage / "report.json", json.dumps(report, indent=2))
        atomic_write_text(stage / "report.md", render_markdown(report, plots) + _extra_markdown(report))


def load_pruned(directory: str | Path) -> torch.nn.Module:
    """Rebuilds the model saved by :func:`run_recipe` in ``directory`` and loads its weights."""
    from prunekit.errors import ModelLoadError
    from prunekit.io.checkpoint import load_weights_into

    d = Path(directory)
    try:
        meta = json.loads((d / "model.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{d}: no readable model.json ({e})") from None
    if meta.get("format_version") != MODEL_FORMAT_VERSION:
        raise ModelLoadError(f"{d}/model.json: format_version {meta.get('format_version')!r} is not "
                             f"supported (expected {MODEL_FORMAT_VERSION})")
    model = build_model(meta["model"], tuple(meta["input_shape"]), meta["num_classes"],
                        meta.get("model_kwargs"))
    return load_weights_into(model, d / "model.safetensors")
