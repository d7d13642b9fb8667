"""Quirks of real models, each reduced to a few lines: layers called with keyword arguments (timm BEiT/EVA
``F.linear(x, weight=w, bias=b)``, BLOOM's ``baddbmm(batch1=..)``) trace like positional calls; MACs count a
module fed an expanded parameter (CaiT) and CPU's fused attention kernel."""

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.pruners import StructuredConfig, check_model


class KeywordCalls(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(16, 32), nn.Linear(32, 4)

    def forward(self, x):
        x = F.relu(F.conv2d(input=x, weight=self.conv.weight, bias=self.conv.bias, padding=1))
        x = x.mean((2, 3))
        x = F.relu(F.linear(x, weight=self.fc1.weight, bias=self.fc1.bias))
        return F.linear(input=x, weight=self.fc2.weight, bias=self.fc2.bias)


def test_keyword_weight_arguments_prune_and_stay_equivalent():
    torch.manual_seed(0)
    rep = check_model("kw", KeywordCalls().eval(), torch.randn(2, 3, 8, 8), StructuredConfig(sparsity=0.5),
                      latency=False)
    assert rep.ok and rep.equivalent, rep.error
    assert rep.groups_pruned == 2 and rep.params_after < rep.params_before


class ExpandedToken(nn.Module):
    """CaiT-style: a parameter expanded under no_grad is passed into a submodule as an input."""

    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.randn(1, 1, 8))
        self.block = nn.Linear(8, 8)

    def forward(self, x):
        return self.block(self.token.expand(x.shape[0], -1, -1)) + x


def test_macs_count_a_module_fed_an_expanded_parameter():
    from prunekit.measure import count_macs

    m = ExpandedToken()
    assert count_macs(m, torch.randn(2, 1, 8)).dense == 2 * 8 * 8
    assert all(p.requires_grad for p in m.parameters())  # restored afterwards


class AlibiScores(nn.Module):
    """BLOOM-style ``bias.baddbmm(batch1=q, batch2=k, beta=..., alpha=...)`` with keyword operands."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.out = nn.Linear(8, 16), nn.Linear(8, 16), nn.Linear(5, 3)

    def forward(self, x):
        bias = torch.zeros(x.shape[0], x.shape[1], x.shape[1])
        scores = bias.baddbmm(batch1=self.q(x), batch2=self.k(x).transpose(1, 2), beta=1.0, alpha=0.5)
        return self.out(scores)


def test_baddbmm_with_keyword_operands_couples_q_and_k():
    torch.manual_seed(0)
    rep = check_model("alibi", AlibiScores().eval(), torch.randn(2, 5, 8), StructuredConfig(sparsity=0.5),
                      latency=False)
    assert rep.ok and rep.equivalent, rep.error
    assert rep.params_after == rep.params_before - 8 * (8 + 1) * 2  # 8 of 16 q/k features, weight rows + bias


class SDPA(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_macs_count_cpu_fused_attention():
    from prunekit.measure import count_macs

    q, k, v = torch.randn(2, 4, 10, 8), torch.randn(2, 4, 12, 8), torch.randn(2, 4, 12, 6)
    assert count_macs(SDPA(), q, k, v).dense == 2 * 4 * 10 * 12 * (8 + 6)  # QKᵀ + AV
