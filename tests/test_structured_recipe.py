"""The structured recipe runs end to end: budget met, model physically smaller, saved and loaded back."""

import json

import pytest
import torch

from prunekit.data import load_dataset
from prunekit.models import build_model
from prunekit.recipe.structured import parse_structured_recipe, run_structured_recipe
from prunekit.structured import load_pruned
from prunekit.training import evaluate

TINY = {
    "name": "tiny-structured", "seed": 0, "model": "resnet_mini", "data": "digits",
    "train": {"epochs": 1, "lr": 0.05},
    "structured": {"criterion": "lp", "strategy": "global", "target": {"macs": 0.5}},
    "finetune": {"epochs": 1, "lr": 0.005},
    "measure": {"latency_batches": [1, 4], "latency_repeats": 2},
}


def test_structured_recipe_end_to_end(tmp_path):
    out = tmp_path / "out"
    report = run_structured_recipe(parse_structured_recipe(TINY), out, progress=False, quiet=True)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["pruned"]["macs"] == report["pruned"]["macs"]
    ratio = report["pruned"]["macs"] / report["dense"]["macs"]
    assert abs(ratio - 0.5) <= 0.02 * 0.5  # the budget, within ±2%
    assert report["pruned"]["params"] < report["dense"]["params"]  # removed, not masked
    for side in ("dense", "pruned"):
        assert set(report[side]["latency_ms"]) == {"1", "4"}
    data = load_dataset("digits")
    model = load_pruned(out / "model", build_model("resnet_mini", data.input_shape, data.num_classes))
    assert sum(p.numel() for p in model.parameters()) == report["pruned"]["params"]
    acc = evaluate(model, data.x_test, data.y_test).accuracy
    assert acc == pytest.approx(report["pruned"]["accuracy"])
    assert model(torch.randn(2, *data.input_shape)).shape == (2, 10)
