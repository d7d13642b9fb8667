"""Data-driven single-weight criteria for pruning a trained model (gradient, taylor, hessian): the
scores follow their formulas over calibration mini-batches, beat random pruning on a fitted model,
and work from a recipe at any schedule."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError
from prunekit.importance import get
from prunekit.importance._channels import MINI as _MINI
from prunekit.pipeline import parse_recipe, run_recipe
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def _batch(n):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _per_batch_grads(model, x, y):
    out = []
    for s in range(0, len(x), _MINI):
        model.zero_grad()
        F.cross_entropy(model(x[s:s + _MINI]), y[s:s + _MINI]).backward()
        out.append(model[0].weight.grad.clone())
    model.zero_grad()
    return torch.stack(out)


@pytest.mark.parametrize("criterion,formula", [
    ("gradient", lambda g, w: g.abs().mean(0)),
    ("taylor", lambda g, w: ((g * w) ** 2).mean(0)),  # Molchanov et al. 2019, a unit of one weight
    ("hessian", lambda g, w: 0.5 * (g * g).mean(0) * w * w),
])
def test_scores_follow_the_formula_over_calibration_minibatches(criterion, formula):
    model = _mlp()
    x, y = _batch(_MINI + 40)  # two mini-batches of different size
    want = formula(_per_batch_grads(model, x, y), model[0].weight.detach())
    pruner = UnstructuredPruner(model, UnstructuredConfig(importance=criterion), calibration=(x, y))
    got = pruner.scores()["0.weight"]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-8)
    assert all(p.grad is None for p in model.parameters())  # scoring leaves no gradients behind


def test_taylor_keeps_the_loss_lower_than_random_pruning():
    x, y = _batch(512)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # a learnable rule
    losses = {}
    for crit in ("taylor", "random"):
        model = _mlp()
        opt = torch.optim.Adam(model.parameters(), lr=0.02)
        for _ in range(200):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        cfg = UnstructuredConfig(importance=crit, allocation="uniform")
        UnstructuredPruner(model, cfg, calibration=(x, y)).prune_to(0.7)
        with torch.no_grad():
            losses[crit] = F.cross_entropy(model(x), y).item()
    assert losses["taylor"] < losses["random"]


def test_data_criteria_need_a_calibration_batch_and_are_not_at_init_only():
    assert not get("taylor").at_init and get("snip").at_init
    with pytest.raises(ConfigError, match="calibration=\\(x, y\\)"):
        UnstructuredPruner(_mlp(), UnstructuredConfig(importance="taylor")).prune_to(0.5)


def test_a_recipe_prunes_a_trained_model_with_taylor(tmp_path):
    raw = {"name": "taylor", "seed": 0, "model": "lenet300", "data": "digits",
           "train": {"epochs": 1, "lr": 0.05}, "recover": {"epochs": 1, "lr": 0.01},
           "prune": {"importance": "taylor", "method": "iterative", "steps": 2, "sparsity": 0.8,
                     "calibration_samples": 200},
           "measure": {"latency_batches": [1], "latency_repeats": 2}}
    run_recipe(parse_recipe(raw), tmp_path / "o", progress=False, quiet=True)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["sparsity"] == pytest.approx(0.8, abs=0.01)
    with pytest.raises(ConfigError, match="calibration_samples must be ≥ 1, got 0"):
        parse_recipe({**raw, "prune": {**raw["prune"], "calibration_samples": 0}})
