"""Allocation to a budget: every strategy meets MACs/params within ±2%, errors say what is possible."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prunekit.allocation import (
    STRATEGY_NAMES,
    AllocationConfig,
    Budget,
    CostModel,
    LatencyTable,
    allocate,
    load_latency_table,
    measure_latency_table,
    prune_to_budget,
)
from prunekit.allocation.strategies import allowed_steps
from prunekit.errors import ConfigError
from prunekit.export import InferenceConfig
from prunekit.graph import DependencyGraph
from prunekit.measure import count_macs, count_params
from prunekit.models import build_model
from prunekit.sensitivity import Curve, Sensitivity
from prunekit.structured import prune_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def _fake_sensitivity(graph, fragile: str) -> Sensitivity:
    ratios = [0.25, 0.5, 0.75]
    curves = {g.name: Curve(g.name, g.size, ratios, [0.9, 0.9, 0.9],
                            [1.0 + (5 * r if g.name == fragile else 0.01 * r) for r in ratios])
              for g in graph.prunable_groups()}
    return Sensitivity("l2", 0.9, 1.0, curves)


def test_cost_model_predicts_the_pruned_counts_exactly(net, digits):
    x = digits.x_train[:1]
    graph = DependencyGraph.build(net, x)
    cost = CostModel.build(graph)
    assert cost.dense_macs == count_macs(net, x).dense and cost.dense_params == count_params(net).total
    rng = np.random.default_rng(0)
    plan = {g.name: rng.choice(g.size, g.size // 3, replace=False) for g in graph.prunable_groups()}
    predicted = (cost.macs(plan), cost.params(plan))
    prune_groups(graph, plan)
    assert predicted == (count_macs(net, x).dense, count_params(net).total)


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
@pytest.mark.parametrize("metric,value", [("macs", 0.5), ("params", 0.33)])
def test_every_strategy_meets_the_budget_within_2_percent(net, digits, strategy, metric, value):
    x = digits.x_train[:4]
    graph = DependencyGraph.build(net, x[:1])
    sens = _fake_sensitivity(graph, "layers.3.conv2")
    result = prune_to_budget(net, x, Budget(**{f"{metric}_kept": value}),
                             AllocationConfig(strategy, population=4, generations=1), "l2",
                             sensitivity=sens, proxy_data=(digits.x_val[:64], digits.y_val[:64]))
    measured = {"macs": count_macs(net, x[:1]).dense, "params": count_params(net).total}[metric]
    assert measured == result.pruned[metric]
    assert abs(measured / result.dense[metric] / value - 1) <= 0.02
    assert result.achieved == pytest.approx(measured / result.dense[metric])


def test_sensitivity_strategy_spares_the_fragile_group(net, digits):
    graph = DependencyGraph.build(net, digits.x_train[:1])
    alloc = allocate(graph, Budget(macs_kept=0.5), AllocationConfig("sensitivity"), "l2",
                     sensitivity=_fake_sensitivity(graph, "layers.3.conv2"))
    assert alloc.ratios["layers.3.conv2"] == 0.0
    assert max(alloc.ratios.values()) > 0.5
    assert abs(alloc.predicted["macs"] / alloc.dense["macs"] - 0.5) <= 0.01


def test_min_channels_and_round_to_are_respected(net, digits):
    graph = DependencyGraph.build(net, digits.x_train[:1])
    cfg = AllocationConfig("global", min_channels=8, round_to=4)
    alloc = allocate(graph, Budget(params_kept=0.4), cfg, "l2")
    for g in graph.prunable_groups():
        kept = g.size - len(alloc.plan.get(g.name, []))
        assert kept >= 8 and (kept % 4 == 0 or kept == g.size), (g.name, kept)
    assert abs(alloc.predicted["params"] / alloc.dense["params"] / 0.4 - 1) <= 0.02


def test_unreachable_budget_says_the_largest_reduction_and_prunes_nothing(net, digits):
    before = count_params(net).total
    with pytest.raises(ConfigError, match=r"macs_kept=0.01 \(100.00× fewer macs\) is unreachable: with min_channels=4.*"
                                          r"at most a \d+\.\d+× reduction\); ask for macs_kept ≥ 0\.\d+"):
        prune_to_budget(net, digits.x_train[:2], Budget(macs_kept=0.01), AllocationConfig(min_channels=4))
    assert count_params(net).total == before


@pytest.mark.parametrize("kwargs,match", [
    ({"macs_kept": 2.0}, r"macs_kept=2.0: give the fraction of the dense model to KEEP, in \(0, 1\)"),
    ({"macs_kept": 0.5, "params_kept": 0.5}, "exactly one of macs_kept, params_kept, latency_ms"),
    ({}, "exactly one of"),
    ({"latency_ms": -3}, "positive number of milliseconds"),
])
def test_bad_budgets(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Budget(**kwargs)


def test_budget_mappings_name_the_new_spelling_of_old_keys():
    b = Budget.from_dict({"macs_kept": 0.25, "batch": 2.0})
    assert (b.metric, b.value, b.batch) == ("macs", 0.25, 2)
    with pytest.raises(ConfigError, match=r"unknown budget key\(s\) \['macs', 'params'\]; valid: macs_kept.*; "
                                          r"'macs' is now 'macs_kept', 'params' is now 'params_kept', the "
                                          r"fraction KEPT"):
        Budget.from_dict({"macs": 0.5, "params": 0.5})
    with pytest.raises(ConfigError, match=r"unknown budget key\(s\) \['flops'\]; valid: macs_kept, params_kept, "
                                          r"latency_ms, batch, tolerance \(e.g. \{macs_kept: 0.5\}"):
        Budget.from_dict({"flops": 0.5})


def test_bad_strategy_and_missing_inputs(net, digits):
    with pytest.raises(ConfigError, match="unknown allocation strategy 'amc'; choose one of: uniform, global, "
                                          "sensitivity, search"):
        AllocationConfig("amc")
    graph = DependencyGraph.build(net, digits.x_train[:1])
    with pytest.raises(ConfigError, match="needs sensitivity curves"):
        allocate(graph, Budget(macs_kept=0.5), AllocationConfig("sensitivity"))
    with pytest.raises(ConfigError, match="criterion 'taylor' needs calibration data"):
        allocate(graph, Budget(macs_kept=0.5), AllocationConfig("global"), "taylor")


@pytest.mark.slow
@pytest.mark.timing  # measures latency: needs a quiet machine, so CI skips it (make test-timing runs it)
def test_latency_budget_is_met_within_10_percent(digits):
    torch.set_num_threads(1)
    net = build_model("resnet_mini", digits.input_shape, digits.num_classes).eval()
    from prunekit.measure import measure_latency

    dense = measure_latency(net, digits.x_train[:1], batch=64, repeats=10).median_ms
    res = prune_to_budget(net, digits.x_train[:4], Budget(latency_ms=0.6 * dense, batch=64), AllocationConfig())
    assert abs(res.pruned["latency_ms"] / (0.6 * dense) - 1) <= 0.15  # ±10% target, margin for shared CPUs


def test_sensitivity_penalty_keeps_rising_past_the_last_measured_ratio(net, digits):
    """Curves measured to 50% only: removing 90% must cost more than 50% (it used to be free)."""
    from prunekit.allocation.api import _sensitivity_penalty

    graph = DependencyGraph.build(net, digits.x_train[:1])
    ratios = [0.1, 0.3, 0.5]
    curves = {g.name: Curve(g.name, g.size, ratios, [0.9] * 3, [1.0 + 2 * r for r in ratios])
              for g in graph.prunable_groups()}
    penalty = _sensitivity_penalty(graph, Sensitivity("l2", 0.9, 1.0, curves))
    g = graph.prunable_groups()[0]
    at = {r: penalty(g.name, round(r * g.size)) for r in (0.3, 0.5, 0.9)}
    assert at[0.3] == pytest.approx(0.6, abs=0.15) and at[0.5] == pytest.approx(1.0)
    assert at[0.9] == pytest.approx(1.0 + 2 * (round(0.9 * g.size) / g.size - 0.5))


def test_recalibrated_bn_uses_the_batch_statistics_and_restores_everything():
    from prunekit.recovery.bn import recalibrated_bn

    conv, bn = torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)
    model = torch.nn.Sequential(conv, bn, torch.nn.Dropout(0.5)).eval()
    with torch.no_grad():
        bn.running_mean.fill_(3.0)
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    x = torch.randn(32, 1, 6, 6)
    with torch.no_grad():
        h = conv(x)
    with recalibrated_bn(model, x):
        assert not bn.training and not model[2].training
        torch.testing.assert_close(bn.running_mean, h.mean((0, 2, 3)))
        torch.testing.assert_close(bn.running_var, h.var((0, 2, 3), unbiased=True))
    for k, v in bn.state_dict().items():
        torch.testing.assert_close(v, before[k])
    assert bn.momentum == 0.1 and not model.training


def test_search_with_recalibration_meets_the_budget_and_leaves_the_model_unchanged(net, digits):
    graph = DependencyGraph.build(net, digits.x_train[:1])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    alloc = allocate(graph, Budget(macs_kept=0.4), AllocationConfig("search", population=4, generations=2), "l2",
                     proxy_data=(digits.x_val[:64], digits.y_val[:64]), recalibration=digits.x_train[:64])
    assert abs(alloc.predicted["macs"] / alloc.dense["macs"] / 0.4 - 1) <= 0.02
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_search_starts_from_the_sensitivity_allocation_when_curves_are_given(net, digits, monkeypatch):
    """A proxy that only dislikes pruning the fragile group: the sensitivity seed (which spares it) must win."""
    import prunekit.allocation.api as api

    graph = DependencyGraph.build(net, digits.x_train[:1])
    fragile = "layers.3.conv2"
    monkeypatch.setattr(api, "proxy_evaluator", lambda *a, **k: lambda counts: -float(counts[fragile]))
    alloc = allocate(graph, Budget(macs_kept=0.5), AllocationConfig("search", population=3, generations=1), "l2",
                     sensitivity=_fake_sensitivity(graph, fragile), proxy_data=(digits.x_val[:8], digits.y_val[:8]))
    assert alloc.ratios[fragile] == 0.0
    assert abs(alloc.predicted["macs"] / alloc.dense["macs"] / 0.5 - 1) <= 0.02


def _equal_sensitivity(graph) -> Sensitivity:
    ratios = [0.25, 0.5, 0.75]
    curves = {g.name: Curve(g.name, g.size, ratios, [0.9] * 3, [1.0 + 0.1 * r for r in ratios])
              for g in graph.prunable_groups()}
    return Sensitivity("l2", 0.9, 1.0, curves)


def _stub_table(graph, fast: str, dense_ms: float = 100.0) -> LatencyTable:
    """Only ``fast`` saves time: 90 ms when emptied; every other group saves nothing measurable."""
    ms = {g.name: {n: dense_ms - (90.0 * n / g.size if g.name == fast else 0.0) for n in range(1, g.size)}
          for g in graph.prunable_groups()}
    return LatencyTable(64, dense_ms, ms)


def test_latency_cost_prunes_the_group_whose_steps_save_time_and_meets_the_mac_budget(net, digits):
    graph = DependencyGraph.build(net, digits.x_train[:1])
    sens, cfg = _equal_sensitivity(graph), AllocationConfig("sensitivity", 4, round_to=4, cost="latency")
    ratios = {}
    for fast in ("stem.0", "layers.0.conv1"):
        alloc = allocate(graph, Budget(macs_kept=0.5), cfg, "l2", sensitivity=sens,
                         latency_table=_stub_table(graph, fast))
        assert abs(alloc.predicted["macs"] / alloc.dense["macs"] / 0.5 - 1) <= 0.02
        assert alloc.to_dict()["latency_table"]["dense_ms"] == 100.0
        ratios[fast] = alloc.ratios
    most = {g.name: allowed_steps(g, cfg)[-1] / g.size for g in graph.prunable_groups()}
    for fast, other in (("stem.0", "layers.0.conv1"), ("layers.0.conv1", "stem.0")):
        assert ratios[fast][fast] == most[fast]  # pruned as far as min_channels, max_ratio, round_to allow
        assert ratios[other][fast] < ratios[fast][fast]
    budget_cost = allocate(graph, Budget(macs_kept=0.5), AllocationConfig("sensitivity", 4, round_to=4), "l2",
                           sensitivity=sens, latency_table=_stub_table(graph, "stem.0"))
    assert "latency_table" not in budget_cost.to_dict()  # cost "budget" ignores a table
    assert budget_cost.ratios != ratios["stem.0"]


def test_latency_table_measures_every_step_on_a_copy_and_fits_a_non_increasing_curve(net, digits):
    graph = DependencyGraph.build(net, digits.x_train[:1])
    before = count_params(net).total
    steps = {"stem.0": [0, 8, 12], "layers.6.conv1": [0, 32]}
    table = measure_latency_table(graph, steps, batch=2, repeats=2, export=InferenceConfig(True, True))
    assert count_params(net).total == before
    assert set(table.measured) == set(steps) and set(table.measured["stem.0"]) == {8, 12}
    for g, counts in steps.items():
        fitted = [table.at(g, n) for n in counts]
        assert all(a >= b for a, b in zip(fitted, fitted[1:], strict=False)) and min(fitted) > 0
    assert table.saved("stem.0", 0, 12) == pytest.approx(table.at("stem.0", 0) - table.at("stem.0", 12))
    assert LatencyTable.from_dict(json.loads(json.dumps(table.to_dict()))).to_dict() == table.to_dict()
    with pytest.raises(ConfigError, match="no entry for group 'stem.0' with 4 units removed"):
        table.at("stem.0", 4)


def test_non_increasing_fit_pools_violators():
    from prunekit.allocation.latency import _non_increasing

    assert _non_increasing({0: 100.0, 8: 101.0, 16: 95.0, 24: 97.0, 32: 90.0}) == {0: 100.5, 8: 100.5, 16: 96.0,
                                                                                24: 96.0, 32: 90.0}
    assert _non_increasing({8: 80.0, 0: 100.0}) == {0: 100.0, 8: 80.0}


def test_prune_to_budget_with_latency_cost_measures_the_table_once(net, digits, monkeypatch):
    import prunekit.allocation.prune as prune_mod

    calls = []
    real = prune_mod.latency_table_for
    monkeypatch.setattr(prune_mod, "latency_table_for", lambda *a: calls.append(1) or real(*a))
    graph = DependencyGraph.build(net, digits.x_train[:1])
    cfg = AllocationConfig("sensitivity", min_channels=8, round_to=8, cost="latency", latency_batch=2,
                           latency_repeats=1)
    res = prune_to_budget(net, digits.x_train[:4], Budget(macs_kept=0.5), cfg, "l2",
                          sensitivity=_fake_sensitivity(graph, "layers.3.conv2"))
    assert calls == [1]
    assert abs(count_macs(net, digits.x_train[:1]).dense / res.dense["macs"] / 0.5 - 1) <= 0.02
    table = res.to_dict()["allocation"]["latency_table"]
    assert table["batch"] == 2 and set(table["ms"]) == {g.name for g in graph.prunable_groups()}


def test_latency_weight_credits_time_saved_so_free_steps_that_save_no_time_stop_going_first(net, digits):
    """Every group's curve is flat except stem.0's tiny rise, and only stem.0 saves time: per ms saved the
    free steps rank first (ratio 0 per ms) and stem.0 is barely pruned; with latency_weight the time it
    saves outweighs its rise and it is pruned as far as the limits allow. The MAC budget is met either way."""
    graph = DependencyGraph.build(net, digits.x_train[:1])
    ratios = [0.25, 0.5, 0.75]
    curves = {g.name: Curve(g.name, g.size, ratios, [0.9] * 3, [1.0 + (0.01 * r if g.name == "stem.0" else 0.0)
                                                               for r in ratios])
              for g in graph.prunable_groups()}
    sens, table = Sensitivity("l2", 0.9, 1.0, curves), _stub_table(graph, "stem.0")
    got = {}
    for mu in (None, 1.0):
        cfg = AllocationConfig("sensitivity", 4, round_to=4, cost="latency", latency_weight=mu)
        alloc = allocate(graph, Budget(macs_kept=0.5), cfg, "l2", sensitivity=sens, latency_table=table)
        assert abs(alloc.predicted["macs"] / alloc.dense["macs"] / 0.5 - 1) <= 0.02
        got[mu] = alloc.ratios["stem.0"]
    most = allowed_steps(graph.group("stem.0"), cfg)[-1] / graph.group("stem.0").size
    assert got[1.0] == most and got[None] < most


@pytest.mark.parametrize("kwargs,match", [
    ({"strategy": "sensitivity", "latency_weight": 1.0},
     r"latency_weight \(recipe: structured.allocation_latency_weight\) weighs the latency saved by a step and "
     "needs cost 'latency'; cost is 'budget'"),
    ({"strategy": "sensitivity", "cost": "latency", "latency_weight": -0.5}, "must be a finite number ≥ 0"),
    ({"strategy": "sensitivity", "cost": "latency", "latency_weight": float("nan")}, "must be a finite number"),
    ({"strategy": "sensitivity", "cost": "latency", "latency_weight": "1"}, "must be a finite number"),
    ({"strategy": "sensitivity", "cost": "flops"}, "unknown allocation cost 'flops'; choose one of: budget, latency"),
    ({"strategy": "global", "cost": "latency"}, "cost 'latency' ranks the steps of strategy 'sensitivity'; strategy "
                                                "'global'"),
    ({"strategy": "sensitivity", "cost": "latency", "latency_batch": 0}, "latency_batch and latency_repeats must be"),
])
def test_bad_allocation_cost_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        AllocationConfig(**kwargs)


@pytest.mark.parametrize("deviation", [0.0, 0.1])
def test_max_deviation_keeps_every_group_near_the_uniform_ratio(net, digits, deviation):
    graph = DependencyGraph.build(net, digits.x_train[:1])
    sens = _fake_sensitivity(graph, "layers.3.conv2")
    even = allocate(graph, Budget(macs_kept=0.5), AllocationConfig("uniform"), "l2")
    free = allocate(graph, Budget(macs_kept=0.5), AllocationConfig("sensitivity"), "l2", sensitivity=sens)
    capped = allocate(graph, Budget(macs_kept=0.5), AllocationConfig("sensitivity", max_deviation=deviation), "l2",
                      sensitivity=sens)
    assert abs(free.ratios["layers.3.conv2"] - even.ratios["layers.3.conv2"]) > 0.2  # the free greedy strays
    for g, r in capped.ratios.items():
        assert abs(r - even.ratios[g]) <= deviation + 1e-9, g
    assert abs(capped.predicted["macs"] / capped.dense["macs"] - 0.5) <= 0.01
    if deviation:  # the fragile group is still spared as far as the bound allows
        assert capped.ratios["layers.3.conv2"] < even.ratios["layers.3.conv2"]


@pytest.mark.parametrize("kwargs,match", [
    ({"strategy": "sensitivity", "max_deviation": 1.5}, "max_deviation must be in \\[0, 1\\).*got 1.5"),
    ({"strategy": "global", "max_deviation": 0.2}, "max_deviation bounds strategy 'sensitivity'; strategy 'global'"),
])
def test_bad_max_deviation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        AllocationConfig(**kwargs)


def test_a_saved_table_is_used_instead_of_measuring_and_must_cover_the_steps(net, digits, tmp_path, monkeypatch):
    import prunekit.allocation.api as api

    monkeypatch.setattr(api, "measure_latency_table", lambda *a: pytest.fail("a saved table was given"))
    graph = DependencyGraph.build(net, digits.x_train[:1])
    sens, cfg = _equal_sensitivity(graph), AllocationConfig("sensitivity", 4, round_to=4, cost="latency")
    table = _stub_table(graph, "stem.0")
    (tmp_path / "t.json").write_text(json.dumps(table.to_dict()))
    report = {"allocation": {"allocation": {"latency_table": table.to_dict()}}}  # as a run's report.json keeps it
    (tmp_path / "report.json").write_text(json.dumps(report))
    for path in ("t.json", "report.json"):
        loaded = load_latency_table(tmp_path / path)
        assert loaded.to_dict() == table.to_dict()
        alloc = allocate(graph, Budget(macs_kept=0.5), cfg, "l2", sensitivity=sens, latency_table=loaded)
        assert alloc.ratios["stem.0"] == allowed_steps(graph.group("stem.0"), cfg)[-1] / graph.group("stem.0").size
    with pytest.raises(ConfigError, match="measured at batch 64, but the allocation ranks steps at batch 8"):
        table.check_covers({}, batch=8)
    partial = LatencyTable(64, 100.0, {k: v for k, v in table.ms.items() if k != "layers.6.conv1"})
    with pytest.raises(ConfigError, match=r"lacks \d+ of the steps .*layers.6.conv1 4"):
        allocate(graph, Budget(macs_kept=0.5), cfg, "l2", sensitivity=sens, latency_table=partial)


@pytest.mark.parametrize("content,match", [
    (None, "does not exist; give the latency_table.json of an earlier run"),
    ("{not json", "is not readable JSON"),
    ('{"batch": 4}', "holds no latency table"),
    ('{"allocation": {"allocation": {"strategy": "uniform"}}}', "holds no latency table"),
])
def test_a_bad_latency_table_file_is_refused_by_name(tmp_path, content, match):
    path = tmp_path / "t.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=match) as e:
        load_latency_table(path)
    assert "t.json" in str(e.value)


def test_a_table_around_an_allocation_times_each_group_with_the_others_at_their_counts(net, digits):
    graph = DependencyGraph.build(net, digits.x_train[:1])
    steps = {"stem.0": [0, 8], "layers.6.conv1": [0, 32]}
    table = measure_latency_table(graph, steps, batch=2, repeats=1, base={"stem.0": 8, "layers.3.conv2": 16})
    assert table.base == {"stem.0": 8, "layers.3.conv2": 16}
    assert set(table.measured["stem.0"]) == {0, 8} and set(table.measured["layers.6.conv1"]) == {32}
    from prunekit.allocation.latency import _non_increasing

    own = table.measured["stem.0"][8]  # the base model itself, timed once: also layers.6.conv1's count 0
    assert table.ms["layers.6.conv1"] == _non_increasing({0: own, 32: table.measured["layers.6.conv1"][32]})
    assert count_params(net).total == count_params(
        build_model("resnet_mini", digits.input_shape, digits.num_classes)).total  # graph.model untouched
    assert LatencyTable.from_dict(json.loads(json.dumps(table.to_dict()))).base == table.base


def test_latency_passes_reallocate_with_a_table_measured_around_the_previous_allocation(net, digits, monkeypatch):
    import prunekit.allocation.api as api

    graph = DependencyGraph.build(net, digits.x_train[:1])
    bases = []

    def fake_measure(graph, steps, batch, repeats, export, base=None):
        base = {g: n for g, n in (base or {}).items() if n}
        bases.append(base)  # dense: only layers.0.conv1 saves time; around an allocation: only stem.0
        fast = "stem.0" if base else "layers.0.conv1"
        return LatencyTable(batch, 100.0, {g: {n: 100.0 - (90.0 * n / graph.group(g).size if g == fast else 0.0)
                                               for n in counts} for g, counts in steps.items()}, base=base)

    monkeypatch.setattr(api, "measure_latency_table", fake_measure)
    sens = _equal_sensitivity(graph)
    one, two = (allocate(graph, Budget(macs_kept=0.5), AllocationConfig("sensitivity", 4, round_to=4, cost="latency",
                                                                    latency_passes=k), "l2", sensitivity=sens)
                for k in (1, 2))
    first = {g: n for g, n in one.to_dict()["removed"].items() if n}
    assert bases == [{}, {}, first]  # pass 2 of the second call is timed around pass 1's allocation
    most = {g.name: allowed_steps(g, AllocationConfig(min_channels=4, round_to=4))[-1] / g.size
            for g in graph.prunable_groups()}
    assert one.ratios["layers.0.conv1"] == most["layers.0.conv1"] and one.ratios["stem.0"] < most["stem.0"]
    assert two.ratios["stem.0"] == most["stem.0"]
    d = two.to_dict()
    assert d["latency_passes"] == [first, {g: n for g, n in d["removed"].items() if n}]
    assert d["latency_table"]["base"] == first and abs(two.predicted["macs"] / two.dense["macs"] / 0.5 - 1) <= 0.02


@pytest.mark.parametrize("kw,match", [
    ({"cost": "latency", "latency_passes": 0}, "latency_passes must be an integer ≥ 1"),
    ({"latency_passes": 2}, "latency_passes re-measures the latency table around an allocation and needs cost"),
])
def test_bad_latency_passes_are_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        AllocationConfig("sensitivity", **kw)


@pytest.mark.parametrize("seed", [1, 2, 13, 38, 52])  # 38 and 52 land under target·(1 − tol) without settle's moves
def test_coarse_steps_still_land_within_the_budget_tolerance(seed):
    """round_to 8 on resnet_mini makes steps of several % of the MACs; a greedy whose last step is big
    used to stop below target·(1 − tol) when no single restoration fit (18 of 120 random cases)."""
    from prunekit.data import load_dataset

    data = load_dataset("mnist")
    model = build_model("resnet_mini", data.input_shape, data.num_classes).eval()
    graph = DependencyGraph.build(model, data.x_train[:1])
    rng = np.random.default_rng(seed)
    ratios = [0.1, 0.25, 0.4, 0.55, 0.7, 0.85]
    rises = lambda: list(np.cumsum(rng.exponential(rng.choice([1e-3, 0.05, 0.5]), 6)))
    sens = Sensitivity("taylor", 0.9, 0.0, {g.name: Curve(g.name, g.size, ratios, [0.9] * 6, rises())
                                            for g in graph.prunable_groups()})
    mu = float(rng.choice([0.3, 1, 2]))
    latency = AllocationConfig("sensitivity", 8, round_to=8, cost="latency", latency_weight=mu)
    steps = {g.name: allowed_steps(g, latency) for g in graph.prunable_groups()}
    table = LatencyTable(256, 100.0, {g: {int(n): 100.0 - rng.uniform(0, 30) * n / graph.group(g).size for n in c}
                                      for g, c in steps.items()})
    for cfg in (latency, AllocationConfig("sensitivity", 8, round_to=8)):
        for target in (0.5, 0.33):
            a = allocate(graph, Budget(macs_kept=target), cfg, "l2", sensitivity=sens, latency_table=table)
            assert abs(a.predicted["macs"] / a.dense["macs"] / target - 1) <= 0.02, (cfg.cost, target)


def test_one_slow_timing_of_the_dense_or_base_model_does_not_shift_the_table(net, digits, monkeypatch):
    """The anchors run ANCHORS times a round; the median counts, so a single slow run of each is ignored."""
    from types import SimpleNamespace

    import prunekit.allocation.latency as lat

    seen = []

    def fake_compare(models, example, **kw):  # time ∝ parameters; the first run of each distinct model is 2× slow
        out = []
        for m in models:
            ms = count_params(m).total / 1e3
            slow = ms * (2.0 if id(m) not in seen else 1.0)
            out.append(SimpleNamespace(min_ms=slow, thread_cpu_ms=slow))
            seen.append(id(m))
        return out

    monkeypatch.setattr(lat, "compare_latency", fake_compare)
    graph = DependencyGraph.build(net, digits.x_train[:1])
    base = {"stem.0": 8}
    table = measure_latency_table(graph, {"stem.0": [0, 8], "layers.6.conv1": [0, 32]}, batch=2, repeats=1,
                                  base=base)
    assert table.dense_ms == pytest.approx(count_params(net).total / 1e3)
    assert seen.count(seen[0]) == lat.ANCHORS  # the dense model ran ANCHORS times
    pruned = build_model("resnet_mini", digits.input_shape, digits.num_classes)
    g = DependencyGraph.build(pruned, digits.x_train[:1])
    prune_groups(g, {"stem.0": list(range(8))})
    assert table.measured["stem.0"][8] == pytest.approx(count_params(pruned).total / 1e3)  # the base, not 2× it


def test_the_strategy_registry_is_complete_on_import_and_matches_the_config_choices():
    from prunekit.allocation import STRATEGY_NAMES
    from prunekit.allocation.allocators import ALLOCATORS

    assert ALLOCATORS.names() == sorted(STRATEGY_NAMES)
