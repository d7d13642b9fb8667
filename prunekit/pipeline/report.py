"""report.json and report.md, one reporter per kind of method (``masks``: weights zeroed; ``structured``: units
removed; ``dynamic``: a recipe with a ``dynamic`` section, input-dependent), registered in :data:`REPORTERS`.

Every report holds the foundation fields: ``dense`` and ``pruned`` (each with ``accuracy`` as a fraction,
``params``, ``nonzero_params``, ``macs``, ``nonzero_macs``, ``size_bytes``, ``latency_ms`` keyed by batch size),
``sparsity`` (fraction removed), ``compression``, ``accuracy_drop_pt`` and ``steps``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from prunekit._version import __version__
from prunekit.pipeline.methods import PruneOutcome
from prunekit.pipeline.validate import to_dict
from prunekit.registry import Registry
from prunekit.report import (
    have_matplotlib,
    plot_accuracy_cost,
    plot_layer_sparsity,
    plot_trajectory,
    render_markdown,
    render_masks_extra,
    render_structured_markdown,
)

__all__ = ["REPORTERS", "Reporter", "REPORT_FORMAT_VERSION", "report_kind"]

REPORT_FORMAT_VERSION = 2


@dataclass(frozen=True)
class Reporter:
    build: Callable[..., dict]
    markdown: Callable[[dict, Path], str]
    summary: Callable[[dict], str]


#: Reporters by method kind (``masks``, ``structured``), ``dynamic`` and ``text`` (every text model).
REPORTERS: Registry = Registry("method kind")


def report_kind(recipe) -> str:
    """The reporter of a recipe: ``dynamic`` with a dynamic section, ``text`` for a text model (whatever its
    method), else the method's kind."""
    if getattr(recipe, "dynamic", None) is not None:
        return "dynamic"
    return "text" if getattr(recipe, "text", None) is not None else recipe.prune.spec.kind


def _common(recipe, dense: dict, pruned: dict, outcome: PruneOutcome, extra: dict) -> dict:
    rec = recipe.recover
    return {
        "format_version": REPORT_FORMAT_VERSION, "prunekit_version": __version__, "name": recipe.name,
        "model": recipe.model.name, "dataset": recipe.data.name, "seed": recipe.seed,
        "method": recipe.prune.method, "kind": recipe.prune.spec.kind, "prune": to_dict(recipe.prune),
        "recovery": rec.method if rec is not None else None,
        "recover": to_dict(rec) if rec is not None else None,
        "measure": {"latency_repeats": recipe.measure.latency_repeats,
                    "inference": to_dict(recipe.measure.inference)},
        "dense": dense, "pruned": pruned,
        "accuracy_drop_pt": 100 * (dense["accuracy"] - pruned["accuracy"]),
        **extra,
    }


def _masks_build(recipe, dense: dict, pruned: dict, outcome: PruneOutcome, history: Any, extra: dict,
                 model: nn.Module) -> dict:
    report = _common(recipe, dense, pruned, outcome, {})
    report.update({
        "sparsity": outcome.sparsity,
        "compression": pruned["params"] / max(pruned["nonzero_params"], 1),
        "steps": outcome.steps,
        "layer_shapes": {n: list(p.shape) for n, p in model.named_parameters() if p.dim() >= 2},
    })
    report.update(outcome.report)
    report.update(extra)
    return report


def _masks_markdown(report: dict, directory: Path) -> str:
    plots = {}
    if have_matplotlib():
        plot_trajectory(report["steps"], report["dense"]["accuracy"], directory / "accuracy_vs_sparsity.png")
        plot_layer_sparsity(report["pruned"]["layer_sparsity"], directory / "layer_sparsity.png")
        plots = {"Accuracy vs sparsity": "accuracy_vs_sparsity.png", "Per-layer sparsity": "layer_sparsity.png"}
    return render_markdown(report, plots) + render_masks_extra(report)


def _masks_summary(r: dict) -> str:
    line = (f"pruned: sparsity {r['sparsity']:.2%}, compression {r['compression']:.1f}×, test accuracy "
            f"{r['pruned']['accuracy']:.2%} ({-r['accuracy_drop_pt']:+.2f} pt)")
    if "control" in r:
        line += f"\ncontrol (same mask, random re-init): test accuracy {r['control']['accuracy']:.2%}"
        if r["control"].get("warning"):
            line += f"\nwarning: {r['control']['warning']}"
    return line


def _structured_build(recipe, dense: dict, pruned: dict, outcome: PruneOutcome, history: Any, extra: dict,
                      model: nn.Module) -> dict:
    drop = lambda d: {k: v for k, v in d.items() if k != "layer_sparsity"}  # noqa: E731
    report = _common(recipe, drop(dense), drop(pruned), outcome, {})
    steps = []
    if history is not None:
        steps = [{"step": i + 1, "phase": "finetune", "val_accuracy": a, "train_loss": loss}
                 for i, (a, loss) in enumerate(zip(history.val_accuracy, history.epoch_loss, strict=True))]
    report.update({
        "sparsity": 1.0 - pruned["params"] / dense["params"],
        "compression": dense["params"] / pruned["params"],
        "macs_reduction": dense["macs"] / pruned["macs"],
        "speedup": {b: dense["latency_ms"][b] / pruned["latency_ms"][b] for b in dense["latency_ms"]},
        "accuracy_after_pruning": outcome.accuracy_after_pruning,
        "steps": steps,
    })
    report.update(outcome.report)
    report.update(extra)
    return report


