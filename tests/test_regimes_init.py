"""Pruning at initialisation: SNIP and SynFlow scores equal |θ ⊙ ∂R/∂θ|, SynFlow needs no labels,
and the criteria that need a calibration batch refuse to run without one."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError
from prunekit.importance import get, names
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner
from prunekit.pruners.init_pruning import prune_at_init


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def test_snip_scores_are_weight_times_loss_gradient():
    model = _mlp()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    scores = UnstructuredPruner(model, UnstructuredConfig(importance="snip"), calibration=(x, y)).scores()
    F.cross_entropy(model(x), y).backward()
    assert torch.allclose(scores["0.weight"], (model[0].weight * model[0].weight.grad).abs().detach())


def test_synflow_scores_match_the_closed_form_of_a_linear_net():
    # two linear layers without biases: R = 1ᵀ|W2||W1|1, so ∂R/∂W1[i,j] = Σ_k |W2|[k,i]
    model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 2, bias=False))
    scores = UnstructuredPruner(model, UnstructuredConfig(importance="synflow"),
                                calibration=(torch.zeros(1, 3), torch.zeros(1))).scores()
    w1, w2 = model[0].weight.detach().abs(), model[1].weight.detach().abs()
    expected = w2.sum(0)[:, None] * w1
    assert torch.allclose(scores["0.weight"], expected, atol=1e-6)
    assert torch.allclose(scores["1.weight"], w2 * w1.sum(1)[None, :], atol=1e-6)


@pytest.mark.parametrize("criterion", ["snip", "synflow"])
def test_prune_at_init_reaches_the_target(criterion):
    model = _mlp()
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    pruner = UnstructuredPruner(model, UnstructuredConfig(importance=criterion), calibration=(x, y))
    assert prune_at_init(pruner, 0.7, iterations=5) == pytest.approx(0.7, abs=0.02)
    assert min(pruner.layer_sparsity().values()) < 1.0  # no layer collapses


def test_saliency_criteria_need_a_calibration_batch():
    assert {"snip", "synflow"} <= set(names("weight", at_init=True))
    assert "data" in get("snip").needs and "data" not in get("synflow").needs
    pruner = UnstructuredPruner(_mlp(), UnstructuredConfig(importance="snip"))
    with pytest.raises(ConfigError, match="'snip' needs a calibration batch.*calibration=\\(x, y\\)"):
        pruner.prune_to(0.5)
    choices = ", ".join(names("weight"))  # the registry's names, whatever it holds
    with pytest.raises(ConfigError, match=f"unknown criterion 'grasp'; choose one of: {choices}"):
        UnstructuredConfig(importance="grasp")
