"""The public API: ``prunekit.prune_`` with the config dataclasses, and every error path before any work."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.errors import ConfigError
from prunekit.graph import DependencyGraph
from prunekit.importance import get, names
from prunekit.measure import count_macs, count_params
from prunekit.pruners import UnstructuredPruner, select_units
from prunekit.structured import prune_groups


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """One torch thread (see tests/conftest.py)."""


class Net(nn.Module):
    """conv(3→a)-BN-ReLU → conv(a→b)-BN-ReLU → mean → fc(b→4)."""

    def __init__(self, a: int = 8, b: int = 12) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, a, 3, padding=1), nn.BatchNorm2d(a)
        self.c2, self.b2 = nn.Conv2d(a, b, 3, padding=1), nn.BatchNorm2d(b)
        self.fc = nn.Linear(b, 4)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.fc(x.mean((2, 3)))


def _net(a: int = 8, b: int = 12) -> Net:
    torch.manual_seed(0)
    net = Net(a, b).eval()
    with torch.no_grad():  # BN statistics that differ per channel, as after training
        for bn in (net.b1, net.b2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return net


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(32, 3, 8, 8, generator=g), torch.randint(0, 4, (32,), generator=g)


def test_everything_public_is_listed():
    assert {"prune_", "UnstructuredConfig", "StructuredConfig", "Budget", "Calibration", "PruneResult",
            "list_criteria", "ConfigError"} <= set(pk.__all__)
    assert all(hasattr(pk, n) for n in pk.__all__)
    # kinds filter the one registry (bn_scale has a group form only); not list_criteria compared with itself
    assert "bn_scale" in pk.list_criteria("group") and "bn_scale" not in pk.list_criteria("weight")
    assert set(pk.list_criteria()) == set(pk.list_criteria("group")) | set(pk.list_criteria("weight"))


# ----------------------------------------------------------------------------- unstructured
@pytest.mark.parametrize("allocation", ["global", "uniform"])
def test_unstructured_reaches_the_sparsity_and_counts_match_the_model(data, allocation):
    x, _ = data
    net = _net()
    cfg = pk.UnstructuredConfig(sparsity=0.75, importance="l1", allocation=allocation)
    r = pk.prune_(net, cfg, example_inputs=x[:2])
    weights = {"c1.weight": net.c1.weight, "c2.weight": net.c2.weight, "fc.weight": net.fc.weight}
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    total = sum(w.numel() for w in weights.values())
    assert r.kind == "unstructured" and set(r.masks) == set(weights)
    assert r.sparsity == pytest.approx(zeros / total) == pytest.approx(0.75, abs=1 / total)
    assert r.removed == {n: int((w == 0).sum()) for n, w in weights.items()}
    assert r.params_before == count_params(net).total
    assert r.params_after == count_params(net).nonzero == count_params(_net()).nonzero - zeros
    assert r.macs_before == count_macs(net, x[:2]).dense and r.macs_after == count_macs(net, x[:2]).nonzero
    assert r.macs_after < r.macs_before
    for n, m in r.masks.items():
        assert torch.equal(m == 0, weights[n].detach() == 0)
    if allocation == "uniform":
        assert all(v == pytest.approx(0.75, abs=0.02) for v in r.layer_sparsity.values())


def test_unstructured_equals_the_pruner_it_is_built_on(data):
    x, y = data
    a, b = _net(), _net()
    cfg = pk.UnstructuredConfig(sparsity=0.6, importance="taylor", allocation="global")
    pk.prune_(a, cfg, example_inputs=x[:1], calibration=pk.Calibration(x, y))
    UnstructuredPruner(b, cfg, calibration=(x, y)).prune_to()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_masks_stay_through_training_unless_permanent(data):
    x, y = data
    net = _net().train()
    r = pk.prune_(net, pk.UnstructuredConfig(sparsity=0.5), example_inputs=x[:1])
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    nn.functional.cross_entropy(net(x), y).backward()
    opt.step()
    net(x)
    assert int((net.c2.weight == 0).sum()) == r.removed["c2.weight"]
    other = _net()
    pk.prune_(other, pk.UnstructuredConfig(sparsity=0.5, permanent=True), example_inputs=x[:1])
    assert not [n for n, _ in other.named_buffers() if n.endswith("_mask")]
    with pytest.raises(ConfigError, match="already carries masks"):
        pk.prune_(net, pk.UnstructuredConfig(sparsity=0.7), example_inputs=x[:1])


def test_nm_granularity_fixes_the_sparsity(data):
    x, _ = data
    net = _net()
    r = pk.prune_(net, pk.UnstructuredConfig(granularity="nm", nm=(2, 4), exclude=("c1",)), example_inputs=x[:1])
    assert r.sparsity == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="fixes sparsity at 1 − N/M = 0.5; got sparsity=0.7"):
        pk.UnstructuredConfig(granularity="nm", nm=(2, 4), sparsity=0.7)


# ----------------------------------------------------------------------------- structured
@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_structured_sparsity_removes_units_and_equals_select_units(data, allocation):
    x, _ = data
    net, twin = _net(), _net()
    cfg = pk.StructuredConfig(sparsity=0.5, importance="l2", allocation=allocation)
    r = pk.prune_(net, cfg, example_inputs=x[:1])
    graph = DependencyGraph.build(twin, x[:1])
    plan = select_units(graph, cfg)
    prune_groups(graph, plan)
    assert r.removed == {k: len(v) for k, v in plan.items()}
    for pa, pb in zip(net.parameters(), twin.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert r.kind == "structured" and r.masks == {}
    assert r.sparsity == pytest.approx(sum(r.removed.values()) / 20)  # groups c1 (8) and c2 (12)
    assert r.params_after == count_params(net).total < r.params_before
    assert r.macs_after == count_macs(net, x[:1]).dense < r.macs_before
    if allocation == "uniform":
        assert r.removed == {"c1": 4, "c2": 6} and r.layer_sparsity == {"c1": 0.5, "c2": 0.5}


@pytest.mark.parametrize("budget", [pk.Budget(macs_kept=0.5), pk.Budget(params_kept=0.5)])
def test_structured_budget_is_met_as_measured_on_the_model(data, budget):
    x, y = data
    net = _net(32, 48)
    r = pk.prune_(net, pk.StructuredConfig(budget=budget, importance="taylor", allocation="global"),
                  example_inputs=x[:4], calibration=pk.Calibration(x, y))
    kept = {"macs": r.macs_kept, "params": r.params_kept}[budget.metric]
    assert kept == pytest.approx(budget.value, rel=0.02)
    assert r.params_after == count_params(net).total and r.macs_after == count_macs(net, x[:4]).dense
    assert r.allocation["budget"]["metric"] == budget.metric and r.removed


@pytest.mark.parametrize("allocation", ["sensitivity", "search"])
def test_budgeted_allocations_that_evaluate_use_the_calibration_data(data, allocation):
    x, y = data
    net = _net(32, 48)
    cfg = pk.StructuredConfig(budget=pk.Budget(macs_kept=0.6), allocation=allocation, population=3, generations=1,
                              sensitivity_ratios=(0.25, 0.5, 0.75))
    with pytest.raises(ConfigError, match=f"allocation '{allocation}' evaluates the pruned model on labelled data"):
        pk.prune_(net, cfg, example_inputs=x[:1])
    r = pk.prune_(net, cfg, example_inputs=x[:4], calibration=pk.Calibration(x, y))
    assert r.macs_kept == pytest.approx(0.6, rel=0.02) and r.allocation["allocation"]["strategy"] == allocation


class _MaskedPool(nn.Module):
    """Token ids → embedding → mean over the real tokens (all tokens without a mask) → MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.fc1, self.fc2 = nn.Embedding(12, 8), nn.Linear(8, 32), nn.Linear(32, 2)

    def forward(self, x, attention_mask=None):
        h = self.emb(x)
        if attention_mask is not None:
            m = attention_mask[..., None].to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1)
        else:
            pooled = h.mean(1)
        return self.fc2(torch.relu(self.fc1(pooled)))


