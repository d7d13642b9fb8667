"""Built-in and user data, built-in and user models, checkpoints."""

import numpy as np
import pytest
import torch
from torch import nn

from prunekit.data import DATASETS, load_dataset
from prunekit.errors import ConfigError, DataError, ModelLoadError
from prunekit.io import load_state_dict, load_weights_into, save_state_dict
from prunekit.models import MODELS, build_model


@pytest.mark.parametrize("name,shape,sizes", [
    ("mnist", (1, 28, 28), {"train": 3500, "val": 500, "test": 1000}),
    ("digits", (1, 8, 8), {"train": 1258, "val": 180, "test": 359}),
    ("mnist1d", (1, 40), {"train": 3600, "val": 400, "test": 1000}),
])
def test_builtin_datasets(name, shape, sizes):
    d = load_dataset(name)
    assert d.input_shape == shape and d.sizes() == sizes and d.num_classes == 10
    assert set(d.y_train.unique().tolist()) == set(range(10))
    assert abs(float(d.x_train.mean())) < 0.2  # normalised
    again = load_dataset(name)
    assert torch.equal(again.y_test, d.y_test)  # the split is fixed


def test_registry_lists_choices_for_unknown_names():
    names = "digits, imagefolder, lee-sts, mnist, mnist1d, rotten-tomatoes, tensors, text"
    with pytest.raises(ConfigError, match=names):
        load_dataset("cifar10")
    with pytest.raises(ConfigError, match="cnn1d, lenet300, lenet5, resnet_mini"):
        build_model("resnet18", (1, 28, 28), 10)
    assert "mnist" in DATASETS and "lenet300" in MODELS


def test_tensor_files_npz_and_pt(tmp_path):
    x = np.random.rand(50, 1, 4, 4).astype(np.float32)
    y = np.arange(50) % 3
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_dataset(f"tensors:{tmp_path / 'd.npz'}")
    assert d.input_shape == (1, 4, 4) and d.num_classes == 3 and sum(d.sizes().values()) == 50
    torch.save({"x_train": torch.randn(8, 5), "y_train": torch.arange(8) % 2,
                "x_val": torch.randn(2, 5), "y_val": torch.tensor([0, 1]),
                "x_test": torch.randn(3, 5), "y_test": torch.tensor([1, 0, 1])}, tmp_path / "d.pt")
    d = load_dataset("tensors", path=str(tmp_path / "d.pt"))
    assert d.sizes() == {"train": 8, "val": 2, "test": 3}
    np.savez(tmp_path / "bad.npz", a=x)
    with pytest.raises(DataError, match="expected arrays x, y"):
        load_dataset(f"tensors:{tmp_path / 'bad.npz'}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("tensors:/nonexistent.npz")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(f"tensors:{tmp_path / 'junk.pt'}")


def test_image_folder(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(8):
            Image.fromarray((np.random.rand(10, 12) * 255).astype(np.uint8)).save(tmp_path / cls / f"{i}.png")
    d = load_dataset(f"imagefolder:{tmp_path}", image_size=16)
    assert d.input_shape == (1, 16, 16) and d.num_classes == 2 and sum(d.sizes().values()) == 16
    with pytest.raises(DataError, match="one subfolder per class"):
        load_dataset(f"imagefolder:{tmp_path / 'cat'}")


@pytest.mark.parametrize("name", MODELS.names())
def test_builtin_models_forward_and_backward(name):
    shape = (1, 40) if name == "cnn1d" else (1, 28, 28)
    model = build_model(name, shape, 10)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    out.sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.isfinite().all()]
    assert not no_grad, no_grad  # every parameter takes part in the forward


def test_published_parameter_counts():
    # Han et al. 2015 Table 1: LeNet-300-100 267K, LeNet-5 431K parameters.
    count = lambda m: sum(p.numel() for p in m.parameters())
    assert count(build_model("lenet300", (1, 28, 28), 10)) == 266_610
    assert count(build_model("lenet5", (1, 28, 28), 10)) == 431_080
    with pytest.raises(ConfigError, match="16×16"):
        build_model("lenet5", (1, 8, 8), 10)


def test_user_factory_and_checkpoint_round_trip(tmp_path):
    model = build_model("torch.nn:Linear", (), 0, {"in_features": 3, "out_features": 2})
    assert isinstance(model, nn.Linear)
    save_state_dict(model.state_dict(), tmp_path / "w.safetensors", {"note": "x"})
    torch.save(model.state_dict(), tmp_path / "w.pt")
    for f in ("w.safetensors", "w.pt"):
        other = build_model("torch.nn:Linear", (), 0, {"in_features": 3, "out_features": 2},
                            checkpoint=str(tmp_path / f))
        assert torch.equal(other.weight, model.weight)
    with pytest.raises(ModelLoadError, match="does not fit"):
        load_weights_into(nn.Linear(4, 2), tmp_path / "w.pt")
    with pytest.raises(ModelLoadError, match="cannot import"):
        build_model("no_such_pkg.mod:make", (), 0)
    with pytest.raises(ModelLoadError, match="no callable"):
        build_model("torch.nn:NoSuchThing", (), 0)


def test_checkpoints_never_unpickle_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"weight": torch.ones(1), "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ModelLoadError, match="safely"):
        load_state_dict(tmp_path / "evil.pt")
    (tmp_path / "corrupt.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ModelLoadError, match="cannot load"):
        load_state_dict(tmp_path / "corrupt.safetensors")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_state_dict(tmp_path / "missing.pt")
