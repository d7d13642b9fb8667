"""Masks keep pruned weights at zero through training, and make_permanent removes them cleanly."""

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.masks import MaskSet


def _model():
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("opt_name", ["sgd", "adam", "adamw"])
def test_masked_weights_stay_zero_through_training(opt_name):
    model = _model()
    # warm the optimiser first so momentum is non-zero before pruning
    opts = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
            "adam": lambda p: torch.optim.Adam(p, lr=0.01),
            "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)}
    opt = opts[opt_name](model.parameters())
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 6)).pow(2).mean().backward()
        opt.step()
    mask = (torch.rand(8, 6) > 0.5).float()
    masks = MaskSet(model)
    masks.set("0.weight", mask)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(4, 6)).pow(2).mean().backward()
        assert torch.all(model[0].weight.grad[mask == 0] == 0)
        opt.step()
        model(torch.randn(1, 6))  # the forward pre-hook re-applies the mask
        assert torch.all(model[0].weight[mask == 0] == 0)
    assert torch.any(model[0].weight[mask == 1] != 0)
    assert masks.sparsity()["0.weight"] == pytest.approx(1 - mask.mean().item())


def test_masks_saved_in_state_dict_and_make_permanent_restores_plain_keys():
    model = _model()
    plain_keys = set(model.state_dict())
    masks = MaskSet(model)
    masks.set("2.weight", torch.zeros(3, 8))
    assert "2.weight_mask" in model.state_dict()
    masks.make_permanent()
    assert set(model.state_dict()) == plain_keys
    assert torch.all(model[2].weight == 0)
    # no hooks left: the weight can be trained again
    model(torch.randn(2, 6)).sum().backward()
    assert model[2].weight.grad.abs().sum() > 0


def test_bad_masks_are_rejected():
    masks = MaskSet(_model())
    with pytest.raises(ConfigError, match="shape"):
        masks.set("0.weight", torch.ones(3, 3))
    with pytest.raises(ConfigError, match="not a parameter"):
        masks.set("0.nothing", torch.ones(3))
    other = MaskSet(masks.model)
    masks.set("0.weight", torch.ones(8, 6))
    with pytest.raises(ConfigError, match="another pruner"):
        other.set("0.weight", torch.ones(8, 6))
