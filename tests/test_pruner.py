"""Criteria × scopes, exclusion, biases and schedules of unstructured pruning."""

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.importance import get, names
from prunekit.pruners import (
    ALLOCATIONS,
    UnstructuredConfig,
    UnstructuredPruner,
    cubic_sparsity,
    iterative_sparsity,
)
from prunekit.pruners.allocations import kth_mask


def _mlp():
    return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10), nn.ReLU(), nn.Linear(10, 4))


def _zeros(t):
    return int((t == 0).sum())


#: single-weight forms that need nothing but the weights
WEIGHT_ONLY = [n for n in names("weight", data_free=True) if "example_inputs" not in get(n).needs]


@pytest.mark.parametrize("criterion", WEIGHT_ONLY)
@pytest.mark.parametrize("scope", ["uniform", "global"])
def test_every_criterion_and_scope_reaches_the_target(criterion, scope):
    model = _mlp()
    pruner = UnstructuredPruner(model, UnstructuredConfig(importance=criterion, allocation=scope))
    got = pruner.prune_to(0.6)
    weights = [model[i].weight for i in (0, 2, 4)]
    total = sum(w.numel() for w in weights)
    assert got == pytest.approx(0.6, abs=1 / total + 1e-9)
    assert sum(_zeros(w) for w in weights) == pytest.approx(0.6 * total, abs=1)
    if scope == "uniform":
        for w in weights:
            assert _zeros(w) == round(0.6 * w.numel())


def test_magnitude_removes_exactly_the_smallest_weights():
    lin = nn.Linear(5, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.1, -5, 0.3, 2, -0.2], [1, -0.05, 4, 0.4, 3]]))
    UnstructuredPruner(nn.Sequential(lin), UnstructuredConfig(importance="l1", allocation="uniform")).prune_to(0.4)
    expected = torch.tensor([[0, -5, 0, 2, 0], [1, 0, 4, 0.4, 3]])  # 0.05, 0.1, 0.2, 0.3 go
    assert torch.equal(lin.weight.detach(), expected)


def test_global_scope_prunes_small_scale_layers_more():
    model = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10))
    with torch.no_grad():
        model[0].weight.mul_(100)  # layer 0 is far larger in scale
    pruner = UnstructuredPruner(model, UnstructuredConfig(allocation="global"))
    pruner.prune_to(0.5)
    ls = pruner.layer_sparsity()
    assert ls["1.weight"] == pytest.approx(0.99)  # all but the one weight a layer always keeps
    assert ls["0.weight"] == pytest.approx(0.01)


def test_random_criterion_is_seeded():
    a, b, c = _mlp(), _mlp(), _mlp()
    b.load_state_dict(a.state_dict())
    c.load_state_dict(a.state_dict())
    for m in (a, b):
        UnstructuredPruner(m, UnstructuredConfig(importance="random", seed=3)).prune_to(0.5)
    assert torch.equal(a[0].weight, b[0].weight)
    UnstructuredPruner(c, UnstructuredConfig(importance="random", seed=4)).prune_to(0.5)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_ratio_dict_scope_and_unmatched_pattern():
    model = _mlp()
    pruner = UnstructuredPruner(model, UnstructuredConfig(allocation="ratios", ratios={"0.*": 0.9, "2.weight": 0.5}))
    pruner.prune_to(0.0)
    ls = pruner.layer_sparsity()
    assert ls["0.weight"] == pytest.approx(0.9) and ls["2.weight"] == pytest.approx(0.5)
    assert ls["4.weight"] == 0.0
    bad = UnstructuredPruner(_mlp(), UnstructuredConfig(allocation="ratios", ratios={"fc.*": 0.5}))
    with pytest.raises(ConfigError, match="fc"):
        bad.prune_to(0.5)


def test_threshold_scope():
    model = _mlp()
    with torch.no_grad():
        small = model[0].weight.abs() < 0.1
    UnstructuredPruner(model, UnstructuredConfig(allocation="threshold", threshold=0.1)).prune_to(0.0)
    assert torch.all(model[0].weight[small] == 0)
    assert torch.all(model[0].weight[~small] != 0)


