"""``check`` with norm groups: by default a LayerNorm'd residual width is left alone (its removal is not
output-preserving); ``exact_only=False`` / ``--include-norm-groups`` prunes it too and checks structure."""

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.pruners import StructuredConfig, check_model


class PreNormMLP(nn.Module):
    def __init__(self, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Linear(12, dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 64), nn.Linear(64, dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x):
        x = self.embed(x)
        x = x + self.fc2(F.gelu(self.fc1(self.norm(x))))
        return self.head(x)


def _check(exact_only: bool):
    torch.manual_seed(0)
    return check_model("prenorm", PreNormMLP().eval(), torch.randn(3, 12),
                       StructuredConfig(sparsity=0.5, exact_only=exact_only), latency=False)


def test_norm_groups_are_pruned_only_when_asked():
    exact, loose = _check(True), _check(False)
    assert exact.ok and exact.equivalent and exact.exact_only
    assert loose.ok and not loose.exact_only and loose.error is None
    assert loose.params_after < exact.params_after  # the residual width went too
    assert loose.groups_pruned > exact.groups_pruned


class ZeroHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.head = nn.Linear(12, 32), nn.Linear(32, 5)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(torch.relu(self.fc1(x)))


def test_zero_initialised_layers_are_redrawn_so_equivalence_means_something():
    model, x = ZeroHead().eval(), torch.randn(3, 12)
    rep = check_model("zero-head", model, x, StructuredConfig(sparsity=0.5), latency=False)
    assert rep.ok and rep.equivalent and rep.redrawn == ["head.weight", "head.bias"]
    assert model(x).abs().max() > 0  # the compared outputs were not trivially zero
    kept = ZeroHead().eval()
    assert check_model("kept", kept, x, StructuredConfig(sparsity=0.5), latency=False, redraw_zeros=False).redrawn == []
    assert not kept.head.weight.any()


def test_only_norm_groups_left_says_how_to_prune_them():
    model = nn.Sequential(nn.Linear(12, 16), nn.LayerNorm(16), nn.Linear(16, 5))
    x = torch.randn(3, 12)
    exact = check_model("ln", model, x, StructuredConfig(sparsity=0.5), latency=False)
    assert not exact.ok and "PruningError" in exact.error and "--include-norm-groups" in exact.error
    loose = check_model("ln", model, x, StructuredConfig(sparsity=0.5, exact_only=False), latency=False)
    assert loose.ok and loose.params_after < loose.params_before


def test_model_failing_before_pruning_is_a_config_error_naming_the_module():
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 6)
            self.inner = nn.Linear(5, 2)

        def forward(self, x):
            return self.inner(self.fc(x))  # 6 features into a layer that takes 5

    rep = check_model("broken", Broken(), torch.randn(2, 8), latency=False)
    assert not rep.ok and rep.error.startswith("ConfigError") and "'inner'" in rep.error
