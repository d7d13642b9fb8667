"""Mask shapes: element, vector, kernel, filter and N:M; N:M errors, training and export."""

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner
from prunekit.pruners.granularity import GRANULARITIES, is_nm, nm_mask
from prunekit.pruners.nm import pack_nm, unpack_nm


def _cnn():
    return nn.Sequential(nn.Conv2d(4, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.ReLU(),
                         nn.Linear(16, 4))


# block granularities have smaller edge tiles on these small layers, so their per-layer weight sparsity is
# off the group target; tests/test_export_sparse.py checks them on layers that are multiples of the block
@pytest.mark.parametrize("name", [g for g in GRANULARITIES.names() if g != "nm" and not g.startswith("block")])
def test_every_granularity_reaches_the_target_per_layer(name):
    model = _cnn()
    pruner = UnstructuredPruner(model, UnstructuredConfig(allocation="uniform", granularity=name))
    assert pruner.prune_to(0.5) == pytest.approx(0.5)
    for n, s in pruner.layer_sparsity().items():
        assert s == pytest.approx(0.5), n


def _zero_groups(w, dims):
    """How many groups (summed over ``dims``) are entirely zero, and how many are partly zero."""
    nz = (w != 0).float()
    alive = nz.amax(dim=dims) if dims else nz
    full = nz.amin(dim=dims) if dims else nz
    return int((alive == 0).sum()), int(((alive > 0) & (full == 0)).sum())


@pytest.mark.parametrize("name,dims,groups", [("vector", (3,), 8 * 4 * 3), ("kernel", (2, 3), 8 * 4),
                                              ("filter", (1, 2, 3), 8)])
def test_group_granularities_zero_whole_groups_only(name, dims, groups):
    model = _cnn()
    UnstructuredPruner(model, UnstructuredConfig(allocation="uniform", granularity=name)).prune_to(0.5)
    dead, partial = _zero_groups(model[0].weight.detach(), dims)
    assert (dead, partial) == (groups // 2, 0)


def test_kernel_granularity_removes_the_kernels_with_smallest_l1_norm():
    conv = nn.Conv2d(1, 2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[[[3.0, 1], [1, 1]]], [[[0.1, 0.2], [0.3, 0.1]]]]))
    cfg = UnstructuredConfig(allocation="uniform", granularity="kernel")
    UnstructuredPruner(nn.Sequential(conv), cfg).prune_to(0.5)
    assert conv.weight[0].abs().sum().item() == pytest.approx(6.0)
    assert conv.weight[1].abs().sum().item() == 0.0


def test_filter_granularity_takes_the_bias_along():
    model = _cnn()
    UnstructuredPruner(model, UnstructuredConfig(allocation="uniform", granularity="filter")).prune_to(0.5)
    dead = (model[0].weight.detach().reshape(8, -1) == 0).all(1)
    assert int(dead.sum()) == 4
    assert torch.all(model[0].bias[dead] == 0) and torch.all(model[0].bias[~dead] != 0)


def test_nm_mask_keeps_the_n_largest_of_every_m():
    scores = torch.tensor([[1.0, 4, 2, 3, 9, 8, 7, 6]])
    assert nm_mask(scores, (2, 4)).tolist() == [[0, 1, 0, 1, 1, 1, 0, 0]]
    assert nm_mask(scores, (1, 4)).tolist() == [[0, 1, 0, 0, 1, 0, 0, 0]]


@pytest.mark.parametrize("nm", [(2, 4), (4, 8), (1, 4)])
def test_nm_pruning_gives_the_pattern_and_its_sparsity(nm):
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8))
    pruner = UnstructuredPruner(model, UnstructuredConfig(granularity="nm", nm=nm))
    assert pruner.prune_to(0.0) == pytest.approx(1 - nm[0] / nm[1])
    for lin in (model[0], model[2]):
        assert is_nm(lin.weight, nm)
        runs = (lin.weight.detach().reshape(lin.weight.shape[0], -1, nm[1]) != 0).sum(-1)
        assert torch.all(runs == nm[0])


def test_nm_on_a_layer_whose_input_is_not_a_multiple_of_m_names_layer_and_fix():
    model = nn.Sequential(nn.Linear(320, 100), nn.ReLU(), nn.Linear(100, 10))  # 100 % 8 = 4
    with pytest.raises(ConfigError, match=r"multiple of M=8, but '2.weight' has input size 100.*"
                                          r"prune.exclude: \['2'\]"):
        UnstructuredPruner(model, UnstructuredConfig(granularity="nm", nm=(4, 8)))
    UnstructuredPruner(model, UnstructuredConfig(granularity="nm", nm=(4, 8), exclude=("2",)))  # the fix works
    with pytest.raises(ConfigError, match="0 < N < M"):
        UnstructuredPruner(model, UnstructuredConfig(granularity="nm", nm=(4, 4)))


def test_nm_masks_survive_training_and_export_round_trips(digits):
    from prunekit.models import build_model
    from prunekit.training import TrainConfig, evaluate, train

    torch.manual_seed(0)
    model = build_model("lenet300", digits.input_shape, digits.num_classes)  # 64-300-100-10
    pruner = UnstructuredPruner(model, UnstructuredConfig(granularity="nm", nm=(2, 4)))
    pruner.prune_to(0.5)
    train(model, digits, TrainConfig(epochs=3, lr=0.05), progress=False)
    assert all(is_nm(model[i].weight, (2, 4)) for i in (1, 3, 5))
    assert evaluate(model, digits.x_test, digits.y_test).accuracy > 0.8
    pruner.make_permanent()
    w = model[1].weight.detach()
    values, idx = pack_nm(w, (2, 4))
    assert values.shape == (300, 32) and idx.dtype == torch.uint8
    assert torch.equal(unpack_nm(values, idx, (2, 4), w.shape), w)


def test_dead_filters_are_removed_physically_with_equal_outputs():
    from prunekit.measure import count_macs
    from prunekit.pruners.channels import remove_dead_channels, structural_macs

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 6, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * 4 * 4, 5))
    pruner = UnstructuredPruner(model, UnstructuredConfig(allocation="uniform", granularity="filter", exclude=("5",)))
    pruner.prune_to(0.5)
    x = torch.randn(2, 3, 8, 8)
    s = structural_macs(model, x[:1])
    pruner.make_permanent()
    before = model(x)
    assert remove_dead_channels(model, x[:1]) == {"0": 4, "2": 3}
    assert (model[0].out_channels, model[2].in_channels, model[2].out_channels, model[5].in_features) == (4, 4, 3, 48)
    assert torch.allclose(model(x), before, atol=1e-6)
    assert s["macs"] == count_macs(model, x[:1]).dense == 4 * 27 * 36 + 3 * 36 * 16 + 48 * 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="semi-structured 2:4 tensors need a CUDA GPU")
def test_semi_structured_2_4_matches_the_masked_dense_layer():
    from prunekit.pruners.nm import to_semi_structured

    model = nn.Sequential(nn.Linear(128, 64, bias=False))
    pruner = UnstructuredPruner(model, UnstructuredConfig(granularity="nm", nm=(2, 4)))
    pruner.prune_to(0.5)
    pruner.make_permanent()
    model = model.half().cuda()
    x = torch.randn(64, 128, dtype=torch.float16, device="cuda")
    dense = model(x)
    assert to_semi_structured(model) == ["0"]
    assert torch.allclose(model(x), dense, atol=1e-2, rtol=1e-2)
