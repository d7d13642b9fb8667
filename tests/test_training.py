"""Training is deterministic for a seed and actually learns; evaluation reports fractions."""

import pytest
import torch

from prunekit.models import build_model
from prunekit.training import TrainConfig, evaluate, train


def _run(digits, seed):
    torch.manual_seed(seed)
    model = build_model("lenet300", digits.input_shape, 10)
    train(model, digits, TrainConfig(epochs=2, lr=0.05), seed=seed, progress=False)
    return model


def test_training_learns_and_is_deterministic(digits):
    a, b, c = _run(digits, 0), _run(digits, 0), _run(digits, 1)
    assert torch.equal(a[1].weight, b[1].weight)
    assert not torch.equal(a[1].weight, c[1].weight)
    acc = evaluate(a, digits.x_test, digits.y_test).accuracy
    assert acc > 0.85


def test_on_step_sees_every_step_and_masks_survive_training(digits):
    from prunekit.pruners import UnstructuredConfig, UnstructuredPruner

    model = build_model("lenet300", digits.input_shape, 10)
    pruner = UnstructuredPruner(model, UnstructuredConfig())
    pruner.prune_to(0.8)
    seen = []
    train(model, digits, TrainConfig(epochs=1, batch_size=100), on_step=lambda s, t: seen.append((s, t)),
          progress=False)
    assert seen[-1] == (13, 13) and len(seen) == 13  # 1258 / 100 → 13 steps
    assert pruner.sparsity() == torch.tensor(0.8).item() or abs(pruner.sparsity() - 0.8) < 1e-4
    for name, mask in pruner.current_masks().items():
        w = dict(model.named_parameters())[name]
        assert torch.all(w[mask == 0] == 0)


def test_random_shift_translates_each_sample_within_bounds():
    import pytest

    from prunekit.errors import ConfigError
    from prunekit.training.loop import random_shift

    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0  # one bright pixel in the centre, background 0
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.all(out.sum((1, 2, 3)) == 1)  # nothing lost within 2 px
    pos = out[:, 0].flatten(1).argmax(1)
    rows, cols = pos // 9, pos % 9
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 10  # offsets vary per sample
    assert torch.equal(random_shift(x, 0, torch.Generator()), x)
    with pytest.raises(ConfigError, match="unknown augment 'flip'"):
        TrainConfig(augment="flip")


def test_a_diverging_run_stops_at_the_first_non_finite_loss_naming_step_and_lr(digits):
    import pytest

    from prunekit.errors import PrunekitError, TrainingDivergedError

    torch.manual_seed(0)
    model = build_model("lenet300", digits.input_shape, 10)
    steps = []
    expected = r"step \d+ \(epoch 1 of 3.*learning rate 1e\+04.*lower the learning"
    with pytest.raises(TrainingDivergedError, match=expected):
        train(model, digits, TrainConfig(epochs=3, lr=1e4, schedule="constant"), on_step=lambda s, t: steps.append(s),
              progress=False)
    assert issubclass(TrainingDivergedError, PrunekitError)
    assert 0 < len(steps) < 20  # stopped within the first epoch (20 steps), not after all 60


def test_a_non_finite_loss_reports_its_exact_step_and_epoch(digits):
    import pytest

    from prunekit.errors import TrainingDivergedError

    calls = []

    def loss_fn(logits, y, x):  # finite for 25 steps, then NaN: step 26 is batch 6 of epoch 2 (20 per epoch)
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(logits, y)
        return loss * float("nan") if len(calls) == 26 else loss

    model = build_model("lenet300", digits.input_shape, 10)
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at step 26 \(epoch 2 of 2, batch 6 of 20\)"):
        train(model, digits, TrainConfig(epochs=2, lr=0.05), loss_fn=loss_fn, progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # stopped before the NaN step updated weights


@pytest.mark.parametrize(("key", "value", "says"), [
    ("momentum", 1.0, r"momentum must be in \[0, 1\)"), ("momentum", -0.1, r"momentum must be in \[0, 1\)"),
    ("warmup", 1.0, r"warmup must be .* in \[0, 1\).*got 1\.0"), ("warmup", -0.1, r"warmup must be .*got -0\.1"),
    ("warmup", float("nan"), r"warmup must be .*got nan"), ("optimizer", "adam_w", "choose one of: adam, adamw, sgd"),
    ("weight_decay", -1e-4, "weight_decay must be a finite number ≥ 0"),
    ("lr", float("nan"), "lr must be a finite number > 0"), ("lr", float("inf"), "lr must be a finite number > 0"),
    ("lr", 0.0, "lr must be a finite number > 0"), ("lr", -0.1, "lr must be a finite number > 0"),
])
def test_bad_training_settings_refused_naming_key_and_range(key, value, says):
    from prunekit.errors import ConfigError, RecipeError
    from prunekit.pipeline import parse_recipe

    with pytest.raises(ConfigError, match=says):
        TrainConfig(**{key: value})
    base = {"version": 2, "name": "t", "data": "digits", "model": "lenet300", "train": {"epochs": 1},
            "prune": {"method": "one_shot", "sparsity": 0.5}}
    for section in ("train", "recover"):
        with pytest.raises((ConfigError, RecipeError), match=f"{key}.*finite|{says}"):
            parse_recipe({**base, section: {"epochs": 1, key: value}})


def _zero_input_run(optimizer: str, weight_decay: float) -> torch.Tensor:
    """Trains a linear layer whose last input is always 0 (so that column's gradient is 0); returns that column."""
    from prunekit.data.base import DataSplits

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=gen)
    x[:, 3] = 0.0
    y = (x[:, 0] > 0).long()
    data = DataSplits("toy", x, y, x, y, x, y, num_classes=2)
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    with torch.no_grad():
        model.weight[:, 3] = 1.0
    train(model, data, TrainConfig(epochs=2, batch_size=8, lr=0.01, optimizer=optimizer, weight_decay=weight_decay,
                                   schedule="constant"), progress=False)  # 8 steps
    return model.weight[:, 3].detach()


