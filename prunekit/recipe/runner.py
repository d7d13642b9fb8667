"""Runs a recipe: train dense → measure → prune on a schedule with fine-tuning → measure → report.

The output directory (written whole or not at all) holds ``report.json``, ``report.md`` with PNG
plots, the pruned model (``model.safetensors`` + ``model.json``) and ``recipe.yaml`` as run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import yaml

from prunekit._version import __version__
from prunekit.data import load_dataset
from prunekit.io.checkpoint import atomic_write_text, save_state_dict
from prunekit.io.outdir import check_output_dir, staged_output
from prunekit.measure.summary import measure_model
from prunekit.models import build_model
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner
from prunekit.pruners.pipeline import ScheduleSpec, run_schedule
from prunekit.recipe.schema import Recipe
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
    timings["load"] = time.perf_counter() - t

    t = time.perf_counter()
    if recipe.train.epochs:
        _log(f"training {recipe.model.name} on {recipe.data.name} for {recipe.train.epochs} epochs", quiet)
        train(model, data, recipe.train, seed=recipe.seed, progress=progress, desc="dense")
    timings["train"] = time.perf_counter() - t
    m = recipe.measure
    dense = measure_model(model, data.x_test, data.y_test, m.latency_batches, m.latency_repeats)
    _log(f"dense: test accuracy {dense['accuracy']:.2%}, {dense['params']:,} parameters", quiet)

    t = time.perf_counter()
    p = recipe.prune
    pruner = UnstructuredPruner(model, UnstructuredConfig(
        criterion=p.criterion, scope=p.scope, ratios=p.ratios, threshold=p.threshold,
        exclude=tuple(p.exclude), include_bias=p.include_bias, seed=recipe.seed))
    spec = ScheduleSpec(p.target, p.schedule, p.steps, p.gradual_start, p.gradual_end)
    _log(f"pruning to {p.target:.0%} sparsity ({p.schedule}, {p.criterion}, {p.scope})", quiet)
    steps = run_schedule(model, data, pruner, spec, recipe.finetune, recipe.seed, progress)
    for r in steps:
        _log(f"  step {r['step']}: sparsity {r['sparsity']:.2%}, val accuracy {r['val_accuracy']:.2%}",
             quiet)
    sparsity = pruner.sparsity()
    pruner.make_permanent()
    timings["prune_and_finetune"] = time.perf_counter() - t
    pruned = measure_model(model, data.x_test, data.y_test, m.latency_batches, m.latency_repeats)

    report = {
        "format_version": 1,
        "prunekit_version": __version__,
        "name": recipe.name,
        "model": recipe.model.name,
        "dataset": recipe.data.name,
        "seed": recipe.seed,
        "prune": {"criterion": p.criterion, "scope": p.scope, "schedule": p.schedule,
                  "target": p.target, "steps": p.steps},
        "measure": {"latency_repeats": m.latency_repeats},
        "dense": dense,
        "pruned": pruned,
        "sparsity": sparsity,
        "compression": pruned["params"] / max(pruned["nonzero_params"], 1),
        "accuracy_drop_pt": 100 * (dense["accuracy"] - pruned["accuracy"]),
        "steps": steps,
        "layer_shapes": {n: list(p_.shape) for n, p_ in model.named_parameters() if p_.dim() >= 2},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    _write_outputs(recipe, model, data, report, out, force)
    _log(f"pruned: sparsity {sparsity:.2%}, compression {report['compression']:.1f}×, test accuracy "
         f"{pruned['accuracy']:.2%} ({-report['accuracy_drop_pt']:+.2f} pt); report in {out}", quiet)
    return report


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
        atomic_write_text(stage / "report.md", render_markdown(report, plots))


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
