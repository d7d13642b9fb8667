"""Lottery tickets: rewinding restores θ₀ ⊙ m exactly, the rounds follow the schedule, the control
uses the same mask with different initial weights, and missing state is a clear error."""

import pytest
import torch

from prunekit.errors import ConfigError
from prunekit.models import build_model
from prunekit.pipeline.methods.lottery import LotteryConfig, run_lottery
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner, iterative_sparsity
from prunekit.pruners.lottery import WeightSnapshot, capture_at_step
from prunekit.training import TrainConfig, train

CFG = TrainConfig(epochs=1, lr=0.05)
CFG3 = TrainConfig(epochs=3, lr=0.05)


def _model(d, seed=0):
    torch.manual_seed(seed)
    return build_model("lenet300", d.input_shape, d.num_classes)


def test_rewind_restores_initial_weights_under_the_mask(digits):
    model = _model(digits)
    init = WeightSnapshot.capture(model)
    w0 = model[1].weight.detach().clone()
    train(model, digits, CFG, progress=False)
    pruner = UnstructuredPruner(model, UnstructuredConfig(allocation="uniform"))
    pruner.prune_to(0.5)
    init.restore(model)
    mask = pruner.masks.mask("1.weight")
    assert torch.equal(model[1].weight.detach(), w0 * mask)
    assert float(mask.mean()) == pytest.approx(0.5)


def test_lottery_rounds_follow_the_schedule_and_the_control_differs_only_in_init(digits):
    model = _model(digits)
    init = WeightSnapshot.capture(model)
    train(model, digits, CFG3, progress=False)
    pruner = UnstructuredPruner(model, UnstructuredConfig(allocation="uniform"))
    cfg = LotteryConfig(target=0.8, rounds=2, control=True)
    res = run_lottery(model, digits, pruner, CFG3, cfg, init, control_factory=lambda: _model(digits, 99),
                      progress=False)
    assert [r["sparsity"] for r in res.steps] == pytest.approx(
        [iterative_sparsity(0.8, 1, 2), 0.8], abs=1e-4)
    assert res.control["sparsity"] == pytest.approx(0.8, abs=1e-4)
    assert res.control["accuracy"] > 0.2 and res.steps[-1]["test_accuracy"] > 0.8  # chance: 0.1


def test_rewind_to_an_early_iteration_captures_that_step(digits):
    model = _model(digits)
    box = {}
    train(model, digits, CFG, on_step=capture_at_step(3, model, box), progress=False)
    snap = box["snapshot"]
    assert snap.step == 3
    assert not torch.equal(snap.tensors["1.weight"], model[1].weight.detach())


def test_missing_state_and_bad_options_are_clear_errors(digits):
    model = _model(digits)
    pruner = UnstructuredPruner(model)
    with pytest.raises(ConfigError, match="rewinding needs the weights stored before training"):
        run_lottery(model, digits, pruner, CFG, LotteryConfig(control=False), None)
    with pytest.raises(ConfigError, match="control needs control_factory"):
        run_lottery(model, digits, pruner, CFG, LotteryConfig(control=True), WeightSnapshot.capture(model))
    with pytest.raises(ConfigError, match="rewind 'iteration' needs rewind_step ≥ 1"):
        LotteryConfig(rewind="iteration")
    with pytest.raises(ConfigError, match="unknown rewind 'late'; choose one of: init, iteration"):
        LotteryConfig(rewind="late")
