"""The one saved-model format: masked and physically smaller models round-trip from data only; loading never
runs code a file names; every broken file is a ModelLoadError naming the file and the field."""

from __future__ import annotations

import json
import os

import pytest
import torch
from torch import nn

import prunekit as pk
from prunekit.errors import ModelLoadError
from prunekit.models import build_model
from prunekit.pruners import UnstructuredConfig, UnstructuredPruner


def _masked_lenet(tmp_path, make_permanent: bool = False):
    torch.manual_seed(0)
    model = build_model("lenet300", (1, 8, 8), 10)
    pruner = UnstructuredPruner(model, UnstructuredConfig(allocation="uniform"))
    pruner.prune_to(0.75)
    if make_permanent:
        pruner.make_permanent()
    pk.save_pruned(model, tmp_path / "m", constructor="lenet300", input_shape=(1, 8, 8), num_classes=10)
    return model


@pytest.mark.parametrize("permanent", [False, True])
def test_a_masked_model_round_trips_from_its_registered_name(tmp_path, permanent):
    model = _masked_lenet(tmp_path, permanent)
    meta = json.loads((tmp_path / "m" / "pruned.json").read_text())
    assert meta["format"] == "prunekit.pruned" and meta["model"]["name"] == "lenet300"
    assert sorted(os.listdir(tmp_path / "m")) == ["model.safetensors", "pruned.json"]
    if not permanent:  # masks still installed: folded into the weights, their sparsity recorded
        assert meta["masks"] == pytest.approx({"1.weight": 0.75, "3.weight": 0.75, "5.weight": 0.75})
    loaded = pk.load_pruned(tmp_path / "m")
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert not [n for n, _ in loaded.named_buffers() if n.endswith("_mask")]
    assert int(torch.count_nonzero(loaded[1].weight)) == round(0.25 * 300 * 64)


def _attack(tmp_path, name: str, kwargs: dict) -> None:
    _masked_lenet(tmp_path)
    meta = json.loads((tmp_path / "m" / "pruned.json").read_text())
    meta["model"] = {"name": name, "kwargs": kwargs, "input_shape": None, "num_classes": None}
    (tmp_path / "m" / "pruned.json").write_text(json.dumps(meta))


def test_a_file_naming_os_system_does_not_run_the_command(tmp_path):
    pwned = tmp_path / "PWNED"
    _attack(tmp_path, "os:system", {"command": f"touch {pwned}"})
    with pytest.raises(ModelLoadError, match=r"pruned.json: field 'model.name': 'os:system' names code to import.*"
                                             r"loading never runs code"):
        pk.load_pruned(tmp_path / "m")
    assert not pwned.exists()


def test_a_file_naming_os_abort_is_refused_and_the_process_lives(tmp_path):
    _attack(tmp_path, "os:abort", {})
    with pytest.raises(ModelLoadError, match="'os:abort' names code to import"):
        pk.load_pruned(tmp_path / "m")


def test_code_loads_only_when_the_caller_opts_in(tmp_path):
    torch.manual_seed(0)
    lin = nn.Linear(4, 3)
    pk.save_pruned(lin, tmp_path / "m", constructor="torch.nn:Linear", kwargs={"in_features": 4, "out_features": 3})
    with pytest.raises(ModelLoadError, match="'torch.nn:Linear' names code"):
        pk.load_pruned(tmp_path / "m")
    x = torch.randn(2, 4)
    for loaded in (pk.load_pruned(tmp_path / "m", trust_code=True),
                   pk.load_pruned(tmp_path / "m", constructor=nn.Linear),
                   pk.load_pruned(tmp_path / "m", nn.Linear(4, 3))):
        assert torch.equal(loaded(x), lin(x))


def test_a_model_saved_without_a_name_needs_the_model(tmp_path):
    pk.save_pruned(nn.Linear(4, 3), tmp_path / "m")
    with pytest.raises(ModelLoadError, match=r"field 'model.name': null .*load_pruned\(dir, model=...\)"):
        pk.load_pruned(tmp_path / "m")


def _edit(tmp_path, fn) -> None:
    f = tmp_path / "m" / "pruned.json"
    meta = json.loads(f.read_text())
    fn(meta)
    f.write_text(json.dumps(meta))


