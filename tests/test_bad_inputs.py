"""Bad data, checkpoints and model arguments (issue 16): one clear error before work starts, never a model
trained on silently wrong data or weights."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from prunekit.data import load_dataset
from prunekit.errors import ConfigError, DataError, ModelLoadError, RecipeError
from prunekit.models import build_model


def _npz(tmp_path, **arrays) -> str:
    np.savez(tmp_path / "d.npz", **arrays)
    return f"tensors:{tmp_path / 'd.npz'}"


X = np.random.default_rng(0).standard_normal((100, 4)).astype(np.float32)


@pytest.mark.parametrize("y,match", [
    (np.random.default_rng(0).random(100), "non-integer labels"),  # was: all class 0, "100% accuracy"
    (np.arange(100) % 3 - 1, "negative labels"),
    (np.zeros(100, dtype=np.int64), "single class"),
    (np.arange(90) % 3, "100 samples but y has 90"),
    (np.full(100, 10**9), "at most 100,000 classes"),
])
def test_bad_labels_are_refused(tmp_path, y, match):
    with pytest.raises(DataError, match=match):
        load_dataset(_npz(tmp_path, x=X, y=y))


def test_float_labels_that_are_whole_numbers_load_as_classes(tmp_path):
    d = load_dataset(_npz(tmp_path, x=X, y=(np.arange(100) % 3).astype(np.float32)))
    assert d.num_classes == 3 and d.y_train.dtype == torch.int64


def test_non_finite_inputs_and_too_few_samples_are_refused(tmp_path):
    x = X.copy()
    x[5, 2] = np.nan
    x[7, 0] = np.inf
    with pytest.raises(DataError, match="x holds 2 NaN or infinite values"):
        load_dataset(_npz(tmp_path, x=x, y=np.arange(100) % 2))
    with pytest.raises(DataError, match="too few to split"):
        load_dataset(_npz(tmp_path, x=X[:3], y=np.arange(3) % 2))


def test_integer_or_non_finite_checkpoints_are_refused(tmp_path):
    model = build_model("lenet300", (1, 28, 28), 10)
    torch.save({k: v.long() for k, v in model.state_dict().items()}, tmp_path / "int.pt")
    with pytest.raises(ModelLoadError, match="torch.int64, but the model holds torch.float32"):
        build_model("lenet300", (1, 28, 28), 10, checkpoint=str(tmp_path / "int.pt"))
    state = model.state_dict()
    state["3.weight"] = torch.full_like(state["3.weight"], float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(ModelLoadError, match="'3.weight' holds NaN"):
        build_model("lenet300", (1, 28, 28), 10, checkpoint=str(tmp_path / "nan.pt"))


def test_a_checkpoint_with_another_head_names_the_keys_and_loads_without_it(tmp_path):
    from prunekit.io import load_weights_into

    trained = build_model("lenet300", (1, 28, 28), 5)
    torch.save({f"module.{k}": v for k, v in trained.state_dict().items()}, tmp_path / "dp.pt")  # DataParallel keys
    fresh = build_model("lenet300", (1, 28, 28), 10)
    with pytest.raises(ModelLoadError, match=r"5.weight \[5, 100\] in the file vs \[10, 100\] in the model.*'5\.\*'"):
        load_weights_into(fresh, tmp_path / "dp.pt")
    head = fresh[5].weight.detach().clone()
    load_weights_into(fresh, tmp_path / "dp.pt", exclude=["5.*"])
    assert torch.equal(fresh[1].weight, trained[1].weight) and torch.equal(fresh[5].weight, head)


def test_unknown_model_kwargs_are_a_config_error():
    with pytest.raises(ConfigError, match="takes no keyword argument.*'bogus'"):
        build_model("lenet300", (1, 28, 28), 10, {"bogus": 1})


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_model_kwarg_is_refused_naming_it(value):
    from prunekit.pipeline import parse_recipe

    raw = yaml.safe_load((Path(__file__).parents[1] / "recipes" / "torchvision-imagefolder.yaml").read_text())
    raw["model"]["kwargs"] = {**raw["model"].get("kwargs", {}), "dropout": value}
    with pytest.raises(RecipeError, match=f"model.kwargs.dropout is {value}: give a finite number"):
        parse_recipe(raw, "t", notice=None)


def test_a_run_diverging_from_weight_decay_names_that_setting(digits):
    from prunekit.errors import TrainingDivergedError
    from prunekit.training import TrainConfig, train

    model = build_model("lenet300", digits.input_shape, 10)
    with pytest.raises(TrainingDivergedError, match=r"at step \d+ .*weight_decay=1000.*lower the weight decay "
                                                    r"\(lr × weight_decay = 50"):
        train(model, digits, TrainConfig(epochs=2, lr=0.05, weight_decay=1e3, schedule="constant"), progress=False)
