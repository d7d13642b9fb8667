"""The registry of dynamic methods: what each gives the pipeline and the saved-model format.

A dynamic method changes *per input* how much of a network runs (an early exit, merged tokens, gated
channels). One module per method defines its options (a frozen dataclass: the keys of
``dynamic: {NAME: {...}}`` in a recipe) and registers a :class:`DynamicMethod` in :data:`DYNAMIC_METHODS`.

Example::

    DYNAMIC_METHODS.register("early_exit")(DynamicMethod("early_exit", EarlyExitConfig, build=..., ...))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunekit.data import DataSplits
from prunekit.registry import Registry

__all__ = ["DYNAMIC_METHODS", "BuildContext", "DynamicMethod"]


@dataclass
class BuildContext:
    """What ``build`` gets: the trained (maybe statically pruned) model, the data, the method's options."""

    model: nn.Module
    data: DataSplits
    options: Any
    seed: int = 0
    log: Callable[[str], None] = print
    report: dict = field(default_factory=dict)  # build-time facts (validation curve, thresholds) for report.json


@dataclass(frozen=True)
class DynamicMethod:
    """One dynamic method.

    Attributes:
        name: the key under ``dynamic:``.
        options: the dataclass of its options.
        build: ``ctx -> dynamic model`` (attach, train, calibrate on the validation split).
        describe: ``(dynamic model, x_test, y_test) -> dict``: what the test split did — ``mean_macs`` (per input, on
            the path taken), ``static_macs`` and the method's own facts (exit histogram, tokens or channels kept).
        state: ``dynamic model -> (spec, tensors)``: JSON-ready description and the tensors it adds to the static
            model (heads, gate predictors).
        restore: ``(static model, spec, tensors) -> dynamic model``, from data only.
        summary: one line for ``--help`` and errors.
    """

    name: str
    options: type
    build: Callable[[BuildContext], nn.Module]
    describe: Callable[[nn.Module, torch.Tensor, torch.Tensor], dict]
    state: Callable[[nn.Module], tuple[dict, dict[str, torch.Tensor]]]
    restore: Callable[[nn.Module, dict, dict[str, torch.Tensor]], nn.Module]
    summary: str = ""


#: Dynamic methods by name (the keys of a recipe's ``dynamic:`` section).
DYNAMIC_METHODS: Registry[DynamicMethod] = Registry("dynamic method")
