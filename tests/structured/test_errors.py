"""Bad input gives one clear error naming the value, module or op, and never a half-pruned model."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit import StructuredConfig, prune_
from prunekit.cli.main import main
from prunekit.errors import ConfigError, PruningError
from prunekit.graph import DependencyGraph
from prunekit.pruners import select_units
from prunekit.structured import prune_groups
from tests.structured.topologies import FlattenLinear, Residual, image


class BakedShape(nn.Module):
    """Reshapes with a literal size: pruning conv channels cannot be followed by the code."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.conv(x), 4)
        return self.fc(x.reshape(-1, 128))


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.a, self.b = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.conv(x)
        return (self.a(y) if y.mean() > -1e9 else self.b(y)).mean((2, 3))


class FFTOnly(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        return torch.fft.rfft(self.conv(x), dim=1).abs().mean((2, 3))


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, "half"])
def test_ratio_out_of_range(ratio) -> None:
    with pytest.raises(ConfigError, match=r"StructuredConfig.sparsity=.*in \[0, 1\)"):
        StructuredConfig(sparsity=ratio)


def test_unknown_criterion_lists_choices() -> None:
    with pytest.raises(ConfigError, match="unknown criterion 'taylor2'; choose one of: apoz, bn_scale, fpgm"):
        StructuredConfig(sparsity=0.5, importance="taylor2")


def test_unknown_exclude_name() -> None:
    with pytest.raises(ConfigError, match="no module named 'a.9'"):
        DependencyGraph.build(Residual().eval(), image(), exclude=["a.9"])


def test_exclude_pins_layer() -> None:
    m = Residual().eval()
    g = DependencyGraph.build(m, image(), exclude=["a"])
    assert g.group("stem.0").prunable == 0 and g.group("a.0").prunable == 0
    prune_groups(g, select_units(g, StructuredConfig(sparsity=0.5)))
    assert m.a[0].weight.shape == (24, 16, 3, 3)


def test_wrong_input_shape_names_module() -> None:
    with pytest.raises(ConfigError, match=r"module 'stem.0'.*inputs of the shape"):
        DependencyGraph.build(Residual().eval(), torch.randn(2, 5, 16, 16))


def test_baked_shape_rolls_back() -> None:
    m = BakedShape().eval()
    x = torch.randn(2, 3, 8, 8)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    g = DependencyGraph.build(m, x)
    with pytest.raises(PruningError, match="model was left unchanged"):
        prune_groups(g, {"conv": [0, 1, 2]})
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert m.conv.out_channels == 8 and m.fc.in_features == 128
    assert m(x).shape == (2, 5)


def test_pinned_unit_refused() -> None:
    g = DependencyGraph.build(Residual().eval(), image())
    with pytest.raises(ConfigError, match="pinned"):
        prune_groups(g, {"head": [0]})


def test_cannot_remove_all_units() -> None:
    g = DependencyGraph.build(FlattenLinear().eval(), image())
    with pytest.raises(ConfigError, match="keep at least one"):
        prune_groups(g, {"fc1": list(range(32))})


def test_data_dependent_branch_refused() -> None:
    with pytest.raises(PruningError, match=r"data-dependent control flow at <model>: bool.*never ran.*: b;"):
        DependencyGraph.build(Branchy().eval(), torch.randn(1, 3, 8, 8))


def test_unsupported_op_named() -> None:
    with pytest.raises(PruningError, match="unsupported op 'fft_rfft'"):
        prune_(FFTOnly().eval(), StructuredConfig(sparsity=0.5), example_inputs=torch.randn(1, 3, 8, 8))


def test_cli_check_json(capsys) -> None:
    rc = main(["check", "torchvision:resnet18", "--sparsity", "0.25", "--image-size", "64", "--json", "--no-latency",
               "--threads", "1"])
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and rec["ok"] and rec["equivalent"] and rec["error"] is None
    assert (rec["threads"]["threads"], rec["threads"]["source"]) == (1, "explicit")
    assert rec["model"] == "torchvision:resnet18" and rec["ratio"] == 0.25 and rec["groups_pruned"] > 0
    assert rec["params_after"] < rec["params_before"] and rec["macs_after"] < rec["macs_before"]


@pytest.mark.slow
@pytest.mark.timing  # wall-clock: needs a quiet machine (make test-timing)
def test_cli_check_captures_and_prunes_resnet18_in_under_30_seconds(capsys) -> None:
    assert main(["check", "torchvision:resnet18", "--sparsity", "0.25", "--image-size", "64", "--json",
                 "--no-latency"]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["seconds"] < 30


def test_cli_bad_sparsity_one_line(capsys) -> None:
    assert main(["check", "torchvision:resnet18", "--sparsity", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sparsity must be in [0, 1)" in err[0]


def test_cli_unknown_model(capsys) -> None:
    assert main(["check", "torchvision:resnet19"]) == 2
    assert "torchvision has no model 'resnet19'" in capsys.readouterr().err


class InputWidthAttention(nn.Module):
    """Like torchvision's Swin: head_dim = C // num_heads with C the *input* width."""

    def __init__(self, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.num_heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc1, self.fc2 = nn.Linear(dim, 32), nn.Linear(32, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        x = x + self.proj(y)
        return x + self.fc2(F.relu(self.fc1(x)))


def test_prune_skips_groups_whose_code_bakes_a_size() -> None:
    model = nn.Sequential(InputWidthAttention(), InputWidthAttention()).eval()
    x = torch.randn(2, 5, 16)
    res = prune_(model, StructuredConfig(sparsity=0.5), example_inputs=x)
    assert sorted(res.skipped) == ["0.qkv", "1.qkv"]
    assert model[0].qkv.out_features == 48 and model[0].fc1.out_features == 16
    assert model(x).shape == (2, 5, 16)
