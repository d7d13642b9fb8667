"""Single-weight forms of the channel criteria (apoz, mean_activation, mi, bn_folded, fpgm) and the
measured loss change of single weights: each follows its formula, beats random pruning on a fitted
model, leaves the model as it found it, and runs from a recipe."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError
from prunekit.export import fold_batchnorm
from prunekit.importance import Calibration, get, names, score_weights
from prunekit.importance import loss_change as loss_change_module
from prunekit.importance._channels import channel_index
from prunekit.pipeline import parse_recipe, run_recipe
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner

CHANNEL = ["apoz", "mean_activation", "mi", "bn_folded", "fpgm", "loss_change"]


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """One torch thread (see tests/conftest.py)."""


def _scores(model, criterion, batch, names=None):
    pruner = UnstructuredPruner(model, UnstructuredConfig(importance=criterion), calibration=batch)
    s = pruner.scores()
    return s if names is None else {n: s[n] for n in names}


def test_every_group_criterion_but_bn_scale_also_scores_single_weights():
    """bn_scale (|γ|) has no single-weight form; its BN-folded cousin is a different formula: bn_folded."""
    assert set(names("group")) - set(names("weight")) == {"bn_scale"}
    assert get("bn_folded").weight is not None and get("bn_folded").group is None


@pytest.mark.parametrize("layer,x", [
    (nn.Linear(6, 4), torch.randn(2, 6)),
    (nn.Conv2d(4, 6, 3, groups=2), torch.randn(2, 4, 5, 5)),
    (nn.Conv2d(4, 4, 3, groups=4), torch.randn(2, 4, 5, 5)),
    (nn.ConvTranspose2d(4, 6, 3, groups=2), torch.randn(2, 4, 5, 5)),
    (nn.Conv1d(3, 5, 2), torch.randn(2, 3, 7)),
])
def test_channel_index_matches_which_inputs_each_output_reads(layer, x):
    """Output channel o depends on input channel i exactly when some weight entry is indexed (o, i)."""
    out_c, in_c = channel_index(layer, layer.weight.shape)
    assert out_c.shape == in_c.shape == layer.weight.shape
    torch.nn.init.uniform_(layer.weight, 0.5, 1.0)  # no exact zeros: every entry is a real connection
    x = x.requires_grad_()
    y = layer(x)
    for o in range(y.shape[1]):
        (g,) = torch.autograd.grad(y[:, o].sum(), x, retain_graph=True)
        reads = {i for i in range(x.shape[1]) if g[:, i].abs().sum() > 0}
        assert reads == set(in_c[out_c == o].tolist()), o


def _relu_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))


def test_apoz_and_mean_activation_weight_by_the_input_channel_statistics():
    net = _relu_net()
    x, y = torch.randn(300, 5), torch.randint(0, 3, (300,))
    with torch.no_grad():
        a = torch.relu(net[0](x))
    w = net[2].weight.detach().abs()
    got = _scores(net, "apoz", (x, y), ["2.weight"])["2.weight"]
    torch.testing.assert_close(got, w * (1 - (a == 0).float().mean(0)))
    got = _scores(net, "mean_activation", (x, y), ["2.weight"])["2.weight"]
    torch.testing.assert_close(got, w * a.abs().mean(0))
    assert (a == 0).any(0).all()  # every ReLU channel is sometimes zero: the factor is not trivially 1


def test_mean_activation_averages_over_tokens_for_linear_layers():
    lin = nn.Linear(4, 2)
    x = torch.randn(10, 7, 4)  # 10 samples of 7 tokens
    got = _scores(lin, "mean_activation", (x, torch.zeros(10, dtype=torch.long)))["weight"]
    torch.testing.assert_close(got, lin.weight.detach().abs() * x.abs().mean((0, 1)))


def test_mi_prefers_the_input_that_carries_the_label():
    torch.manual_seed(0)
    y = torch.randint(0, 4, (400,))
    x = torch.randn(400, 3)
    x[:, 1] = y.float() + 0.1 * torch.randn(400)  # input 1 predicts the label, 0 and 2 are noise
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    s = _scores(lin, "mi", (x, y))["weight"]
    assert s[:, 1].min() > 5 * s[:, [0, 2]].max()


def test_bn_folded_scores_the_batchnorm_folded_weight():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 1))
    with torch.no_grad():
        net[1].weight.uniform_(-2, 2)
        net[1].running_var.uniform_(0.5, 3)
    net.eval()
    x = torch.randn(4, 2, 6, 6)
    s = _scores(net, "bn_folded", (x, torch.zeros(4, dtype=torch.long)))
    folded = fold_batchnorm(net)
    torch.testing.assert_close(s["0.weight"], folded[0].weight.detach().abs())
    torch.testing.assert_close(s["3.weight"], net[3].weight.detach().abs())  # no norm reads it: |w|


def test_bn_folded_without_any_norm_layer_says_so():
    with pytest.raises(ConfigError, match="'bn_folded' found no norm layer.*l1, taylor, fpgm"):
        _scores(_relu_net(), "bn_folded", (torch.randn(4, 5), torch.zeros(4, dtype=torch.long)))


def test_fpgm_follows_its_formula_and_needs_no_data():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3)
    s = UnstructuredPruner(conv, UnstructuredConfig(importance="fpgm")).scores()["weight"]
    f = conv.weight.detach().reshape(5, -1)
    d = torch.cdist(f, f).sum(1)
    want = conv.weight.detach().abs() * (d / d.mean()).reshape(5, 1, 1, 1)
    torch.testing.assert_close(s, want)


def test_loss_change_is_measured_exactly_for_small_layers():
    net = _relu_net()
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    s = _scores(net, "loss_change", (x, y))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])  # every weight restored
    with torch.no_grad():
        base = F.cross_entropy(net(x), y)
        for o, i in [(0, 0), (2, 5), (1, 7)]:
            w = net[2].weight[o, i].item()
            net[2].weight[o, i] = 0
            want = F.cross_entropy(net(x), y) - base
            net[2].weight[o, i] = w
            assert s["2.weight"][o, i].item() == pytest.approx(want.item(), abs=1e-6)


def test_loss_change_samples_chunks_in_large_layers(monkeypatch):
    monkeypatch.setattr(loss_change_module, "MAX_EVALUATIONS", 10)
    net = _relu_net()  # layer 0 has 40 weights > 10: chunks of 4, ROUNDS rounds
    calls = []
    net.register_forward_pre_hook(lambda m, a: calls.append(1))
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    s = _scores(net, "loss_change", (x, y), ["0.weight"])["0.weight"]
    # 1 base evaluation; layer 0 (40): ROUNDS × 10 chunks; layer 2 (24): ROUNDS × 10 chunks
    assert len(calls) == 1 + 2 * loss_change_module.ROUNDS * 10
    assert len(set(s.flatten().tolist())) > 10  # chunks differ, and each weight averages two of them
    monkeypatch.setattr(loss_change_module, "ROUNDS", 1)
    s = _scores(net, "loss_change", (x, y), ["0.weight"])["0.weight"]
    per_w2 = {round(v, 5) for v in (s / net[0].weight.detach().pow(2)).flatten().tolist()}
    assert 1 < len(per_w2) <= 10  # one chunk's rise shared in proportion to w²: one ratio per chunk


def test_masked_weights_are_not_re_measured():
    net = _relu_net()
    x, y = torch.randn(32, 5), torch.randint(0, 3, (32,))
    cfg = UnstructuredConfig(importance="loss_change", allocation="uniform")
    pruner = UnstructuredPruner(net, cfg, calibration=(x, y))
    pruner.prune_to(0.5)
    s = pruner.scores()
    for n, m in pruner.current_masks().items():
        assert (s[n][m == 0] == 0).all()


def _fitted(with_bn: bool):
    torch.manual_seed(0)
    layers = [nn.Linear(6, 24)] + ([nn.BatchNorm1d(24)] if with_bn else []) + [nn.ReLU(), nn.Linear(24, 3)]
    net = nn.Sequential(*layers)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(512, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval(), x, y


@pytest.mark.parametrize("criterion", CHANNEL)
def test_each_form_keeps_more_accuracy_than_random_pruning(criterion):
    acc = {}
    for crit in (criterion, "random"):
        net, x, y = _fitted(with_bn=criterion == "bn_folded")
        cfg = UnstructuredConfig(importance=crit, allocation="uniform")
        UnstructuredPruner(net, cfg, calibration=(x, y)).prune_to(0.7)
        with torch.no_grad():
            acc[crit] = (net(x).argmax(1) == y).float().mean().item()
    assert acc[criterion] > acc["random"] + 0.1, acc


def test_score_weights_follows_the_formula_for_the_names_asked():
    """The functional entry point, checked against the formula (the pruner calls the same weight form, so
    comparing the two would compare a function with itself)."""
    net, x, y = _fitted(with_bn=False)
    with torch.no_grad():
        a = torch.relu(net[0](x))
    got = score_weights(net, ["2.weight"], "apoz", Calibration(x, y))
    assert list(got) == ["2.weight"]
    torch.testing.assert_close(got["2.weight"], net[2].weight.detach().abs() * (1 - (a == 0).float().mean(0)))
    assert (a == 0).any(0).any()  # some input channel is sometimes zero: the factor is not trivially 1


def test_hooks_are_removed_and_weights_restored_when_the_forward_fails():
    net = _relu_net()
    calls = {"n": 0}

    def boom(_m, _a):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("boom")

    handle = net[2].register_forward_pre_hook(boom)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for crit in ("loss_change", "apoz"):
        calls["n"] = 0
        with pytest.raises(RuntimeError, match="boom"):
            for _ in range(3):
                _scores(net, crit, (torch.randn(300, 5), torch.randint(0, 3, (300,))))
    handle.remove()
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in net.modules())
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k])


def test_channel_forms_need_a_calibration_batch():
    with pytest.raises(ConfigError, match="criterion 'apoz' needs a calibration batch.*activations, data"):
        UnstructuredPruner(_relu_net(), UnstructuredConfig(importance="apoz")).prune_to(0.5)


@pytest.mark.parametrize("criterion", ["apoz", "mean_activation"])
def test_a_recipe_prunes_a_trained_model_with_an_activation_criterion(tmp_path, criterion):
    raw = {"name": criterion, "seed": 0, "model": "lenet300", "data": "digits",
           "train": {"epochs": 1, "lr": 0.05}, "recover": {"epochs": 1, "lr": 0.01},
           "prune": {"importance": criterion, "method": "iterative", "steps": 2, "sparsity": 0.8,
                     "calibration_samples": 200},
           "measure": {"latency_batches": [1], "latency_repeats": 2}}
    run_recipe(parse_recipe(raw), tmp_path / "o", progress=False, quiet=True)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert report["prune"]["importance"] == criterion