@pytest.mark.parametrize("allocation", ["sensitivity", "search"])
def test_evaluating_allocations_score_text_with_its_attention_mask(monkeypatch, allocation):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 12, (64, 10), generator=g)
    mask = (torch.arange(10) < torch.randint(2, 10, (64, 1), generator=g)).long()
    x = x * mask  # padding id 0 after each text's length
    net = _MaskedPool().eval()
    with torch.no_grad():
        d = net(x, attention_mask=mask) @ torch.tensor([-1.0, 1.0])
        net.fc2.bias[1] -= d.median() + 1e-4  # the classes split about evenly
        y = net(x, attention_mask=mask).argmax(1)  # labels the masked model gets all right
    cal = pk.Calibration(x, y, attention_mask=mask)
    assert cal.evaluate(net).accuracy == 1.0 and pk.training.evaluate(net, x, y).accuracy < 1.0
    seen = []  # the accuracy of every evaluation of the model as it came (nothing zeroed yet: the first)
    real = pk.Calibration.evaluate
    monkeypatch.setattr(pk.Calibration, "evaluate", lambda self, *a: seen.append(real(self, *a)) or seen[-1])
    cfg = pk.StructuredConfig(budget=pk.Budget(macs_kept=0.7), allocation=allocation,
                              sensitivity_ratios=(0.25, 0.5), population=3, generations=1)
    pk.prune_(net, cfg, example_inputs=x[:4], calibration=cal)
    assert seen  # candidates are scored with the mask, as the model is used (before: the plain evaluator)
    if allocation == "sensitivity":  # its first evaluation is of the unpruned model: all right with the mask
        assert seen[0].accuracy == 1.0
    with pytest.raises(ConfigError, match="scores the calibration sample itself"):
        cal.evaluate(net, x[:8], y[:8])


