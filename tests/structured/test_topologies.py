"""Correctness of structured pruning on small topologies (issue 3, part 4)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from prunekit import Calibration, StructuredConfig
from prunekit.graph import DependencyGraph
from prunekit.importance import names
from prunekit.pruners import select_units
from prunekit.structured import prune_groups, zero_units
from tests.structured.topologies import TOPOLOGIES

TOL = 1e-5


def _build(name: str, batch: int = 2):
    factory, make_input, _ = TOPOLOGIES[name]
    model = factory().eval()
    x = make_input(batch)
    return model, x, DependencyGraph.build(model, x)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / max(1.0, float(a.abs().max())))


def _predicted_params(graph: DependencyGraph, plan) -> int:
    """Parameter count predicted from the plan: every member dim loses its removed positions."""
    kept = {name: list(t.shape) for name, t in graph.tensors.items() if name not in graph.buffers}
    for gname, idx in plan.items():
        g = graph.group(gname)
        for m in g.members:
            if m.name in kept:
                kept[m.name][m.dim] -= int(np.isin(m.unit, idx).sum())
    return sum(int(np.prod(s)) for s in kept.values())


#: group criteria that need no data; bn_scale too, but most topologies have no norm layer for it to read
DATA_FREE = [n for n in names("group", data_free=True) if n != "bn_scale"]


@pytest.mark.parametrize("criterion", DATA_FREE)
@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_pruned_equals_zeroed(name: str, criterion: str) -> None:
    model, x, graph = _build(name)
    assert graph.prunable_groups(), graph.summary()
    reference = copy.deepcopy(model)
    plan = select_units(graph, StructuredConfig(sparsity=0.5, importance=criterion))
    assert plan
    zero_units(graph, plan, reference)
    predicted = _predicted_params(graph, plan)
    before = sum(p.numel() for p in model.parameters())
    prune_groups(graph, plan)
    after = sum(p.numel() for p in model.parameters())
    assert after == predicted < before
    with torch.no_grad():
        assert _rel(reference(x), model(x)) <= TOL


#: classifiers (logits out) whose every group has a layer reading its channels: the data-driven criteria score
#: them all (grouped convolutions and attention heads are not read channel by channel, so activation criteria
#: refuse those groups with a message naming them)
CLASSIFIERS = ["residual", "concat", "split_chunk", "depthwise", "channel_shuffle", "flatten_linear",
               "vit_free_params", "gated_split_unequal", "weight_standardised"]


@pytest.mark.parametrize("criterion", names("group", data_free=False))
@pytest.mark.parametrize("name", CLASSIFIERS)
def test_data_criteria_choose_units_whose_removal_equals_zeroing(name: str, criterion: str) -> None:
    model, x, graph = _build(name, batch=8)
    with torch.no_grad():
        classes = model(x).shape[1]
    y = torch.randint(0, classes, (8,), generator=torch.Generator().manual_seed(0))
    before = copy.deepcopy(model.state_dict())
    plan = select_units(graph, StructuredConfig(sparsity=0.5, importance=criterion), Calibration(x, y, batch_size=4))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # scoring changed nothing
    assert plan
    reference = copy.deepcopy(model)
    zero_units(graph, plan, reference)
    prune_groups(graph, plan)
    with torch.no_grad():
        assert _rel(reference(x), model(x)) <= TOL


@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_zero_groups_leave_output_unchanged(name: str) -> None:
    """(a): units whose weights are all zero can be removed without changing the output."""
    model, x, graph = _build(name)
    plan = select_units(graph, StructuredConfig(sparsity=0.4, importance="random"))
    zero_units(graph, plan)  # zero them in the model itself
    with torch.no_grad():
        before = model(x)
    prune_groups(graph, plan)
    with torch.no_grad():
        assert _rel(before, model(x)) <= TOL


@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_train_step_batches_and_twice(name: str) -> None:
    """(c) forward/backward/step, (d) pruning twice, (e) train mode and other batch sizes."""
    model, x, graph = _build(name)
    prune_groups(graph, select_units(graph, StructuredConfig(sparsity=0.5)))
    reference = copy.deepcopy(model)
    plan2 = select_units(graph, StructuredConfig(sparsity=0.3, importance="l1"))
    zero_units(graph, plan2, reference)
    prune_groups(graph, plan2)
    with torch.no_grad():
        assert _rel(reference(x), model(x)) <= TOL
    _, make_input, _ = TOPOLOGIES[name]
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for batch in (1, 5):
        out = model(make_input(batch))
        assert out.shape[0] == batch
        loss = out.float().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_heads_are_pruned_whole_and_attribute_rewritten() -> None:
    model, x, graph = _build("vit_free_params")
    heads = [g for g in graph.groups if g.name == "attn.qkv"]
    assert len(heads) == 1 and heads[0].size == 4  # 4 heads, 8 features each
    prune_groups(graph, {"attn.qkv": [1, 2]})
    assert model.attn.num_heads == 2 and model.attn.attn_dim == 16
    assert model.attn.qkv.weight.shape == (3 * 16, 32) and model.attn.proj.weight.shape == (32, 16)


def test_gqa_prunes_key_value_groups() -> None:
    model, x, graph = _build("gqa")
    g = graph.group("q")
    assert g.size == 2  # one unit per key/value head, carrying its 2 query heads
    prune_groups(graph, {"q": [0]})
    assert model.q.weight.shape[0] == 16 and model.k.weight.shape[0] == 8 and model.o.weight.shape[1] == 16


def test_tied_weight_sliced_once() -> None:
    model, x, graph = _build("tied_weights")
    hidden = [g for g in graph.groups if any(m.name == "emb.weight" and m.dim == 1 for m in g.members)]
    assert len(hidden) == 1 and hidden[0].prunable == 24
    prune_groups(graph, {hidden[0].name: list(range(10))})
    assert model.out.weight is model.emb.weight and model.emb.weight.shape == (40, 14)
    assert model.fc1.in_features == 14 and model.fc2.out_features == 14


def test_mha_heads_prune_while_input_width_stays_pinned() -> None:
    model, x, graph = _build("mha")
    assert graph.group("mha.in_proj_weight").prunable == 4  # one unit per head: q, k, v rows + out_proj columns
    assert graph.group("mha.out_proj").prunable == 0  # the residual is the model input
    assert graph.group("fc1").prunable == 48
    prune_groups(graph, {"mha.in_proj_weight": [0, 3]})
    assert isinstance(model.mha, torch.nn.MultiheadAttention) and model.mha.num_heads == 2
    assert model.mha.in_proj_weight.shape == (48, 32) and model.mha.out_proj.weight.shape == (32, 16)


def test_group_conv_keeps_groups_equal() -> None:
    model, x, graph = _build("group_conv")
    prune_groups(graph, select_units(graph, StructuredConfig(sparsity=0.5)))
    conv = model.g[0]
    assert conv.groups == 4 and conv.in_channels % 4 == 0 and conv.out_channels % 4 == 0
    assert conv.in_channels == 8 and conv.out_channels == 12


def test_round_to_keeps_multiples() -> None:
    model, x, graph = _build("residual")
    plan = select_units(graph, StructuredConfig(sparsity=0.3, round_to=8))
    prune_groups(graph, plan)
    assert model.a[0].out_channels % 8 == 0 and model.stem[0].out_channels % 8 == 0


def test_outputs_never_change_shape() -> None:
    for name in TOPOLOGIES:
        model, x, graph = _build(name)
        with torch.no_grad():
            shape = model(x).shape
        prune_groups(graph, select_units(graph, StructuredConfig(sparsity=0.9)))
        with torch.no_grad():
            assert model(x).shape == shape, name


@pytest.mark.parametrize("name", ["residual", "concat", "vit_free_params", "gqa"])
def test_global_scope(name: str) -> None:
    model, x, graph = _build(name)
    reference = copy.deepcopy(model)
    plan = select_units(graph, StructuredConfig(sparsity=0.5, allocation="global"))
    total = sum(g.size for g in graph.prunable_groups())
    removed = sum(len(v) for v in plan.values())
    assert 0 < removed <= 0.5 * total + 1
    zero_units(graph, plan, reference)
    prune_groups(graph, plan)
    with torch.no_grad():
        assert _rel(reference(x), model(x)) <= TOL


def test_prune_reports_sizes() -> None:
    from prunekit import StructuredConfig, prune_

    model = TOPOLOGIES["residual"][0]().eval()
    res = prune_(model, StructuredConfig(sparsity=0.5), example_inputs=torch.randn(2, 3, 16, 16))
    assert res.params_after == sum(p.numel() for p in model.parameters()) < res.params_before
    assert 0 < res.macs_after < res.macs_before and res.removed


@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_every_pin_says_why(name: str) -> None:
    _, _, graph = _build(name)
    for g in graph.groups:
        assert g.reasons if g.prunable < g.size else not g.reasons, (g, g.reasons)


def test_unequal_split_sizes_held_by_the_module_are_rewritten() -> None:
    """MambaOut: unit j couples fc1 rows j and 24+j (gate and value), fc2 column j and, past 16, a conv channel."""
    model, x, graph = _build("gated_split_unequal")
    g = graph.group("fc1")
    assert g.size == 24 and g.prunable == 24 and g.exact
    rows = next(m for m in g.members if m.name == "fc1.weight" and m.dim == 0).unit
    assert (rows[:24] == rows[24:]).all()
    prune_groups(graph, {"fc1": [0, 1, 20]})  # two gate/identity units, one gate/conv unit
    assert model.split_indices == (21, 14, 7) and model.conv.out_channels == 7 and model.conv.groups == 7
    assert model.fc1.out_features == 42 and model.fc2.in_features == 21


def test_unequal_literal_split_is_pinned_with_a_reason() -> None:
    class Glu(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(8, 24), torch.nn.Linear(12, 8)

        def forward(self, x):
            g, i, c = torch.split(self.fc1(x), [12, 8, 4], -1)  # literal sizes: nothing can rewrite them
            return x + self.fc2(torch.relu(g) * torch.cat((i, c), -1))

    graph = DependencyGraph.build(Glu().eval(), torch.randn(2, 8))
    g = graph.group("fc1")
    assert g.prunable == 0 and any("unequal pieces" in r for r in g.reasons)


def test_weight_standardised_conv_inputs_are_inexact() -> None:
    """Removing a standardised conv's output channel is exact; removing an input channel shifts its filters' stats."""
    model, x, graph = _build("weight_standardised")
    a, b = graph.group("a"), graph.group("b")
    assert a.prunable == 16 and not a.exact and b.prunable == 12 and b.exact
    assert any(m.name == "a.gain" for m in a.members) and any(m.name == "b.gain" for m in b.members)
    reference = copy.deepcopy(model)
    plan = select_units(graph, StructuredConfig(sparsity=0.5, exact_only=False))
    assert set(plan) == {"a", "b"}
    zero_units(graph, {"b": plan["b"]}, reference)
    prune_groups(graph, {"b": plan["b"]})
    with torch.no_grad():
        assert _rel(reference(x), model(x)) <= TOL
    prune_groups(graph, {"a": plan["a"]})
    assert model.a.out_channels == model.b.in_channels == 8 and model.a.gain.shape == (8, 1, 1, 1)
    assert model(x).shape == reference(x).shape
