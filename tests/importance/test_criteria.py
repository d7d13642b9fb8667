"""Importance criteria: registry-wide smoke, hand-checked numbers, needs-checking and hook cleanup."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import (
    IMPORTANCE,
    Calibration,
    ImportanceConfig,
    check_needs,
    collect_stats,
    recording,
    score_groups,
    score_weights,
)
from prunekit.structured import GROUP_CRITERIA, StructuredConfig, select_units


class Tiny(nn.Module):
    """conv(1→4)-BN-ReLU → conv(4→6)-BN-ReLU → mean pool → fc(6→3)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = Tiny().eval()
    x, y = torch.randn(24, 1, 6, 6), torch.randint(0, 3, (24,))
    graph = DependencyGraph.build(model, x[:1])
    return model, graph, Calibration(x, y, batch_size=8)


@pytest.mark.parametrize("name", IMPORTANCE.names())
def test_every_criterion_scores_every_prunable_group(setup, name):
    model, graph, cal = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = score_groups(graph, ImportanceConfig(name, options={"max_units": 4}), cal)
    assert set(scores) == {"c1", "c2"}
    assert [len(scores["c1"]), len(scores["c2"])] == [4, 6]
    assert all(np.isfinite(s).all() for s in scores.values())
    for k, v in model.state_dict().items():  # nothing changed, no gradient left behind
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_lp_and_bn_scale_numbers(setup):
    model, graph, _ = setup
    w = model.c1.weight.detach()
    l1 = score_groups(graph, ImportanceConfig("lp", p=1, normalize="none", reduction="first"))["c1"]
    np.testing.assert_allclose(l1, w.abs().reshape(4, -1).mean(1).numpy(), rtol=1e-6)
    with torch.no_grad():
        model.b1.weight.copy_(torch.tensor([0.5, -2.0, 1.0, 0.1]))
    bn = score_groups(graph, ImportanceConfig("bn_scale", normalize="none"))["c1"]
    np.testing.assert_allclose(bn, [0.5, 2.0, 1.0, 0.1])


def test_taylor_and_gradient_match_autograd(setup):
    model, graph, cal = setup
    stats = collect_stats(model, graph, cal, frozenset({"gradients"}))
    assert stats.batches == 3
    manual = torch.zeros(6)
    grad_abs = torch.zeros_like(model.b2.weight)
    for xb, yb in cal.batches():
        model.zero_grad()
        nn.functional.cross_entropy(model(xb), yb).backward()
        manual += (model.b2.weight.grad * model.b2.weight).detach() ** 2
        grad_abs += model.b2.weight.grad.abs()
    model.zero_grad(set_to_none=True)
    np.testing.assert_allclose(stats.taylor[("b2.weight", 0)], manual.numpy(), rtol=1e-4, atol=1e-10)
    np.testing.assert_allclose(stats.grad_abs["b2.weight"].numpy(), grad_abs.numpy(), rtol=1e-5)
    w = score_weights(model, ["c2.weight"], "taylor", cal)["c2.weight"]
    assert w.shape == model.c2.weight.shape and (w >= 0).all()


def test_apoz_sees_a_dead_channel_and_loss_change_is_zero_for_it(setup):
    model, graph, cal = setup
    with torch.no_grad():  # channel 2 of b1 outputs exactly 0 after ReLU: bias −10, scale 0
        model.b1.weight[2], model.b1.bias[2] = 0.0, -10.0
    apoz = score_groups(graph, ImportanceConfig("apoz", normalize="none"), cal)["c1"]
    assert apoz[2] == 0.0 and (apoz[[0, 1, 3]] > 0.2).all()
    mean_act = score_groups(graph, ImportanceConfig("mean_activation", normalize="none"), cal)["c1"]
    assert mean_act[2] == 0.0
    lc = score_groups(graph, ImportanceConfig("loss_change", normalize="none"), cal)["c1"]
    assert lc[2] == pytest.approx(0.0, abs=1e-6) and np.abs(lc).max() > 1e-4
    mi = score_groups(graph, ImportanceConfig("mi", normalize="none"), cal)["c1"]
    assert mi[2] == 0.0  # a constant carries no information about the labels


def test_fpgm_ranks_the_median_filter_lowest_and_is_a_group_criterion(setup):
    model, graph, _ = setup
    with torch.no_grad():
        w = model.c1.weight
        w[0], w[1], w[2] = 1.0, -1.0, 0.0
        w[3] = 0.05  # closest to the others' median
    s = score_groups(graph, ImportanceConfig("fpgm", reduction="first", normalize="none"))["c1"]
    assert int(np.argmin(s)) in (2, 3)
    assert "fpgm" in GROUP_CRITERIA
    plan = select_units(graph, StructuredConfig(ratio=0.5, criterion="fpgm"))
    assert {k: len(v) for k, v in plan.items()} == {"c1": 2, "c2": 3}


@pytest.mark.parametrize("name", [n for n in IMPORTANCE.names() if IMPORTANCE.get(n).needs])
def test_data_criteria_refuse_to_start_without_data(setup, name):
    _, graph, cal = setup
    with pytest.raises(ConfigError, match=f"criterion '{name}' needs calibration data.*Calibration\\(x, y\\)"):
        score_groups(graph, name)
    if "labels" in IMPORTANCE.get(name).needs:
        with pytest.raises(ConfigError, match="needs labels"):
            check_needs(name, Calibration(cal.x))


def test_unknown_criterion_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown criterion 'taylor9'; choose one of: apoz, bn_scale"):
        ImportanceConfig("taylor9")
    with pytest.raises(ConfigError, match="unknown reduction 'median'"):
        ImportanceConfig("lp", reduction="median")


@pytest.mark.parametrize("name", ["apoz", "mean_activation", "mi", "bn_scale", "fpgm", "loss_change"])
def test_channel_criteria_score_single_weights(setup, name):
    model, _, cal = setup
    w = score_weights(model, ["c1.weight"], name, cal)["c1.weight"]
    assert w.shape == model.c1.weight.shape and torch.isfinite(w).all() and w.abs().sum() > 0


def test_hooks_are_removed_even_when_the_forward_fails(setup):
    model, graph, cal = setup
    calls = []
    with pytest.raises(RuntimeError, match="boom"):
        with recording([(model.c2, lambda m, a: calls.append(1))]):
            model(cal.x[:2])

            def bad(*_):
                raise RuntimeError("boom")
            model.fc.register_forward_hook(bad)
            model(cal.x[:2])
    assert calls == [1, 1] and not model.c2._forward_pre_hooks
    model.fc._forward_hooks.clear()
    with pytest.raises(RuntimeError, match="boom"):  # a failing calibration pass leaves no hook behind
        model.fc.register_forward_pre_hook(lambda *_: (_ for _ in ()).throw(RuntimeError("boom")))
        score_groups(graph, "apoz", cal)
    model.fc._forward_pre_hooks.clear()
    assert not any(m._forward_pre_hooks for m in model.modules())