def _structured_summary(r: dict) -> str:
    fast = "".join(f", {v:.2f}× faster at batch {b}" for b, v in r["speedup"].items() if int(b) > 1)
    return (f"pruned: {r['macs_reduction']:.2f}× fewer MACs{fast}, test accuracy {r['pruned']['accuracy']:.2%} "
            f"({-r['accuracy_drop_pt']:+.2f} pt)")


REPORTERS.register("masks")(Reporter(_masks_build, _masks_markdown, _masks_summary))
REPORTERS.register("structured")(Reporter(_structured_build, lambda r, _d: render_structured_markdown(r),
                                          _structured_summary))


def _dynamic_build(recipe, dense: dict, pruned: dict, outcome: PruneOutcome, history: Any, extra: dict,
                   model: nn.Module) -> dict:
    """``pruned`` is the dynamic model (mean MACs on the path taken, batch-1 latency as the mean over the test
    split); ``dynamic`` holds what it did per input (exit histogram, tokens or channels kept)."""
    drop = lambda d: {k: v for k, v in d.items() if k != "layer_sparsity"}  # noqa: E731
    report = _common(recipe, drop(dense), drop(pruned), outcome, {})
    report.update({
        "sparsity": 1.0 - pruned["params"] / dense["params"],
        "compression": dense["params"] / pruned["params"],
        "macs_reduction": dense["macs"] / pruned["macs"],
        "speedup": {b: dense["latency_ms"][b] / pruned["latency_ms"][b] for b in pruned["latency_ms"]},
        "steps": outcome.steps,
        "dynamic_method": recipe.dynamic.method,
    })
    report.update(outcome.report)
    report.update(extra)
    return report


def _dynamic_markdown(r: dict, directory: Path) -> str:
    d, p, dyn = r["dense"], r["pruned"], r["dynamic"]
    lines = [f"# {r['name']}: {r['model']} on {r['dataset']} (seed {r['seed']}), dynamic `{r['dynamic_method']}`",
             "", f"Static pruning `{r['method']}`, then `{r['dynamic_method']}`. MACs of the dynamic model: the mean "
             "per test input on the path it took. Batch-1 latency: mean CPU time per input over every test input, "
             "dense and dynamic alternated input by input; larger batches: mean CPU time per batch over the split, "
             f"served as: {dyn.get('serving_policy', 'one pass')}.", "",
             "| | dense | dynamic |", "|---|---|---|",
             f"| test accuracy | {d['accuracy']:.2%} | {p['accuracy']:.2%} |",
             f"| parameters | {d['params']:,} | {p['params']:,} |",
             f"| MACs (mean per input) | {d['macs']:,} | {p['macs']:,} |"]
    for b in p["latency_ms"]:
        lines.append(f"| latency, batch {b} (ms) | {d['latency_ms'][b]:.3f} | {p['latency_ms'][b]:.3f} "
                     f"({r['speedup'][b]:.2f}×) |")
    if "exit_histogram" in dyn:
        lines += ["", "| exit | inputs | accuracy of those inputs | MACs on the path |", "|---|---|---|---|"]
        for name, n, acc, macs in zip(dyn["exit_names"], dyn["exit_histogram"], dyn["accuracy_by_exit"],
                                      dyn["path_macs"], strict=True):
            lines.append(f"| {name} | {n} | {'–' if acc is None else f'{acc:.2%}'} | {macs:,} |")
        lines += ["", f"Thresholds ({dyn['confidence']}): {', '.join(f'{t:g}' for t in dyn['thresholds'])}."]
        if have_matplotlib():
            plot_accuracy_cost(dyn["test_curve"], p, {"macs": d["macs"], "accuracy": d["accuracy"]},
                               directory / "accuracy_vs_cost.png")
            lines += ["", "![Accuracy vs cost](accuracy_vs_cost.png)"]
    lines += ["", f"Accuracy {-r['accuracy_drop_pt']:+.2f} pt, {r['macs_reduction']:.2f}× fewer MACs per input on "
              f"average, {r['speedup']['1']:.2f}× faster at batch 1.", ""]
    return "\n".join(lines)


def _dynamic_summary(r: dict) -> str:
    return (f"dynamic ({r['dynamic_method']}): {r['macs_reduction']:.2f}× fewer MACs per input on average, "
            f"{r['speedup']['1']:.2f}× faster at batch 1, test accuracy {r['pruned']['accuracy']:.2%} "
            f"({-r['accuracy_drop_pt']:+.2f} pt)")


REPORTERS.register("dynamic")(Reporter(_dynamic_build, _dynamic_markdown, _dynamic_summary))


