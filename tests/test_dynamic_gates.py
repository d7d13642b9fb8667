"""Channel gating (after FBS): keep = 1 is the static model, batch 1 with gathered weights computes what the masked
batch computes, MACs fall with keep, residual-coupled convs are refused with the reason, saved models load back."""

import copy

import pytest
import torch

from prunekit.dynamic import ChannelGateConfig, DynamicConfig, build_dynamic, load_dynamic, save_dynamic
from prunekit.dynamic.gates import gate_channels
from prunekit.errors import ConfigError, PruningError
from prunekit.measure import count_macs
from prunekit.models import build_model
from prunekit.structured.serialize import save_pruned

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise(gated):
    with torch.no_grad():
        for g in gated.gates.values():
            torch.nn.init.normal_(g.predictor.weight, std=5.0)
            torch.nn.init.zeros_(g.predictor.bias)


def test_keep_all_is_the_static_model(net, digits):
    x = digits.x_test[:6]
    g = gate_channels(copy.deepcopy(net), x, ChannelGateConfig(keep=1.0)).eval()
    with torch.no_grad():
        assert torch.equal(g(x), net(x)) and torch.equal(g(x[:1]), net(x[:1]))


def test_gathered_batch_1_equals_the_masked_batch_and_inputs_choose_different_channels(net, digits):
    x = digits.x_test[:12]
    g = gate_channels(copy.deepcopy(net), x, ChannelGateConfig(keep=0.5)).eval()
    _randomise(g)
    with torch.no_grad():
        batched = g(x)
        kept = g.gates["0"].last_kept.clone()
        single = torch.cat([g(x[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(batched, single, atol=1e-4)
    assert kept.shape == (12, 8)  # 16 channels, half kept
    assert len({tuple(sorted(r.tolist())) for r in kept}) > 1  # input-dependent


def test_macs_fall_with_keep(net, digits):
    x = digits.x_test[:1]
    full = count_macs(net, x).dense
    half = count_macs(gate_channels(copy.deepcopy(net), x, ChannelGateConfig(keep=0.5)).eval(), x).dense
    quarter = count_macs(gate_channels(copy.deepcopy(net), x, ChannelGateConfig(keep=0.25)).eval(), x).dense
    assert quarter < half < full


def test_residual_coupled_and_unknown_convs_are_refused(net, digits):
    x = digits.x_test[:1]
    with pytest.raises(ConfigError, match=r"cannot gate layers.0.conv2: the output channels of layers.0.conv2 are "
                                          r"added to the residual stream"):
        gate_channels(net, x, ChannelGateConfig(layers=["layers.0.conv2"]))
    with pytest.raises(ConfigError, match="cannot gate stem.0"):
        gate_channels(net, x, ChannelGateConfig(layers=["stem.0"]))
    with pytest.raises(ConfigError, match="'layers.0.bn1' is not a conv of this model; gateable: layers.0.conv1"):
        gate_channels(net, x, ChannelGateConfig(layers=["layers.0.bn1"]))
    with pytest.raises(ConfigError, match=r"keep must be in \(0, 1\]"):
        ChannelGateConfig(keep=0)
    with pytest.raises(PruningError, match="has none"):
        gate_channels(build_model("cnn1d", (1, 40), 10).eval(), torch.randn(1, 1, 40), ChannelGateConfig())


def test_trained_gates_save_and_load(net, digits, tmp_path):
    dyn, facts = build_dynamic(copy.deepcopy(net), digits, DynamicConfig(channel_gate=ChannelGateConfig(
        keep=0.5, layers=["layers.0.conv1", "layers.4.conv1"], epochs=1)), log=lambda s: None)
    assert len(facts["train_loss"]) == 1
    save_pruned(dyn.chain.model, tmp_path, constructor="resnet_mini", input_shape=digits.input_shape, num_classes=10)
    save_dynamic(dyn, tmp_path)
    back = load_dynamic(tmp_path)
    x = digits.x_test[:5]
    with torch.no_grad():
        assert torch.allclose(back(x), dyn(x), atol=1e-5)
        assert torch.allclose(back(x[:1]), dyn(x[:1]), atol=1e-5)
