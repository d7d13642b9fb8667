"""Sparse CPU kernels: replaced only where measured faster, outputs equal to the masked model's, every
decision recorded; block granularities give BSR-shaped masks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.export import KERNELS, SparseLinear, sparsify_for_cpu
from prunekit.export.sparse import SparseConv1x1, bsr_blocksize
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 128), nn.ReLU(),
                         nn.Linear(128, 10))


@pytest.mark.parametrize("kernel", KERNELS.names())
def test_every_kernel_computes_the_dense_layer(kernel):
    dense = nn.Linear(64, 32)
    cfg = UnstructuredConfig(allocation="uniform", granularity="block8x8")
    UnstructuredPruner(nn.Sequential(dense), cfg).prune_to(0.75)
    sparse = SparseLinear(dense.weight, dense.bias, kernel, blocksize=8)
    x = torch.randn(5, 3, 64)  # leading dims kept, as for a transformer's (batch, tokens, features)
    x1 = torch.randn(1, 64)  # one row: the matrix-vector path of addmv
    with torch.no_grad():
        assert torch.allclose(sparse(x), dense(x), atol=1e-5)
        assert sparse(x1).shape == (1, 32) and torch.allclose(sparse(x1), dense(x1), atol=1e-5)
    assert sparse.weight.col_indices().dtype == torch.int32  # MKL's index type: no conversion per call


@pytest.mark.parametrize("batch", [1, 64])
def test_sparse_model_equals_masked_model_and_records_every_decision(batch):
    model = _mlp()
    pruner = UnstructuredPruner(model, UnstructuredConfig(allocation="uniform", exclude=("5",)))
    pruner.prune_to(0.95)
    x = torch.randn(8, 16, 16)
    res = sparsify_for_cpu(model, batch, x, repeats=5)
    assert [d.layer for d in res.decisions] == ["1", "3"]  # the dense last layer is not a candidate
    for d in res.decisions:
        assert d.batch == batch and d.sparsity == pytest.approx(0.95, abs=1e-3) and d.kind == "linear"
        # no square block pattern: no BSR tried; the matrix-vector kernel only at batch 1
        assert set(d.kernels_ms) == {"csr_addmm", "csr_linear"} | ({"csr_addmv"} if batch == 1 else set())
        assert d.sparse_ms == min(d.kernels_ms.values()) and d.kernel in d.kernels_ms
        assert (d.chosen != "dense") == (d.sparse_ms < d.dense_ms)  # chosen exactly where measured faster
        assert isinstance(res.model.get_submodule(d.layer), SparseLinear) == (d.chosen != "dense" and res.applied)
    chosen = [d.layer for d in res.decisions if d.chosen != "dense"]
    assert res.decisions[0].shape == (512, 256) and res.replaced() == (chosen if res.applied else [])
    if chosen:  # the whole model was timed both ways, and the sparse layers kept only if that was faster
        assert res.applied == (res.sparse_ms < res.dense_ms)
    else:
        assert res.dense_ms is None and not res.applied
    with torch.no_grad():
        assert torch.allclose(res.model(x), model(x), atol=1e-5) and res.max_abs_diff <= 1e-5
    assert hasattr(model[1], "weight_mask") and isinstance(model[1], nn.Linear)  # the masked model is untouched


def test_pointwise_convs_with_block_sparsity_try_bsr_and_match():
    model = nn.Sequential(nn.Conv2d(32, 64, 1), nn.ReLU(), nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(32, 32, 1, bias=False))
    UnstructuredPruner(model, UnstructuredConfig(allocation="uniform", granularity="block16x16")).prune_to(0.5)
    x = torch.randn(2, 32, 6, 6)
    res = sparsify_for_cpu(model, 2, x, kernels=["bsr_addmm", "bsr_linear"], repeats=3)
    assert [d.layer for d in res.decisions] == ["0", "4"]  # the 3×3 conv is not a candidate
    assert all(d.kind == "conv1x1" and d.kernel.startswith("bsr") and d.blocksize == 16 for d in res.decisions)
    for d in res.decisions:
        assert isinstance(res.model.get_submodule(d.layer), SparseConv1x1) == (d.chosen != "dense" and res.applied)
    with torch.no_grad():
        assert torch.allclose(res.model(x), model(x), atol=1e-5)


def test_not_sparse_enough_layers_are_left_alone_and_bad_arguments_named():
    model = _mlp()
    UnstructuredPruner(model, UnstructuredConfig(allocation="uniform")).prune_to(0.3)
    res = sparsify_for_cpu(model, 1, torch.randn(2, 256), min_sparsity=0.5)
    assert res.decisions == [] and res.replaced() == []
    with pytest.raises(ConfigError, match="unknown sparse kernel 'coo'"):
        sparsify_for_cpu(model, 1, torch.randn(2, 256), kernels=["coo"])
    with pytest.raises(ConfigError, match="batch_size"):
        sparsify_for_cpu(model, 0, torch.randn(2, 256))


@pytest.mark.parametrize("name,block", [("block1x8", (1, 8)), ("block4x4", (4, 4)), ("block16x16", (16, 16))])
def test_block_granularities_prune_whole_tiles(name, block):
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Conv2d(32, 64, 1))
    pruner = UnstructuredPruner(model, UnstructuredConfig(allocation="uniform", granularity=name))
    assert pruner.prune_to(0.75) == pytest.approx(0.75)
    r, c = block
    for w in (model[0].weight.detach(), model[2].weight.detach().reshape(64, 32)):
        tiles = (w != 0).reshape(w.shape[0] // r, r, w.shape[1] // c, c).float()
        alive = tiles.amax(dim=(1, 3))
        assert torch.equal(tiles.amin(dim=(1, 3)), alive)  # every tile is all zero or all kept
        assert 1 - alive.mean().item() == pytest.approx(0.75)
    if r == c:
        assert bsr_blocksize(model[0].weight.detach(), 0.7) == r if r > 1 else True


def test_block_granularity_on_sides_that_are_not_multiples():
    layer = nn.Linear(300, 100)
    cfg = UnstructuredConfig(allocation="uniform", granularity="block16x16")
    UnstructuredPruner(nn.Sequential(layer), cfg).prune_to(0.9)
    w = layer.weight.detach()
    assert 0.8 <= (w == 0).float().mean().item() <= 0.95
    inner = (w[:96, :288] != 0).reshape(6, 16, 18, 16).float()
    assert torch.equal(inner.amin(dim=(1, 3)), inner.amax(dim=(1, 3)))


def test_sparse_layers_are_dropped_when_the_whole_model_is_not_faster(monkeypatch):
    from types import SimpleNamespace

    from prunekit.export import sparse as sparse_mod

    def fake(runners, **_k):  # every layer faster sparse, the whole model slower sparse
        whole = isinstance(runners["dense"].func, nn.Sequential)
        return {k: SimpleNamespace(cpu_ms=(1.0 if whole else 2.0) if k == "dense" else (1.5 if whole else 1.0))
                for k in runners}

    monkeypatch.setattr(sparse_mod, "time_runners", fake)
    model = _mlp()
    UnstructuredPruner(model, UnstructuredConfig(allocation="uniform")).prune_to(0.9)
    res = sparsify_for_cpu(model, 4, torch.randn(2, 256))
    assert all(d.chosen != "dense" for d in res.decisions) and len(res.decisions) == 3
    assert not res.applied and res.replaced() == [] and (res.dense_ms, res.sparse_ms) == (1.0, 1.5)
    assert not any(isinstance(m, SparseLinear) for m in res.model.modules())
    x = torch.randn(3, 256)
    with torch.no_grad():
        assert torch.equal(res.model(x), model(x))  # the masked model's weights, dense kernels
