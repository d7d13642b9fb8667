"""Pieces several benchmarks share: the seeded dense model they prune, and writing their results."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from prunekit.models import build_model
from prunekit.training import TrainConfig, evaluate, train

RESULTS = Path(__file__).parent / "results"


def train_dense(name: str, data, cfg: TrainConfig, seed: int) -> tuple[torch.nn.Module, float]:
    """``name`` built under ``seed`` and trained with ``cfg``; returns it and its test accuracy."""
    torch.manual_seed(seed)
    dense = build_model(name, data.input_shape, data.num_classes)
    train(dense, data, cfg, seed=seed, progress=False)
    return dense, evaluate(dense, data.x_test, data.y_test).accuracy


def write_results(name: str, result, markdown: Callable[[object], str]) -> None:
    """Writes ``bench/results/NAME.json`` and ``NAME.md`` (``markdown(result)``) and prints the markdown."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    text = markdown(result)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
