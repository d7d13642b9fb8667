"""Recipes with zoo models (issue 16.3): ``model: torchvision:NAME`` / ``timm:NAME`` with kwargs and a checkpoint
(another head: an error naming the keys, or ``checkpoint_exclude``), image folders with the model's preprocessing,
and the shipped ``torchvision-imagefolder`` recipe run on a folder the test writes."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from prunekit import load_pruned, zoo
from prunekit.cli.main import main
from prunekit.cli.run import shipped_recipe
from prunekit.data import load_dataset
from prunekit.errors import DataError, ModelLoadError, RecipeError
from prunekit.pipeline import parse_recipe
from prunekit.pipeline.stages import STAGES, Run

pytest.importorskip("torchvision")


def _folder(root: Path, n: int = 12) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, tint in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        d = root / "images" / cls
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = np.clip(rng.normal(0, 40, (40, 56, 3)) + tint, 0, 255).astype(np.uint8)
            Image.fromarray(a).save(d / f"{i}.png")
    return root / "images"


def _recipe(folder: Path, **model) -> dict:
    raw = yaml.safe_load(shipped_recipe("torchvision-imagefolder").read_text())
    raw["data"]["name"] = f"imagefolder:{folder}"
    raw["model"].update(model)
    return raw


def test_the_shipped_imagefolder_recipe_runs_and_its_model_loads(tmp_path, monkeypatch, capsys):
    _folder(tmp_path)
    monkeypatch.chdir(tmp_path)  # the recipe names the folder relative to where it runs: images
    assert main(["run", str(shipped_recipe("torchvision-imagefolder")), "--out", "out", "--no-progress",
                 "--threads", "1"]) == 0
    assert "preprocessing for torchvision:mobilenet_v3_small: resize 72, crop 64" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["dense"]["macs"] / report["pruned"]["macs"] == pytest.approx(1 / 0.6, rel=0.05)
    assert all(np.isfinite(report[k]["accuracy"]) for k in ("dense", "pruned"))
    model = load_pruned(tmp_path / "out").eval()
    saved = json.loads((tmp_path / "out" / "pruned.json").read_text())["model"]
    assert saved["name"] == "torchvision:mobilenet_v3_small" and saved["kwargs"]["num_classes"] == 2
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 2)


def _model_stage(raw: dict, tmp_path: Path):
    run = Run(parse_recipe(raw, "t", notice=None), tmp_path / "o", progress=False, quiet=True)
    return STAGES.get("model").fn(run, STAGES.get("data").fn(run, None)).model


def test_a_checkpoint_with_another_head_names_keys_and_loads_with_checkpoint_exclude(tmp_path):
    folder = _folder(tmp_path)
    trained = zoo.build("torchvision:mobilenet_v3_small", {"dropout": 0.1}, num_classes=5)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, tmp_path / "ft.safetensors")
    with pytest.raises(ModelLoadError, match=r"classifier.3.weight \[5, 1024\] in the file vs \[2, 1024\].*"
                                             r"'classifier.3.\*'"):
        _model_stage(_recipe(folder, checkpoint=str(tmp_path / "ft.safetensors")), tmp_path)
    model = _model_stage(_recipe(folder, checkpoint=str(tmp_path / "ft.safetensors"),
                                 checkpoint_exclude=["classifier.3.*"]), tmp_path)
    assert torch.equal(model.features[0][0].weight, trained.features[0][0].weight)
    assert model.classifier[3].out_features == 2


@pytest.mark.parametrize("model,match", [
    ({"name": "torchvision:"}, "names nothing after torchvision: .write torchvision:NAME"),
    ({"name": "lenet300", "checkpoint_exclude": ["fc.*"]}, "set model.checkpoint too"),
])
def test_bad_zoo_model_sections(tmp_path, model, match):
    raw = _recipe(tmp_path)
    raw["model"] = model
    with pytest.raises(RecipeError, match=match):
        parse_recipe(raw, "t", notice=None)


def test_unknown_zoo_kwargs_and_names_fail_before_training(tmp_path):
    folder = _folder(tmp_path)
    with pytest.raises(Exception, match="ignores kwargs .'bogus'."):
        _model_stage(_recipe(folder, kwargs={"bogus": 1}), tmp_path)
    with pytest.raises(Exception, match="torchvision has no model 'resnet_nope'"):
        _model_stage(_recipe(folder, name="torchvision:resnet_nope"), tmp_path)


def test_imagefolder_preprocessing_resizes_crops_and_normalises(tmp_path):
    from PIL import Image

    for cls, value in (("a", 0), ("b", 255)):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(np.full((30, 60, 3), value, np.uint8)).save(tmp_path / cls / f"{i}.png")
    pre = zoo.preprocessing("torchvision:resnet18")
    assert (pre["image_size"], pre["resize"], pre["mean"]) == (224, 256, [0.485, 0.456, 0.406])
    d = load_dataset(f"imagefolder:{tmp_path}", image_size=16, resize=20, mean=[0.5, 0.5, 0.5],
                     std=[0.25, 0.5, 1.0], grayscale=False)
    x = torch.cat([d.x_train, d.x_val, d.x_test])
    assert x.shape[1:] == (3, 16, 16)
    assert sorted({round(float(v), 4) for v in x[:, 0].flatten()}) == [-2.0, 2.0]  # (0 - .5)/.25, (1 - .5)/.25
    assert sorted({round(float(v), 4) for v in x[:, 2].flatten()}) == [-0.5, 0.5]
    with pytest.raises(DataError, match="mean and std go together"):
        load_dataset(f"imagefolder:{tmp_path}", mean=[0.5])
    with pytest.raises(DataError, match="std must be 3 finite numbers"):
        load_dataset(f"imagefolder:{tmp_path}", grayscale=False, mean=[0, 0, 0], std=[1, float("nan"), 1])


def test_the_run_and_its_export_read_the_same_preprocessing(tmp_path):
    """``prunekit export RUN`` reloads the data from recipe.yaml: the zoo preprocessing must come with it."""
    recipe = parse_recipe(_recipe(tmp_path / "images"), "t", notice=None)
    options = recipe.data_options()
    assert options["image_size"] == 64 and options["resize"] == 72  # the recipe's own options win
    assert options["mean"] == [0.485, 0.456, 0.406] and options["interpolation"] == "bilinear"
    plain = parse_recipe({**_recipe(tmp_path / "images"), "model": "lenet300"}, "t", notice=None)
    assert plain.data_options() == {"image_size": 64, "resize": 72}
