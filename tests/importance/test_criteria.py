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
    NEEDS,
    Calibration,
    ImportanceConfig,
    check_needs,
    collect_stats,
    get,
    names,
    recording,
    score_groups,
    score_weights,
)
from prunekit.pruners import StructuredConfig, select_units


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


@pytest.mark.parametrize("name", names(kind="group"))
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


def test_l1_l2_and_bn_scale_numbers(setup):
    model, graph, _ = setup
    w = model.c1.weight.detach()
    l1 = score_groups(graph, ImportanceConfig("l1", normalize="none", reduction="first"))["c1"]
    np.testing.assert_allclose(l1, w.abs().reshape(4, -1).mean(1).numpy(), rtol=1e-6)
    l2 = score_groups(graph, ImportanceConfig("l2", normalize="none", reduction="first"))["c1"]
    np.testing.assert_allclose(l2, w.pow(2).reshape(4, -1).mean(1).sqrt().numpy(), rtol=1e-6)
    single = score_weights(model, ["c1.weight"], "l2")["c1.weight"]
    torch.testing.assert_close(single, w.pow(2))
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
    plan = select_units(graph, StructuredConfig(sparsity=0.5, importance="fpgm"))
    assert {k: len(v) for k, v in plan.items()} == {"c1": 2, "c2": 3}


@pytest.mark.parametrize("name", names(kind="group", data_free=False))
def test_data_criteria_refuse_to_start_without_data(setup, name):
    model, graph, cal = setup
    with pytest.raises(ConfigError, match=f"criterion '{name}' needs calibration data.*Calibration\\(x, y\\).*"
                                          f"data-free group criterion: bn_scale, fpgm, l1, l2, random"):
        score_groups(graph, name)
    with pytest.raises(ConfigError, match=f"criterion '{name}' needs calibration data"):
        score_weights(model, ["c1.weight"], name)
    if "labels" in IMPORTANCE.get(name).needs:
        with pytest.raises(ConfigError, match="needs labels"):
            check_needs(name, Calibration(cal.x))


def test_unknown_criterion_lists_the_choices():
    with pytest.raises(ConfigError, match="unknown criterion 'taylor9'; choose one of: apoz, bn_scale"):
        ImportanceConfig("taylor9")
    with pytest.raises(ConfigError, match="unknown reduction 'median'"):
        ImportanceConfig("l2", reduction="median")


@pytest.mark.parametrize("name", names(kind="weight"))
def test_every_weight_form_scores_single_weights_and_leaves_the_model_alone(setup, name):
    model, _, cal = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    w = score_weights(model, ["c1.weight", "c2.weight"], name, cal)
    assert [t.shape for t in w.values()] == [model.c1.weight.shape, model.c2.weight.shape]
    assert all(torch.isfinite(t).all() and t.abs().sum() > 0 for t in w.values())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


def test_every_criterion_declares_known_needs_and_a_form():
    for name in IMPORTANCE.names():
        c = get(name)
        assert c.needs <= set(NEEDS) and c.kinds, name
        assert c.doc, name
    assert set(names("group")) | set(names("weight")) == set(IMPORTANCE.names())
    assert set(names(at_init=True)) == {"snip", "synflow"}


@pytest.mark.parametrize("name,kind", [("bn_scale", "weight"), ("bn_folded", "group"), ("snip", "group")])
def test_a_criterion_without_that_form_is_refused_with_the_names_that_fit(name, kind):
    with pytest.raises(ConfigError, match=f"criterion '{name}' has no {kind} form.*; choose one of: "
                                          f"{', '.join(names(kind))}$"):
        get(name, kind)


def test_one_random_generator_seeds_both_forms(setup):
    model, graph, _ = setup
    a = score_groups(graph, ImportanceConfig("random", seed=3))["c1"]
    b = score_groups(graph, ImportanceConfig("random", seed=3))["c1"]
    c = score_groups(graph, ImportanceConfig("random", seed=4))["c1"]
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    w3 = score_weights(model, ["c1.weight"], "random", seed=3)["c1.weight"]
    assert torch.equal(w3, torch.rand(model.c1.weight.shape, generator=torch.Generator().manual_seed(3)))


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