# ----------------------------------------------------------------------------- every criterion, both kinds
@pytest.mark.parametrize("name", names("weight"))
def test_every_weight_criterion_prunes_through_prune_(data, name):
    x, y = data
    net = _net()
    r = pk.prune_(net, pk.UnstructuredConfig(sparsity=0.5, importance=name, allocation="uniform"),
                  example_inputs=x[:2], calibration=pk.Calibration(x, y))
    assert r.sparsity == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("name", names("group"))
def test_every_group_criterion_prunes_through_prune_(data, name):
    x, y = data
    net = _net()
    r = pk.prune_(net, pk.StructuredConfig(sparsity=0.5, importance=name), example_inputs=x[:1],
                  calibration=pk.Calibration(x, y))
    assert r.removed == {"c1": 4, "c2": 6}
    assert net(x).shape == (32, 4)


@pytest.mark.parametrize("name", names("group", data_free=False))
def test_a_criterion_that_needs_data_is_refused_before_any_work(data, name):
    x, _ = data
    net = _net()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ConfigError, match=f"criterion '{name}' needs calibration data.*Calibration\\(x, y\\).*"
                                          f"data-free group criterion: bn_scale, fpgm, l1, l2, random"):
        pk.prune_(net, pk.StructuredConfig(sparsity=0.5, importance=name), example_inputs=x[:1])
    with pytest.raises(ConfigError, match=f"criterion '{name}' needs calibration data"):
        pk.prune_(net, pk.UnstructuredConfig(sparsity=0.5, importance=name), example_inputs=x[:1])
    if "labels" in get(name).needs:
        with pytest.raises(ConfigError, match="needs labels"):
            pk.prune_(net, pk.StructuredConfig(sparsity=0.5, importance=name), example_inputs=x[:1],
                      calibration=pk.Calibration(x))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert not [n for n, _ in net.named_buffers() if n.endswith("_mask")]