def test_adamw_decays_a_weight_without_gradient_by_lr_times_decay_per_step_and_adam_does_not():
    adamw = _zero_input_run("adamw", 0.1)
    assert torch.allclose(adamw, torch.full((2,), (1 - 0.01 * 0.1) ** 8), rtol=1e-6, atol=0)  # decoupled: w·(1-lr·wd)
    adam = _zero_input_run("adam", 0.1)  # L2: the decay is a gradient, normalised by Adam to a step of ~lr
    assert torch.all(adam < 0.95) and torch.all(adam > 0.9)
    assert torch.equal(_zero_input_run("adamw", 0.0), torch.ones(2))  # no decay, no gradient: unchanged


def test_warmup_rises_linearly_to_lr_then_the_schedule_runs_over_the_remaining_steps():
    import math

    from prunekit.training.loop import learning_rate

    def cosine(progress):  # the formula earlier runs used, to the bit
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    cfg = TrainConfig(lr=0.1, warmup=0.1)  # 100 steps: 10 of warm-up
    rates = [learning_rate(cfg, s, 100) for s in range(100)]
    assert rates[0] == pytest.approx(0.01) and rates[9] == pytest.approx(0.1)
    assert all(b - a == pytest.approx(0.01) for a, b in zip(rates[:9], rates[1:10], strict=True))
    assert rates[10] == pytest.approx(0.1) and rates[99] == pytest.approx(0.1 * cosine(89 / 90))
    assert all(b < a for a, b in zip(rates[10:], rates[11:], strict=False))  # cosine decay after the warm-up
    step = TrainConfig(lr=0.1, warmup=0.2, schedule="step")  # 50 steps: 10 of warm-up, ×0.1 at half of the other 40
    assert learning_rate(step, 29, 50) == pytest.approx(0.1) and learning_rate(step, 30, 50) == pytest.approx(0.01)
    plain = TrainConfig(lr=0.05)  # no warm-up: the very rates of the schedule alone (earlier runs reproduce)
    assert all(learning_rate(plain, s, 37) == 0.05 * cosine(s / 37) for s in range(37))
    steps = TrainConfig(lr=0.05, schedule="step")
    assert [learning_rate(steps, s, 8) for s in range(8)] == [0.05] * 4 + [0.05 * 0.1] * 2 + [0.05 * 0.01] * 2


def test_warmup_changes_training_and_recipes_take_adamw_and_warmup(digits):
    from prunekit.pipeline import parse_recipe

    def run(warmup):
        torch.manual_seed(0)
        model = build_model("lenet300", digits.input_shape, 10)
        train(model, digits, TrainConfig(epochs=1, lr=0.05, warmup=warmup), progress=False)
        return model[1].weight.detach().clone()

    assert not torch.equal(run(0.5), run(0.0))
    settings = {"epochs": 1, "optimizer": "adamw", "warmup": 0.05, "weight_decay": 0.05}
    recipe = parse_recipe({"version": 2, "name": "t", "data": "digits", "model": "lenet300", "train": settings,
                           "prune": {"method": "one_shot", "sparsity": 0.5}, "recover": settings})
    for cfg in (recipe.train, recipe.recover.train_config()):
        assert (cfg.optimizer, cfg.warmup, cfg.weight_decay) == ("adamw", 0.05, 0.05)


def test_every_phase_loop_stops_at_a_non_finite_loss_before_it_reaches_the_weights(digits):
    from prunekit.dynamic._loop import CosineLoop
    from prunekit.errors import TrainingDivergedError
    from prunekit.training.phase import run_phase

    calls = []

    def loss(m, x, y):  # finite for 4 steps, then NaN
        calls.append(1)
        value = torch.nn.functional.cross_entropy(m(x), y)
        return value * float("nan") if len(calls) == 5 else value

    torch.manual_seed(0)
    model = build_model("lenet300", digits.input_shape, 10)
    make = lambda: CosineLoop(model, digits, 64, 2, 0.1, 0, torch.optim.SGD(model.parameters(), lr=0.1), loss)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at step 5 of 40 with learning rate 0\.09"):
        run_phase(model, make, 2, "exits", progress=False)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # 4 steps taken