@pytest.mark.parametrize("edit,match", [
    (lambda m: m.pop("architecture"), r"field 'architecture': expected an object, got None"),
    (lambda m: m.pop("model"), r"field 'model': expected an object"),
    (lambda m: m["model"].update(kwargs=[1]), r"field 'model.kwargs': expected an object"),
    (lambda m: m["model"].update(input_shape=None), r"field 'model.input_shape': built-in model 'lenet300' needs"),
    (lambda m: m["model"].update(name="resnet9000"), r"field 'model.name': unknown model 'resnet9000'"),
    (lambda m: m["model"].update(kwargs={"width": 3}), r"field 'model': building 'lenet300' with kwargs .*width"),
    (lambda m: m.update(format_version=7), r"field 'format_version': 'prunekit.pruned' v7"),
    (lambda m: m["architecture"]["tensors"].update({"1.weight": [2**40, 2**20]}),
     r"field 'architecture.tensors.1.weight': not a plausible tensor shape"),
    (lambda m: m["architecture"]["tensors"].update({"1.weight": ["a"]}),
     r"field 'architecture.tensors.1.weight': not a plausible tensor shape"),
    (lambda m: m["architecture"]["tensors"].update({"1.weight": [200, 64]}),
     r"model.safetensors: tensor '1.weight' has shape \[300, 64\], but pruned.json says \[200, 64\]"),
    (lambda m: m["architecture"]["aliases"].update({"x": "nope"}), r"field 'architecture.aliases.x': names no"),
    (lambda m: m["architecture"]["modules"]["1"]["attrs"].update(forward=3),
     r"field 'architecture.modules.1.attrs.forward': names a method"),
    (lambda m: m["architecture"]["modules"]["1"]["attrs"].update(out_features="x"),
     r"field 'architecture.modules.1.attrs.out_features': expected an integer"),
    (lambda m: m["architecture"]["modules"].update({"9": {"type": "Linear", "attrs": {}}}),
     r"field 'architecture.modules.9': module \(Linear\) is not in the model given"),
])
def test_every_broken_field_is_a_model_load_error_naming_file_and_field(tmp_path, edit, match):
    _masked_lenet(tmp_path)
    _edit(tmp_path, edit)
    with pytest.raises(ModelLoadError, match=match):
        pk.load_pruned(tmp_path / "m")


def test_garbage_json_and_missing_files(tmp_path):
    _masked_lenet(tmp_path)
    (tmp_path / "m" / "pruned.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match=r"m/pruned.json: not readable JSON \(JSONDecodeError"):
        pk.load_pruned(tmp_path / "m")
    (tmp_path / "m" / "pruned.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match="expected a JSON object at the top level, got list"):
        pk.load_pruned(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="no pruned.json; save the model with prunekit.save_pruned"):
        pk.load_pruned(tmp_path / "nowhere")


@pytest.mark.parametrize("damage,match", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "not a readable safetensors file"),
    (lambda p: p.write_bytes(b"garbage"), "not a readable safetensors file"),
    (lambda p: p.unlink(), "model.safetensors: missing"),
])
def test_truncated_or_missing_weights(tmp_path, damage, match):
    _masked_lenet(tmp_path)
    damage(tmp_path / "m" / "model.safetensors")
    with pytest.raises(ModelLoadError, match=match):
        pk.load_pruned(tmp_path / "m")


@pytest.mark.parametrize("value,match", [
    (lambda t: t.long(), r"tensor '1.weight' is torch.int64, but the model holds torch.float32"),
    (lambda t: torch.full_like(t, float("nan")), r"tensor '1.weight' holds NaN or infinite values"),
])
def test_weights_of_the_wrong_dtype_or_not_finite(tmp_path, value, match):
    from safetensors.torch import load_file, save_file

    _masked_lenet(tmp_path)
    f = tmp_path / "m" / "model.safetensors"
    state = load_file(str(f))
    state["1.weight"] = value(state["1.weight"])
    save_file(state, str(f))
    with pytest.raises(ModelLoadError, match=match):
        pk.load_pruned(tmp_path / "m")


def test_an_old_masked_model_directory_says_how_to_convert(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model.json").write_text(json.dumps({"format_version": 1, "model": "os:system"}))
    with pytest.raises(ModelLoadError, match=r"prunekit 0.x masked-model directory \(model.json\).*re-run the recipe"):
        pk.load_pruned(tmp_path / "old")


def test_an_old_structured_run_directory_says_how_to_convert(tmp_path):
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "spec.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"0.x structured run directory \(model/spec.json\).*re-run the recipe"):
        pk.load_pruned(tmp_path / "run")
