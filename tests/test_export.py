"""Inference export: BatchNorm folding is exact, never touches the user's model, and skips what it must."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.errors import UnsupportedOpError
from prunekit.export import InferenceConfig, fold_batchnorm, foldable_pairs, prepare_inference
from prunekit.graph import DependencyGraph
from prunekit.measure import measure_latency
from prunekit.structured import prune_groups

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_bn(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters, as after training."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.running_mean is None:
                continue
            m.running_mean.normal_()
            m.running_var.uniform_(0.3, 3.0)
            if m.affine:
                m.weight.data.normal_()
                m.bias.data.normal_()
    return model.eval()


def _n_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_folded_resnet_matches_in_eval_mode_and_has_no_batchnorm(net, digits):
    _randomise_bn(net)
    before = copy.deepcopy(net.state_dict())
    folded = fold_batchnorm(net)
    x = digits.x_test[:16]
    assert _n_bn(net) == 21 and _n_bn(folded) == 0
    assert len(foldable_pairs(net)) == 21
    assert (folded(x) - net(x)).abs().max().item() <= 1e-5
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # not mutated in place
    assert type(folded) is type(net) and not folded.training


def test_folding_a_pruned_resnet_is_exact(net, digits):
    _randomise_bn(net)
    graph = DependencyGraph.build(net, digits.x_test[:1])
    prune_groups(graph, {g.name: list(range(g.size // 2)) for g in graph.prunable_groups()})
    x = digits.x_test[:16]
    assert (fold_batchnorm(net)(x) - net(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("conv_bias,affine", [(True, True), (False, False), (True, False)])
def test_conv1d_with_bias_and_bn_without_affine(conv_bias, affine):
    model = _randomise_bn(nn.Sequential(nn.Conv1d(3, 6, 3, bias=conv_bias), nn.BatchNorm1d(6, affine=affine),
                                        nn.ReLU(), nn.Conv1d(6, 4, 1, groups=2), nn.BatchNorm1d(4)))
    x = torch.randn(5, 3, 20)
    folded = fold_batchnorm(model)
    assert _n_bn(folded) == 0
    assert (folded(x) - model(x)).abs().max().item() <= 1e-5


class _Branchy(nn.Module):
    """conv1's output also feeds the add, bn2 is used twice, bn3 has no running statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.conv3, self.bn3 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)
        self.conv4, self.bn4 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.conv1(x)
        y = self.bn1(y) + y
        z = self.bn2(self.bn2(self.conv2(y)))
        return self.bn4(self.conv4(self.bn3(self.conv3(z))))


def test_only_safe_pairs_are_folded():
    model = _randomise_bn(_Branchy())
    assert foldable_pairs(model) == [("conv4", "bn4")]
    x = torch.randn(3, 2, 6, 6)
    folded = fold_batchnorm(model)
    assert isinstance(folded.bn4, nn.Identity) and isinstance(folded.bn1, nn.BatchNorm2d)
    assert (folded(x) - model(x)).abs().max().item() <= 1e-5


def test_untraceable_model_is_refused_by_name():
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

        def forward(self, x):
            return self.bn(self.conv(x)) if x.sum() > 0 else x

    with pytest.raises(UnsupportedOpError, match="cannot trace DataDependent"):
        fold_batchnorm(DataDependent())


def test_channels_last_export_matches_and_times(net, digits):
    _randomise_bn(net)
    cfg = InferenceConfig(fold_bn=True, channels_last=True)
    exported = prepare_inference(net, cfg)
    assert exported.layers[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert net.layers[0].conv1.weight.is_contiguous()  # the user's model keeps its layout
    x = digits.x_test[:16]
    assert (exported(x.contiguous(memory_format=cfg.memory_format)) - net(x)).abs().max().item() <= 1e-5
    lat = measure_latency(exported, x, batch=4, repeats=2, memory_format=cfg.memory_format)
    assert lat.batch == 4 and lat.repeats == 2  # timing a channels-last batch runs
    assert InferenceConfig().describe() == "as trained (eager, no export)"
    assert cfg.describe() == "BatchNorm folded, channels_last"
