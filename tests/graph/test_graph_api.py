"""prunekit.graph as a lower layer: read-only public API, no dependence on structured, fallbacks counted."""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import prunekit.graph as G
from prunekit.cli.main import main
from prunekit.pruners import check_model
from prunekit.structured import prune_groups


class Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn, self.conv2 = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 3)

    def forward(self, x):
        return self.conv2(F.relu(self.bn(self.conv1(x))))


class Branchy(Plain):
    """A Python branch on a conv output: shape-only runs cannot decide it and must run for real."""

    def forward(self, x):
        out = super().forward(x)
        if out.amax() > -1e9:  # always true, but only a real forward knows
            out = out * 2.0
        return out


def branchy() -> nn.Module:  # a factory for `prunekit check test_graph_api:branchy`
    torch.manual_seed(0)
    return Branchy()


def _graph(model: nn.Module) -> G.DependencyGraph:
    return G.DependencyGraph.build(model.eval(), torch.randn(2, 3, 12, 12))


def test_graph_exposes_read_only_views():
    graph = _graph(Plain())
    g = graph.group("conv1")
    with pytest.raises(TypeError, match="does not support item assignment"):
        graph.tensors["conv1.weight"] = torch.zeros(1)
    with pytest.raises(TypeError, match="does not support item assignment"):
        graph.pin_reasons["mine"] = 1
    with pytest.raises(AttributeError, match="'tuple' object has no attribute 'append'"):
        graph.groups.append(g)
    with pytest.raises(AttributeError, match="n_ids|can't set attribute"):
        graph.n_ids = 0
    with pytest.raises(AttributeError, match="model|can't set attribute"):
        graph.model = Plain()
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'name'"):
        g.name = "other"
    with pytest.raises(ValueError, match="read-only"):
        g.units[0] = 5
    with pytest.raises(ValueError, match="read-only"):
        g.members[0].unit[0] = 5
    assert isinstance(graph.buffers, frozenset) and "bn.running_mean" in graph.buffers
    assert graph.tensors["conv1.weight"] is graph.model.conv1.weight


def test_record_removal_renumbers_groups_and_reads_tensors_back():
    model = Plain()
    graph = _graph(model)
    g = graph.group("conv1")
    prune_groups(graph, {"conv1": [0, 3, 5]})
    assert graph.group("conv1") is g and g.size == 5 and sorted(m.unit.max() for m in g.members)[-1] == 4
    assert tuple(graph.tensors["conv1.weight"].shape) == (5, 3, 3, 3)
    assert graph.tensors["conv2.weight"] is model.conv2.weight and model.conv2.weight.shape[1] == 5
    with pytest.raises(ValueError, match=rf"bool mask of shape \({graph.n_ids},\)"):
        graph.record_removal(np.zeros(3, dtype=bool))


def test_graph_does_not_import_structured_and_groups_do_not_depend_on_import_order():
    script = """
import sys, torch
from torch import nn
import prunekit.graph as G
class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]
def groups():
    torch.manual_seed(0)
    return sorted((x.name, x.size, x.prunable) for x in G.DependencyGraph.build(M(), torch.randn(2, 5, 16)).groups)
first = groups()
print(sorted(m for m in sys.modules if m.startswith("prunekit.structured")))
import prunekit.structured
print(first == groups())
print(first)
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    loaded, same, groups = res.stdout.splitlines()
    assert loaded == "[]"  # building a graph loads nothing of structured
    assert same == "True"  # and importing structured changes no group
    assert "('attn.in_proj_weight', 4, 4)" in groups  # the four heads, seen through the replacement layer


def test_shape_only_fallbacks_are_logged_and_counted(caplog):
    with caplog.at_level(logging.DEBUG, logger="prunekit.graph"):
        plain = _graph(Plain())
        assert plain.shape_only_fallbacks == 0 and not caplog.records
        graph = _graph(Branchy())
    assert graph.shape_only_fallbacks == 1
    assert graph.fallback_reasons[0].startswith("capture: a value computed from skipped arithmetic was needed (bool)")
    assert len(caplog.records) == 1 and "repeated as a real forward" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="prunekit.graph"):
        prune_groups(graph, {"conv1": [1, 2]})  # the pruned model's check runs shape-only too
    assert graph.shape_only_fallbacks == 2 and graph.fallback_reasons[1].startswith("forward: ")
    assert len(caplog.records) == 1


def test_shape_only_forward_reports_its_fallback():
    seen: list[str] = []
    out = G.shape_only_forward(Branchy().eval(), (torch.randn(1, 3, 8, 8),), {}, on_fallback=seen.append)
    assert len(seen) == 1 and "bool" in seen[0] and tuple(out.shape) == (1, 4, 4, 4)
    assert G.shape_only_forward(Plain().eval(), (torch.randn(1, 3, 8, 8),), {}, on_fallback=seen.append) is not None
    assert len(seen) == 1


def test_check_reports_the_fallbacks(capsys):
    rep = check_model("branchy", branchy().eval(), torch.randn(2, 3, 12, 12), latency=False)
    assert rep.ok and rep.shape_only_fallbacks == 2  # capture, and the pruned model's shape check
    assert [r.split(":")[0] for r in rep.fallback_reasons] == ["capture", "forward"]
    plain = check_model("plain", Plain().eval(), torch.randn(2, 3, 12, 12), latency=False)
    assert plain.ok and plain.shape_only_fallbacks == 0 and plain.fallback_reasons == []

    assert main(["check", "test_graph_api:branchy", "--image-size", "12", "--no-latency", "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert json.loads(out[-1])["shape_only_fallbacks"] == 2
    line = next(ln for ln in out if ln.startswith("fallbacks"))
    assert line.startswith("fallbacks  2 shape-only runs repeated as real forwards: capture: ")


def test_models_pickled_with_the_old_class_path_still_load():
    import pickle

    mha = nn.MultiheadAttention(8, 2)
    mha.__class__ = G.PrunedMultiheadAttention
    new = pickle.dumps(mha, protocol=0)
    old = new.replace(b"prunekit.graph.replacements.attention", b"prunekit.structured.layers.attention")
    assert old != new  # the old module path is in the pickle, and resolves to the same class
    back = pickle.loads(old)
    assert type(back) is G.PrunedMultiheadAttention and torch.equal(back.in_proj_weight, mha.in_proj_weight)