# ---------------------------------------------------------------------------------------------------- text models
def _text_build(recipe, dense: dict, pruned: dict, outcome: PruneOutcome, history: Any, extra: dict,
                model: nn.Module) -> dict:
    """Text models: the foundation fields (``accuracy`` is ``None`` for an embedding model) beside the text metrics
    (``spearman`` and ``cosine_to_dense`` by dataset), the encoder's layers, and speed-ups by wall and CPU time."""
    acc_d, acc_p = dense.get("accuracy"), pruned.get("accuracy")
    report = {
        "format_version": REPORT_FORMAT_VERSION, "prunekit_version": __version__, "name": recipe.name,
        "model": recipe.model.name, "dataset": recipe.data.name, "seed": recipe.seed,
        "method": recipe.prune.method, "kind": recipe.prune.spec.kind, "prune": to_dict(recipe.prune),
        "recovery": recipe.recover.method if recipe.recover is not None else None,
        "recover": to_dict(recipe.recover) if recipe.recover is not None else None,
        "text": to_dict(recipe.text),
        "measure": {"latency_repeats": recipe.measure.latency_repeats, "sequence": pruned.get("sequence")},
        "dense": dense, "pruned": pruned,
        "accuracy_drop_pt": None if acc_d is None or acc_p is None else 100 * (acc_d - acc_p),
        "spearman_drop": {k: dense["spearman"][k] - v for k, v in pruned.get("spearman", {}).items()},
        "sparsity": 1.0 - pruned["nonzero_params"] / dense["params"],
        "encoder_sparsity": 1.0 - pruned["encoder_nonzero_params"] / dense["encoder_params"],
        "compression": dense["params"] / pruned["params"],
        "macs_reduction": dense["macs"] / pruned["macs"],
        "speedup": {b: dense["latency_ms"][b] / pruned["latency_ms"][b] for b in dense["latency_ms"]},
        "speedup_cpu": {b: dense["latency_cpu_ms"][b] / pruned["latency_cpu_ms"][b] for b in dense["latency_cpu_ms"]},
        "steps": [] if history is None else [
            {"step": i + 1, "phase": "recover", "train_loss": loss,
             **({"val_accuracy": history.val_accuracy[i]} if i < len(history.val_accuracy) else {})}
            for i, loss in enumerate(history.epoch_loss)],
    }
    report.update(outcome.report)
    report.update(extra)
    return report


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:.2%}" if pct else (f"{v:,}" if isinstance(v, int) else f"{v:.4f}")


def _text_markdown(r: dict, _directory: Path) -> str:
    d, p = r["dense"], r["pruned"]
    rows = [("test accuracy", _fmt(d["accuracy"], True), _fmt(p["accuracy"], True))]
    rows += [(f"Spearman ({k})", _fmt(v), _fmt(p["spearman"].get(k))) for k, v in d["spearman"].items()]
    rows += [(f"cosine to dense ({k})", "1", _fmt(v)) for k, v in p["cosine_to_dense"].items()]
    rows += [("parameters", _fmt(d["params"]), _fmt(p["params"])),
             (f"MACs ({p['sequence']} tokens)", _fmt(d["macs"]), _fmt(p["macs"]))]
    rows += [(f"latency batch {b} (ms wall / CPU)", f"{d['latency_ms'][b]:.2f} / {d['latency_cpu_ms'][b]:.2f}",
              f"{p['latency_ms'][b]:.2f} / {p['latency_cpu_ms'][b]:.2f}") for b in d["latency_ms"]]
    lines = [f"# {r['name']}: {r['model']} on {r['dataset']}", "",
             f"Method `{r['method']}` ({r['prune']}), recovery {r['recovery']}; seed {r['seed']}.", "",
             "| | dense | pruned |", "|---|---|---|", *[f"| {a} | {b} | {c} |" for a, b, c in rows], "",
             "Speed-up (CPU time): " + ", ".join(f"{v:.2f}× at batch {b}" for b, v in r["speedup_cpu"].items())
             + f"; {r['macs_reduction']:.2f}× fewer MACs.", "",
             "| layer | heads | FFN |", "|---|---|---|",
             *[f"| {x['layer']} | {x['heads']} | {x.get('ffn', '–')} |" for x in p["layers"]], ""]
    return "\n".join(lines)


def _text_summary(r: dict) -> str:
    parts = []
    if r["pruned"]["accuracy"] is not None:
        parts.append(f"test accuracy {r['pruned']['accuracy']:.2%} ({-r['accuracy_drop_pt']:+.2f} pt)")
    parts += [f"{k} Spearman {v:.4f} ({-r['spearman_drop'][k]:+.4f})" for k, v in r["pruned"]["spearman"].items()]
    fast = ", ".join(f"{v:.2f}× faster at batch {b}" for b, v in r["speedup_cpu"].items())
    return f"pruned: {r['macs_reduction']:.2f}× fewer MACs, {fast} (CPU time), " + ", ".join(parts)


REPORTERS.register("text")(Reporter(_text_build, _text_markdown, _text_summary))
