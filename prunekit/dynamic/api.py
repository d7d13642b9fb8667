"""The dynamic section of a recipe, and the two calls the pipeline makes: build, then measure.

Example (recipe)::

    dynamic:
      early_exit: {exits: [layers.0, layers.2], max_drop_pt: 0.5}

Exactly one method per recipe; it acts on the model the ``prune`` stage left (static pruning composes:
prune first, then add exits).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from prunekit.data import DataSplits
from prunekit.dynamic.base import DYNAMIC_METHODS, BuildContext
from prunekit.dynamic.early_exit import EarlyExitConfig
from prunekit.dynamic.gates import ChannelGateConfig
from prunekit.dynamic.measure import time_batched, time_per_input
from prunekit.dynamic.tokens import TokenKeepConfig, TokenMergeConfig
from prunekit.errors import ConfigError
from prunekit.measure import count_params
from prunekit.training import evaluate

__all__ = ["DynamicConfig", "build_dynamic", "measure_dynamic"]


@dataclass(frozen=True)
class DynamicConfig:
    """``dynamic:`` of a recipe: one of its keys, each a registered method's options."""

    early_exit: EarlyExitConfig | None = None
    token_merge: TokenMergeConfig | None = None
    token_keep: TokenKeepConfig | None = None
    channel_gate: ChannelGateConfig | None = None

    def __post_init__(self) -> None:
        chosen = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]
        if len(chosen) != 1:
            raise ConfigError(f"dynamic: give exactly one method, got {chosen or 'none'}; choose one of: "
                              f"{', '.join(DYNAMIC_METHODS.names())}")

    @property
    def method(self) -> str:
        return next(f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None)

    @property
    def options(self) -> Any:
        return getattr(self, self.method)


def build_dynamic(model: nn.Module, data: DataSplits, config: DynamicConfig, seed: int = 0,
                  log=print) -> tuple[nn.Module, dict]:
    """The dynamic model built on ``model`` (which it shares, not copies), and build-time facts for the report."""
    ctx = BuildContext(model, data, config.options, seed, log)
    dyn = DYNAMIC_METHODS.get(config.method).build(ctx)
    return dyn, ctx.report


def measure_dynamic(static: nn.Module, dynamic: nn.Module, data: DataSplits, method: str,
                    latency_batches: list[int], repeats: int = 3) -> tuple[dict, dict, dict]:
    """Figures of the dynamic model on the test split, beside ``static`` (the network it runs when nothing is
    skipped): returns ``(static_figures, dynamic_figures, facts)``.

    Each figures dict has ``accuracy``, ``macs`` (dynamic: mean per input on the path taken), ``params`` and
    ``latency_ms`` keyed by batch size: ``"1"`` is the mean batch-1 CPU time over every test input (static and
    dynamic alternated input by input), larger sizes the mean CPU time per batch over the split.
    """
    facts = DYNAMIC_METHODS.get(method).describe(dynamic, data.x_test, data.y_test)
    acc_static = evaluate(static, data.x_test, data.y_test).accuracy
    acc_dyn = evaluate(dynamic, data.x_test, data.y_test).accuracy
    one = time_per_input([static, dynamic], data.x_test)
    latency = {"1": one}
    for b in latency_batches:
        if b > 1:
            latency[str(b)] = time_batched([static, dynamic], data.x_test, b, repeats)
    figures = []
    for j, (acc, macs, m) in enumerate(((acc_static, facts["static_macs"], static),
                                        (acc_dyn, facts["mean_macs"], dynamic))):
        figures.append({"accuracy": acc, "macs": int(round(macs)), "params": count_params(m).total,
                        "latency_ms": {b: t[j]["mean_ms"] for b, t in latency.items()},
                        "latency": {b: t[j] for b, t in latency.items()}})
    facts["speedup"] = {b: t[0]["mean_ms"] / t[1]["mean_ms"] for b, t in latency.items()}
    facts["macs_reduction"] = figures[0]["macs"] / max(figures[1]["macs"], 1)
    return figures[0], figures[1], facts


@torch.no_grad()
def outputs_equal(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    """``a(x) == b(x)`` up to float rounding (the never-exit / r = 0 check)."""
    a.eval()
    b.eval()
    return bool(torch.allclose(a(x), b(x), rtol=1e-5, atol=1e-6))
