"""Recipes validate up front; the CLI runs them end to end and refuses bad input cleanly."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from prunekit.cli.main import main
from prunekit.cli.run import shipped_recipe, shipped_recipe_names
from prunekit.errors import RecipeError
from prunekit.recipe import parse_recipe
from prunekit.recipe.runner import load_pruned

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "name": "tiny", "seed": 1, "model": "lenet300", "data": "digits",
    "train": {"epochs": 2, "lr": 0.05}, "finetune": {"epochs": 1, "lr": 0.01},
    "prune": {"criterion": "l1", "scope": "global", "target": 0.75, "schedule": "iterative", "steps": 2},
    "measure": {"latency_batches": [1, 8], "latency_repeats": 3},
}


def _write(tmp_path, recipe, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize("name", shipped_recipe_names())
def test_every_shipped_recipe_loads(name):
    from prunekit.recipe.structured import load_any_recipe  # unstructured or structured (``structured:`` key)

    recipe = load_any_recipe(shipped_recipe(name))
    assert recipe.version == 1 and recipe.model.name and recipe.data.name
    assert (REPO / "recipes" / f"{name}.yaml").is_file()  # the repo's recipes/ shows them too
    assert len(shipped_recipe_names()) >= 3


@pytest.mark.parametrize("patch,match", [
    ({"prune": {"scop": "global"}}, r"recipe.prune: unknown key\(s\) 'scop'; valid keys: criterion"),
    ({"prune": {"target": 1.0}}, r"target must be in \[0, 1\), got 1.0"),
    ({"prune": {"target": -0.2}}, r"target must be in \[0, 1\)"),
    ({"prune": {"criterion": "taylor9"}},
     "unknown criterion 'taylor9'; choose one of: apoz, bn_folded, fpgm, gradient"),
    ({"train": {"epochs": "ten"}}, "recipe.train.epochs: expected int, got 'ten'"),
    ({"model": "resnet9000"}, "unknown model 'resnet9000'; choose one of"),
    ({"data": "imagenet"}, "unknown dataset 'imagenet'; choose one of"),
    ({"colour": "blue"}, r"unknown key\(s\) 'colour'"),
    ({"version": 7}, "version 7 is not supported"),
    ({"prune": {"scope": "threshold"}}, "needs a threshold value"),
])
def test_recipe_errors_name_key_value_and_choices(patch, match):
    raw = {**TINY, **{k: ({**TINY.get(k, {}), **v} if isinstance(v, dict) else v) for k, v in patch.items()}}
    with pytest.raises(RecipeError, match=match):
        parse_recipe(raw)


def test_run_writes_complete_report_and_loadable_model(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(_write(tmp_path, TINY)), "--out", str(out), "--no-progress"]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"report.json", "report.md", "model.safetensors", "model.json", "recipe.yaml",
            "accuracy_vs_sparsity.png", "layer_sparsity.png"} <= files
    report = json.loads((out / "report.json").read_text())
    for key in ("model", "dataset", "seed", "dense", "pruned", "sparsity", "compression", "steps"):
        assert key in report
    for side in ("dense", "pruned"):
        for key in ("accuracy", "params", "nonzero_params", "macs", "nonzero_macs", "size_bytes",
                    "latency_ms"):
            assert key in report[side]
        assert 0.0 <= report[side]["accuracy"] <= 1.0
        assert set(report[side]["latency_ms"]) == {"1", "8"}
        assert report[side]["latency"]["8"]["interleaved"]  # dense and pruned timed side by side
    assert report["sparsity"] == pytest.approx(0.75, abs=1e-4)
    assert report["compression"] == pytest.approx(report["pruned"]["params"] / report["pruned"]["nonzero_params"])
    assert report["pruned"]["nonzero_macs"] < 0.3 * report["dense"]["nonzero_macs"]
    assert [s["step"] for s in report["steps"]] == [1, 2]
    assert report["pruned"]["accuracy"] > 0.8
    # the recipe as run round-trips, and the saved model loads back with the reported accuracy
    assert parse_recipe(yaml.safe_load((out / "recipe.yaml").read_text())).seed == 1
    model = load_pruned(out)
    from prunekit.data import load_dataset
    from prunekit.training import evaluate

    d = load_dataset("digits")
    assert evaluate(model, d.x_test, d.y_test).accuracy == pytest.approx(report["pruned"]["accuracy"])
    nz = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    assert nz == report["pruned"]["nonzero_params"]


def _expect_failure(argv, capsys, match):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("prunekit: error:") and len(err.splitlines()) == 1, err
    assert match in err, err


def test_output_dir_with_results_is_refused_unless_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.json").write_text("{}")
    recipe = _write(tmp_path, TINY)
    _expect_failure(["run", str(recipe), "--out", str(out)], capsys, "already holds results; pass --force")
    assert (out / "report.json").read_text() == "{}"  # untouched
    assert main(["run", str(recipe), "--out", str(out), "--force", "--no-progress"]) == 0
    assert json.loads((out / "report.json").read_text())["model"] == "lenet300"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging left


@pytest.mark.parametrize("patch,match", [
    ({"data": "cifar"}, "unknown dataset 'cifar'"),
    ({"model": "vgg"}, "unknown model 'vgg'"),
    ({"prune": {**TINY["prune"], "criterion": "l3"}}, "unknown criterion 'l3'"),
    ({"prune": {**TINY["prune"], "target": 1.2}}, "target must be in [0, 1), got 1.2"),
])
def test_cli_bad_names_fail_in_one_line_and_write_nothing(tmp_path, capsys, patch, match):
    out = tmp_path / "out"
    _expect_failure(["run", str(_write(tmp_path, {**TINY, **patch})), "--out", str(out)], capsys, match)
    assert not out.exists()


def test_model_file_that_does_not_load(tmp_path, capsys):
    (tmp_path / "broken.safetensors").write_bytes(b"garbage")
    recipe = {**TINY, "model": {"name": "lenet300", "checkpoint": str(tmp_path / "broken.safetensors")}}
    out = tmp_path / "out"
    _expect_failure(["run", str(_write(tmp_path, recipe)), "--out", str(out)], capsys, "cannot load checkpoint")
    assert not out.exists()


def test_missing_and_invalid_recipe_files(tmp_path, capsys):
    _expect_failure(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")], capsys, "does not exist")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    _expect_failure(["run", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o")], capsys, "not valid YAML")


def test_gradual_schedule_reaches_target_during_training(tmp_path):
    recipe = {**TINY, "prune": {"criterion": "l2", "scope": "layer", "target": 0.6, "schedule": "gradual",
                                "steps": 4, "gradual_end": 0.5},
              "finetune": {"epochs": 2, "lr": 0.01}}
    from prunekit.recipe.runner import run_recipe

    report = run_recipe(parse_recipe(recipe), tmp_path / "g", progress=False, quiet=True)
    assert report["sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert len(report["steps"]) == 2  # one record per fine-tuning epoch
    assert report["steps"][0]["sparsity"] == pytest.approx(0.6, abs=1e-3)  # reached by mid-run
    assert all(v == pytest.approx(0.6, abs=0.01) for v in report["pruned"]["layer_sparsity"].values())