def test_exclude_and_bias_handling():
    model = _mlp()
    pruner = UnstructuredPruner(model, UnstructuredConfig(allocation="uniform", exclude=("4",)))
    assert pruner.names == ["0.weight", "2.weight"]
    pruner.prune_to(0.5)
    assert _zeros(model[4].weight) == 0
    assert _zeros(model[0].bias) == 0  # biases stay dense by default
    with_bias = UnstructuredPruner(_mlp(), UnstructuredConfig(allocation="uniform", include_bias=True))
    assert "0.bias" in with_bias.names
    with_bias.prune_to(0.5)
    assert _zeros(with_bias.model[0].bias) == 15
    with pytest.raises(ConfigError, match="match no layer"):
        UnstructuredPruner(_mlp(), UnstructuredConfig(exclude=("classifier",)))
    with pytest.raises(ConfigError, match="no prunable layer"):
        UnstructuredPruner(_mlp(), UnstructuredConfig(exclude=("*",)))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "half"])
def test_sparsity_outside_range_is_refused(bad):
    pruner = UnstructuredPruner(_mlp())
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        pruner.prune_to(bad)


def test_unknown_names_list_the_choices():
    # the message lists every weight criterion of the registry, whatever it holds
    with pytest.raises(ConfigError, match=f"unknown criterion 'l3'; choose one of: {', '.join(names('weight'))}$"):
        UnstructuredConfig(importance="l3")
    with pytest.raises(ConfigError, match="'bn_scale' has no weight form .it has only a group form.; "
                                          "choose one of: apoz, bn_folded"):
        UnstructuredConfig(importance="bn_scale")
    with pytest.raises(ConfigError, match="allocation='everywhere' is not one of: uniform, global, ratios, threshold"):
        UnstructuredConfig(allocation="everywhere")
    assert {"uniform", "global", "ratios", "threshold"} <= set(ALLOCATIONS.names())  # each named one is usable


def test_masks_only_shrink_across_steps():
    model = _mlp()
    pruner = UnstructuredPruner(model, UnstructuredConfig(allocation="global"))
    pruner.prune_to(0.7)
    before = {n: m.clone() for n, m in pruner.current_masks().items()}
    with torch.no_grad():  # make pruned weights look important: they must not come back
        for n, p in pruner.parameters().items():
            p.add_(10 * (1 - before[n]))
    pruner.masks.apply_()
    pruner.prune_to(0.5)
    for n, m in pruner.current_masks().items():
        assert torch.all(m <= before[n])


def test_make_permanent_keeps_zeros_and_plain_state_dict():
    model = _mlp()
    keys = set(model.state_dict())
    pruner = UnstructuredPruner(model)
    pruner.prune_to(0.8)
    pruner.make_permanent()
    assert set(model.state_dict()) == keys
    total = sum(model[i].weight.numel() for i in (0, 2, 4))
    assert sum(_zeros(model[i].weight) for i in (0, 2, 4)) == round(0.8 * total)


def test_kth_mask_ties_and_bounds():
    assert kth_mask(torch.zeros(4), 2).tolist() == [0, 0, 1, 1]
    assert kth_mask(torch.ones(3), 10).sum() == 0
    assert kth_mask(torch.ones(3), -1).sum() == 3


def test_schedules_by_formula():
    # iterative: each step keeps the same fraction of what is left
    s = [iterative_sparsity(0.99, k, 2) for k in (1, 2)]
    assert s == pytest.approx([0.9, 0.99])
    assert iterative_sparsity(0.9, 1, 1, start=0.5) == pytest.approx(0.9)
    assert iterative_sparsity(0.96, 1, 2, start=0.84) == pytest.approx(0.92)
    # cubic: s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³
    assert cubic_sparsity(0.8, t=0, t0=10, n=4, dt=5) == 0.0
    assert cubic_sparsity(0.8, t=10, t0=10, n=4, dt=5) == pytest.approx(0.0)
    assert cubic_sparsity(0.8, t=20, t0=10, n=4, dt=5) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    assert cubic_sparsity(0.8, t=100, t0=10, n=4, dt=5) == pytest.approx(0.8)