# ----------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize("make,match", [
    (lambda: pk.UnstructuredConfig(sparsity=0.5, budget=pk.Budget(macs_kept=0.5)),
     "UnstructuredConfig has no field 'budget': budgets .* use StructuredConfig"),
    (lambda: pk.UnstructuredConfig(sparsity=0.5, round_to=8), "no field 'round_to'.*StructuredConfig"),
    (lambda: pk.UnstructuredConfig(criterion="l1"), "no field 'criterion': the criterion is called importance="),
    (lambda: pk.UnstructuredConfig(scope="layer"), "scope 'layer' is allocation 'uniform'"),
    (lambda: pk.StructuredConfig(sparsity=0.5, granularity="nm"), "no field 'granularity'.*UnstructuredConfig"),
    (lambda: pk.StructuredConfig(ratio=0.5), "no field 'ratio': the fraction of units removed is sparsity="),
    (lambda: pk.UnstructuredConfig(sparsity=1.2), r"UnstructuredConfig.sparsity=1.2: .*in \[0, 1\)"),
    (lambda: pk.UnstructuredConfig(sparsity=0.5, importance="bn_scale"),
     "'bn_scale' has no weight form .*choose one of: apoz, bn_folded"),
    (lambda: pk.UnstructuredConfig(sparsity=0.5, importance="l7"), "unknown criterion 'l7'; choose one of:"),
    (lambda: pk.UnstructuredConfig(sparsity=0.5, allocation="layer"), "allocation='layer' is not one of: uniform"),
    (lambda: pk.UnstructuredConfig(allocation="ratios"), "ratios= goes with allocation 'ratios' and it needs them"),
    (lambda: pk.UnstructuredConfig(sparsity=0.5, ratios={"c1.*": 0.5}), "ratios= goes with allocation 'ratios'"),
    (lambda: pk.UnstructuredConfig(sparsity=0.5, allocation="ratios", ratios={"c*": 0.5}),
     "sets the sparsity per layer itself; remove sparsity=0.5"),
    (lambda: pk.UnstructuredConfig(allocation="threshold"), "threshold= goes with allocation 'threshold'"),
    (lambda: pk.UnstructuredConfig(sparsity=0.5, exclude="fc"), "exclude must be a list.*exclude=\\('fc',\\)"),
    (lambda: pk.StructuredConfig(), "needs exactly one target: sparsity= .* or budget=.*; got neither"),
    (lambda: pk.StructuredConfig(sparsity=0.5, budget=pk.Budget(macs_kept=0.5)), "got both"),
    (lambda: pk.StructuredConfig(budget=0.5), "budget must be a prunekit.Budget, e.g. Budget\\(macs_kept=0.5\\)"),
    (lambda: pk.StructuredConfig(sparsity=0.5, allocation="sensitivity"), "spreads a budget; give budget="),
    (lambda: pk.StructuredConfig(sparsity=0.5, importance="bn_folded"), "'bn_folded' has no group form"),
    (lambda: pk.StructuredConfig(sparsity=0.5, importance="snip"), "'snip' has no group form"),
    (lambda: pk.StructuredConfig(sparsity=0.5, allocation="ratios"), "allocation='ratios' is not one of: uniform"),
    (lambda: pk.StructuredConfig(sparsity=0.5, round_to=0), "round_to must be a positive integer, got 0"),
    (lambda: pk.StructuredConfig(budget=pk.Budget(macs_kept=0.5), exact_only=False), "exact_only=False goes with"),
    (lambda: pk.StructuredConfig(sparsity=0.5, reduction="median"), "reduction='median' is not one of"),
    (lambda: pk.Budget(macs_kept=1.5), r"macs_kept=1.5: give the fraction of the dense model to KEEP"),
    (lambda: pk.Budget(macs=0.5), "Budget has no field 'macs': write macs_kept="),
])
def test_bad_configs_fail_on_construction_naming_the_value_and_the_fix(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_bad_calls_fail_before_any_work(data):
    x, y = data
    net = _net()
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(ConfigError,
                       match="prune_ takes one of UnstructuredConfig, StructuredConfig, LayerwiseConfig; got dict"):
        pk.prune_(net, {"sparsity": 0.5})
    with pytest.raises(ConfigError, match="prunes a torch.nn.Module, got str"):
        pk.prune_("resnet", pk.UnstructuredConfig(sparsity=0.5))
    with pytest.raises(ConfigError, match="calibration must be a prunekit.Calibration"):
        pk.prune_(net, pk.UnstructuredConfig(sparsity=0.5, importance="taylor"), calibration=(x, y))
    with pytest.raises(ConfigError, match="structured pruning traces one forward pass: pass example_inputs="):
        pk.prune_(net, pk.StructuredConfig(sparsity=0.5))
    with pytest.raises(ConfigError, match="allocation='global'\\) needs sparsity="):
        pk.prune_(net, pk.UnstructuredConfig())
    with pytest.raises(ConfigError, match="'synflow' runs the model once on an all-ones input: pass example_inputs"):
        pk.prune_(net, pk.UnstructuredConfig(sparsity=0.5, importance="synflow"))
    with pytest.raises(ConfigError, match="a latency budget times batches of one input tensor"):
        pk.prune_(net, pk.StructuredConfig(budget=pk.Budget(latency_ms=5)), example_inputs=(x[:1],))
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert not [n for n, _ in net.named_buffers() if n.endswith("_mask")]


def test_result_is_plain_data(data):
    x, _ = data
    r = pk.prune_(_net(), pk.UnstructuredConfig(sparsity=0.5), example_inputs=x[:1])
    d = r.to_dict()
    assert not any(isinstance(v, nn.Module) for v in vars(r).values())
    assert d["params_kept"] == pytest.approx(r.params_after / r.params_before) and "masks" not in d
