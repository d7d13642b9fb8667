"""Recovery: the distillation loss equals Hinton et al.'s formula, feature matching checks shapes,
and distillation without a teacher is refused."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError
from prunekit.models import build_model
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner
from prunekit.recovery import RECOVERY, DistillConfig, RecoveryConfig, distill_loss, recover, recovery_loss
from prunekit.training import TrainConfig, evaluate


def test_distill_loss_matches_the_formula():
    s, t = torch.tensor([[1.0, 2.0, 0.5]]), torch.tensor([[0.2, 3.0, -1.0]])
    y = torch.tensor([1])
    T, a = 3.0, 0.7
    p_t = torch.softmax(t / T, 1)
    kl = float((p_t * (p_t.log() - torch.log_softmax(s / T, 1))).sum())
    expected = a * T * T * kl + (1 - a) * float(F.cross_entropy(s, y))
    assert float(distill_loss(s, t, y, T, a)) == pytest.approx(expected, rel=1e-6)
    assert float(distill_loss(t, t, y, T, 1.0)) == pytest.approx(0.0, abs=1e-7)  # student = teacher


def test_distillation_needs_a_teacher():
    model = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match="'distill' needs a teacher: pass the dense model as teacher="):
        with recovery_loss(model, RecoveryConfig(method="distill")):
            pass
    choices = ", ".join(RECOVERY.names())  # the message lists the registry, whatever it holds
    with pytest.raises(ConfigError, match=f"unknown recovery method 'kd'; choose one of: {choices}$"):
        RecoveryConfig(method="kd")
    assert {"distill", "finetune"} <= set(RECOVERY.names())


def test_feature_matching_adds_the_mse_and_checks_names():
    student, teacher = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2)), nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 0, 1, 1])
    cfg = RecoveryConfig("distill", DistillConfig(temperature=2.0, alpha=0.5, features=["0"], feature_weight=3.0))
    with recovery_loss(student, cfg, teacher) as loss_fn:
        got = float(loss_fn(student(x), y, x))
    with torch.no_grad():
        plain = float(distill_loss(student(x), teacher(x), y, 2.0, 0.5))
        feat = float(F.mse_loss(student[0](x), teacher[0](x)))
    assert got == pytest.approx(plain + 3.0 * feat, rel=1e-5)
    bad = RecoveryConfig("distill", DistillConfig(features=["fc9"]))
    with pytest.raises(ConfigError, match="the student has no module 'fc9'"):
        with recovery_loss(student, bad, teacher):
            pass


@pytest.mark.parametrize("method", ["finetune", "distill"])
def test_recovery_after_pruning_improves_accuracy(digits, method):
    torch.manual_seed(0)
    model = build_model("lenet300", digits.input_shape, digits.num_classes)
    recover(model, digits, TrainConfig(epochs=3, lr=0.05), RecoveryConfig(), progress=False)
    teacher = copy.deepcopy(model)
    cfg = UnstructuredConfig(allocation="uniform", granularity="filter", exclude=("5",))  # keep every class
    UnstructuredPruner(model, cfg).prune_to(0.8)
    before = evaluate(model, digits.x_test, digits.y_test).accuracy
    recover(model, digits, TrainConfig(epochs=2, lr=0.01), RecoveryConfig(method), teacher, progress=False)
    after = evaluate(model, digits.x_test, digits.y_test).accuracy
    assert after > before + 0.05 and after > 0.85
