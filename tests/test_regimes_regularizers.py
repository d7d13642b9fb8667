"""Sparsity regularisers (L1, group lasso, BN-L1) and soft vs hard filter pruning."""

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.models import build_model
from prunekit.pipeline.methods.soft_filter import soft_filter_train
from prunekit.pruners.regularizers import REGULARIZERS, RegularizerConfig, bn_channel_masks, regularized_loss
from prunekit.pruners.soft_filter import SoftFilterConfig, zero_lowest_filters
from prunekit.training import TrainConfig, train


def test_penalties_equal_their_formulas():
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4, 0, 0], [1, -1, 1, -1]]))
    model = nn.Sequential(lin, nn.BatchNorm1d(2))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.5, -2.0]))
    names = ["0.weight"]
    assert float(REGULARIZERS.get("l1").penalty(model, names)) == pytest.approx(11.0)
    assert float(REGULARIZERS.get("group_lasso").penalty(model, names)) == pytest.approx(2 * (5 + 2))
    assert float(REGULARIZERS.get("bn_l1").penalty(model, names)) == pytest.approx(2.5)


def test_group_lasso_shrinks_filter_norms(digits):
    def norms(strength):
        torch.manual_seed(0)
        model = build_model("lenet300", digits.input_shape, digits.num_classes)
        loss = regularized_loss(model, RegularizerConfig("group_lasso", strength), ["1.weight", "3.weight"])
        train(model, digits, TrainConfig(epochs=3, lr=0.05, weight_decay=0), loss_fn=loss, progress=False)
        return model[1].weight.detach().norm(dim=1)

    plain, reg = norms(0.0), norms(3e-3)
    assert float(reg.median()) < 0.7 * float(plain.median())  # measured: 0.33 vs 0.60
    assert float(reg.min()) < 0.6 * float(plain.min())


def test_bn_l1_needs_batchnorm_and_slimming_masks_gamma_and_beta():
    with pytest.raises(ConfigError, match="'bn_l1' \\(network slimming\\) needs BatchNorm"):
        regularized_loss(nn.Linear(2, 2), RegularizerConfig("bn_l1"), [])
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))
    with torch.no_grad():
        model[1].weight.copy_(torch.arange(1.0, 9.0))
    bn_channel_masks(model, 0.25)
    assert model[1].weight.tolist()[:2] == [0, 0] and model[1].bias.tolist()[:2] == [0, 0]
    out = model.eval()(torch.randn(3, 4))
    assert torch.all(out[:, :2] == 0) and torch.all(out[:, 2:] != 0)


def test_soft_filter_zeroes_but_keeps_updating_then_masks(digits):
    torch.manual_seed(0)
    model = build_model("lenet300", digits.input_shape, digits.num_classes)
    assert zero_lowest_filters(model, ["1.weight"], 0.5) == 150
    assert int((model[1].weight.detach().abs().sum(1) == 0).sum()) == 150
    pruner, records = soft_filter_train(model, digits, TrainConfig(epochs=2, lr=0.05),
                                        SoftFilterConfig(ratio=0.5, exclude=("5",)), progress=False)
    assert len(records) == 2 and records[-1]["val_accuracy"] > 0.7
    assert pruner.layer_sparsity() == {"1.weight": 0.5, "3.weight": 0.5}
    dead = (model[1].weight.detach().abs().sum(1) == 0)
    assert int(dead.sum()) == 150 and torch.all(model[1].bias.detach()[dead] == 0)


def test_soft_filters_grow_back_and_differ_from_hard_pruning(digits):
    """Zeroed filters are not masked: they receive gradients and grow back (unlike hard pruning)."""
    torch.manual_seed(0)
    model = build_model("lenet300", digits.input_shape, digits.num_classes)
    train(model, digits, TrainConfig(epochs=1), progress=False)
    zero_lowest_filters(model, ["1.weight"], 0.5)
    dead = model[1].weight.detach().abs().sum(1) == 0
    train(model, digits, TrainConfig(epochs=1, lr=0.01), progress=False)
    regrown = model[1].weight.detach()[dead].abs().sum(1) > 0
    assert int(regrown.sum()) > 30  # of 150 zeroed filters (measured: 72, those whose ReLU stays open)
