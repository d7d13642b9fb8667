"""Attention heads of ``nn.MultiheadAttention`` and torchvision's Swin: replacement layers, head groups.

The generic properties (pruned == zeroed, zero units removable, train step, pruning twice, other
batch sizes) run over the MHA and Swin models of ``topologies.py`` in ``test_topologies.py``; the
save/load round trips are in ``test_serialize.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.errors import PruningError
from prunekit.graph import DependencyGraph
from prunekit.pruners import StructuredConfig, select_units
from prunekit.structured import prune_groups, zero_units
from prunekit.structured.layers import PrunedMultiheadAttention
from tests.structured.topologies import TOPOLOGIES, tv_swin, tv_vit

TOL = 1e-5


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / max(1.0, float(a.abs().max())))


def _as_replacement(mha: nn.MultiheadAttention) -> nn.MultiheadAttention:
    twin = copy.deepcopy(mha)
    twin.__class__ = PrunedMultiheadAttention
    return twin


L, S, N = 5, 7, 3
_bool_causal = torch.triu(torch.ones(L, L, dtype=torch.bool), 1)
_float_mask = torch.randn(L, S)
_bool_mask = torch.zeros(L, S, dtype=torch.bool)
_bool_mask[:, 0] = True
_pad = torch.zeros(N, S, dtype=torch.bool)
_pad[:, -2:] = True

# (MultiheadAttention kwargs, call kwargs, self-attention?)
CASES = {
    "packed_self": ({}, {}, True),
    "no_bias_seq_first_per_head": ({"bias": False, "batch_first": False}, {"average_attn_weights": False}, True),
    "bias_kv_zero_attn": ({"add_bias_kv": True, "add_zero_attn": True}, {"key_padding_mask": _pad}, False),
    "kdim_vdim": ({"kdim": 12, "vdim": 6}, {"attn_mask": _float_mask}, False),
    "masks_no_weights": ({}, {"attn_mask": _bool_mask, "key_padding_mask": _pad, "need_weights": False}, False),
    "causal_hint_sdpa": ({}, {"attn_mask": _bool_causal, "is_causal": True, "need_weights": False}, True),
    "causal_hint_weights": ({}, {"attn_mask": _bool_causal, "is_causal": True}, True),
}


def _inputs(kw: dict, self_attn: bool, batched: bool = True):
    e, kd, vd = 16, kw.get("kdim", 16), kw.get("vdim", 16)
    seq_first = not kw.get("batch_first", True)

    def make(length: int, width: int) -> torch.Tensor:
        if not batched:
            return torch.randn(length, width)
        return torch.randn(length, N, width) if seq_first else torch.randn(N, length, width)

    q = make(L, e)
    if self_attn:
        return q, q, q
    return q, make(S, kd), make(S, vd)


@pytest.mark.parametrize("case", list(CASES))
def test_replacement_matches_stock(case: str) -> None:
    """Same outputs and attention weights as ``nn.MultiheadAttention`` (eval, and train with dropout)."""
    kw, call, self_attn = CASES[case]
    kw = dict(kw)
    batch_first = kw.pop("batch_first", True)
    stock = nn.MultiheadAttention(16, 4, dropout=0.2, batch_first=batch_first, **kw)
    twin = _as_replacement(stock)
    q, k, v = _inputs({**kw, "batch_first": batch_first}, self_attn)
    for train in (False, True):
        stock.train(train)
        twin.train(train)
        torch.manual_seed(1)
        want = stock(q, k, v, **call)
        torch.manual_seed(1)
        got = twin(q, k, v, **call)
        for a, b in zip(want, got, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                assert a.shape == b.shape and _rel(a, b) <= TOL, (case, train)


def test_replacement_matches_stock_unbatched() -> None:
    stock = nn.MultiheadAttention(16, 4, kdim=12, vdim=6, batch_first=True).eval()
    twin = _as_replacement(stock)
    q, k, v = _inputs({"kdim": 12, "vdim": 6}, False, batched=False)
    for kwargs in ({}, {"key_padding_mask": _pad[0], "average_attn_weights": False}):
        for a, b in zip(stock(q, k, v, **kwargs), twin(q, k, v, **kwargs), strict=True):
            assert a.shape == b.shape and _rel(a, b) <= TOL


def test_recording_leaves_the_stock_class() -> None:
    model, x = TOPOLOGIES["mha"][0]().eval(), TOPOLOGIES["mha"][1](2)
    graph = DependencyGraph.build(model, x)
    assert type(model.mha) is nn.MultiheadAttention and graph.group("mha.in_proj_weight").size == 4


def test_torchvision_vit_heads_removed() -> None:
    model, x = tv_vit().eval(), torch.randn(2, 3, 32, 32)
    graph = DependencyGraph.build(model, x)
    heads = [g for g in graph.prunable_groups() if g.name.endswith("self_attention.in_proj_weight")]
    assert [g.size for g in heads] == [4, 4]
    plan = {g.name: [0, 2] for g in heads}
    reference = copy.deepcopy(model)
    zero_units(graph, plan, reference)
    before = sum(p.numel() for p in model.parameters())
    prune_groups(graph, plan)
    per_layer = 2 * 16 * (3 * 64 + 3 + 64)  # 2 heads of 16: q/k/v rows and biases, out_proj columns
    assert sum(p.numel() for p in model.parameters()) == before - 2 * per_layer
    for layer in model.encoder.layers:
        attn = layer.self_attention
        assert isinstance(attn, nn.MultiheadAttention) and type(attn) is PrunedMultiheadAttention
        assert (attn.num_heads, attn.head_dim, attn.embed_dim) == (2, 16, 64)
        assert attn.in_proj_weight.shape == (96, 64) and attn.out_proj.weight.shape == (64, 32)
    with torch.no_grad():
        assert _rel(reference(x), model(x)) <= TOL
        assert model(torch.randn(5, 3, 32, 32)).shape == (5, 1000)
    again = DependencyGraph.build(model, x)  # a pruned model records again, heads of 2
    assert [g.size for g in again.prunable_groups() if g.name.endswith("in_proj_weight")] == [2, 2]


class _Weights(nn.Module):
    """Attention weights averaged over heads are returned: they change when a head is removed."""

    def __init__(self, average: bool) -> None:
        super().__init__()
        self.inp, self.mha, self.average = nn.Linear(8, 16), nn.MultiheadAttention(16, 4, batch_first=True), average

    def forward(self, x):
        h = self.inp(x)
        out, w = self.mha(h, h, h, average_attn_weights=self.average)
        return out, w


def test_head_averaged_weights_are_inexact_and_per_head_weights_pinned() -> None:
    x = torch.randn(2, 5, 8)
    averaged = DependencyGraph.build(_Weights(True).eval(), x).group("mha.in_proj_weight")
    assert averaged.prunable == 4 and not averaged.exact  # pruned only with exact_only=False
    per_head = DependencyGraph.build(_Weights(False).eval(), x).group("mha.in_proj_weight")
    assert per_head.prunable == 0  # the per-head weights are a model output


class _PerHeadMask(nn.Module):
    def __init__(self, random: bool) -> None:
        super().__init__()
        self.inp, self.mha, self.random = nn.Linear(8, 16), nn.MultiheadAttention(16, 4, batch_first=True), random

    def forward(self, x):
        h = self.inp(x)
        shape = (x.shape[0] * self.mha.num_heads, x.shape[1], x.shape[1])  # (N * num_heads, L, S): one per head
        mask = torch.randn(shape, generator=torch.Generator().manual_seed(0)) if self.random else torch.zeros(shape)
        return self.mha(h, h, h, attn_mask=mask, need_weights=False)[0]


def test_attn_mask_per_head_pins_heads_unless_the_same_for_all() -> None:
    x = torch.randn(2, 5, 8)
    assert DependencyGraph.build(_PerHeadMask(True).eval(), x).group("mha.in_proj_weight").prunable == 0
    model = _PerHeadMask(False).eval()
    graph = DependencyGraph.build(model, x)  # zeros sized by num_heads (as T5's position bias): prunable
    reference = copy.deepcopy(model)
    zero_units(graph, {"mha.in_proj_weight": [2]}, reference)
    prune_groups(graph, {"mha.in_proj_weight": [2]})
    with torch.no_grad():
        assert model.mha.num_heads == 3 and _rel(reference(x), model(x)) <= TOL


def test_encoder_fast_path_stays_off_after_pruning() -> None:
    factory, make_input, _ = TOPOLOGIES["transformer_encoder"]
    model, x = factory().eval(), make_input(3)
    graph = DependencyGraph.build(model, x)
    reference = copy.deepcopy(model)
    plan = {g.name: [1] for g in graph.prunable_groups() if g.name.endswith("in_proj_weight")}
    zero_units(graph, plan, reference)
    prune_groups(graph, plan)
    attn = model.enc.layers[0].self_attn
    assert attn.num_heads == 3 and attn._qkv_same_embed_dim is False
    with torch.inference_mode():  # where nn.TransformerEncoderLayer would take its fused path
        assert _rel(reference(x), model(x)) <= TOL


def test_failed_pruning_restores_the_class(monkeypatch) -> None:
    import prunekit.structured.apply as apply

    model, x = TOPOLOGIES["mha"][0]().eval(), TOPOLOGIES["mha"][1](2)
    graph = DependencyGraph.build(model, x)

    def broken(graph):
        raise RuntimeError("made up")

    monkeypatch.setattr(apply, "_verify", broken)
    with pytest.raises(PruningError, match="failed to run in .*RuntimeError: made up; the model was left unchanged"):
        prune_groups(graph, {"mha.in_proj_weight": [1]})
    assert type(model.mha) is nn.MultiheadAttention and model.mha.num_heads == 4
    assert model.mha.in_proj_weight.shape == (96, 32)


def test_global_scope_prunes_heads_and_mlp() -> None:
    model, x = tv_vit().eval(), torch.randn(2, 3, 32, 32)
    graph = DependencyGraph.build(model, x)
    reference = copy.deepcopy(model)
    plan = select_units(graph, StructuredConfig(sparsity=0.5, allocation="global"))
    zero_units(graph, plan, reference)
    prune_groups(graph, plan)
    with torch.no_grad():
        assert _rel(reference(x), model(x)) <= TOL


@pytest.mark.parametrize("v2", [False, True])
def test_torchvision_swin_heads_removed(v2: bool) -> None:
    """Swin's window attention derives head_dim from its input width; the replacement from its weights."""
    from torchvision.models.swin_transformer import ShiftedWindowAttention

    model, x = tv_swin(v2).eval(), torch.randn(2, 3, 32, 32)
    graph = DependencyGraph.build(model, x)
    heads = [g for g in graph.prunable_groups() if any(m.name.endswith("attn.qkv.weight") for m in g.members)]
    assert [g.size for g in heads] == [2, 2, 4, 4] and all(g.exact for g in heads)  # v2: cosine attention too
    plan = {g.name: [0] if g.size == 2 else [1, 3] for g in heads}
    reference = copy.deepcopy(model)
    zero_units(graph, plan, reference)
    prune_groups(graph, plan)
    attn = model.features[3][1].attn
    assert isinstance(attn, ShiftedWindowAttention) and type(attn).__name__.startswith("Pruned")
    assert attn.num_heads == 2 and attn.qkv.weight.shape == (3 * 32, 64) and attn.proj.weight.shape == (64, 32)
    assert model.features[1][0].attn.num_heads == 1
    with torch.no_grad():
        assert _rel(reference(x), model(x)) <= TOL


@pytest.mark.slow
def test_vit_b_16_half_the_heads_equivalent() -> None:
    """Full-size vit_b_16, 6 of 12 heads left in every layer (its zero-initialised classifier re-drawn)."""
    from torchvision.models import vit_b_16

    model, x = vit_b_16().eval(), torch.randn(1, 3, 224, 224)
    nn.init.normal_(model.heads.head.weight)
    graph = DependencyGraph.build(model, x)
    heads = {g.name for g in graph.prunable_groups() if g.name.endswith("self_attention.in_proj_weight")}
    plan = {k: v for k, v in select_units(graph, StructuredConfig(sparsity=0.5)).items() if k in heads}
    reference = copy.deepcopy(model)
    zero_units(graph, plan, reference)
    before = sum(p.numel() for p in model.parameters())
    prune_groups(graph, plan)
    assert len(plan) == 12 and all(layer.self_attention.num_heads == 6 for layer in model.encoder.layers)
    assert before - sum(p.numel() for p in model.parameters()) == 12 * 6 * 64 * (4 * 768 + 3)
    with torch.no_grad():
        assert _rel(reference(x), model(x)) <= TOL
