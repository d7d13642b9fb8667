"""Training is deterministic for a seed and actually learns; evaluation reports fractions."""

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
    assert 0.85 < acc <= 1.0


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
