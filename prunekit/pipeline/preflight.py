"""Checks made on the built, untrained model before any training: settings that would otherwise fail only at
the stage that reads them, after the whole run (and its results) — ``ratios`` patterns that match no prunable
layer, structured ``exclude`` names that are no module, latency batch sizes that cannot fit in memory.
"""

from __future__ import annotations

import contextlib
import fnmatch
from typing import Any

import torch
from torch import nn

from prunekit.errors import ConfigError, RecipeError

__all__ = ["preflight", "available_memory", "activation_bytes_per_sample"]

#: The share of the free memory a latency batch's activations may take.
MEMORY_SHARE = 0.8


def preflight(recipe: Any, built: Any) -> None:
    """Raises RecipeError naming the key, the value and the fix for what would fail later in the run."""
    _check_ratios(recipe, built.plan)
    _check_exclude(recipe, built.model)
    text = built.plan.state.get("text")  # a text model is timed on token ids (prunekit.pipeline.text)
    _check_latency_batches(recipe, built.model, text.example if text is not None else built.data.x_test[:1])


def _check_ratios(recipe: Any, plan: Any) -> None:
    ratios = getattr(recipe.prune.options, "ratios", None)
    pruner = getattr(plan, "pruner", None)
    if not ratios or pruner is None or not hasattr(pruner, "names"):
        return
    for pattern in ratios:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in pruner.names):
            raise RecipeError(f"recipe.prune.ratios: pattern {pattern!r} matches no prunable layer; prunable layers: "
                              f"{', '.join(pruner.names)}")


def _check_exclude(recipe: Any, model: nn.Module) -> None:
    if recipe.prune.spec.kind != "structured":
        return  # mask methods check their exclude patterns when they build the pruner (in prepare)
    modules = {n for n, _ in model.named_modules()}
    for name in getattr(recipe.prune.options, "exclude", ()):
        if name not in modules:
            close = [n for n in modules if n and name.split(".")[-1] in n][:5]
            raise RecipeError(f"recipe.prune.exclude: the model has no module named {name!r}"
                              + (f"; did you mean one of {close}?" if close else "; names are dotted module paths "
                                 "as in model.named_modules()"))


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: CUDA's free memory, or the OS's MemAvailable; None where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    with contextlib.suppress(OSError, ValueError):
        for line in open("/proc/meminfo").read().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


@torch.no_grad()
def activation_bytes_per_sample(model: nn.Module, example: torch.Tensor) -> int:
    """An upper bound of the memory one sample takes in inference: its input plus every module's output."""
    total = [example[:1].numel() * example.element_size()]

    def hook(_m, _i, out):
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel() * t.element_size()

    was = model.training
    model.eval()
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        model(example[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return total[0]


def _check_latency_batches(recipe: Any, model: nn.Module, example: torch.Tensor) -> None:
    batches = recipe.measure.latency_batches
    device = next(model.parameters()).device
    free = available_memory(device)
    if free is None or not batches:
        return
    per_sample = activation_bytes_per_sample(model, example[:1].to(device))
    need = max(batches) * per_sample * 2  # the dense and the pruned model are timed side by side
    if need > MEMORY_SHARE * free:
        fits = max(1, int(MEMORY_SHARE * free / (2 * per_sample)))
        raise RecipeError(f"recipe.measure.latency_batches: batch {max(batches)} needs about {need / 2**30:.1f} GiB "
                          f"for activations ({per_sample / 2**20:.2f} MiB per sample, two models), but "
                          f"{free / 2**30:.1f} GiB of {device.type} memory is free; use batch sizes ≤ {fits}")
    if any(not isinstance(b, int) for b in batches):
        raise ConfigError(f"latency_batches must be whole numbers, got {batches}")
