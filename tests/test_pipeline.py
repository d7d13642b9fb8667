"""The pipeline's registries and the version-1 → version-2 recipe conversion."""

from __future__ import annotations

import pytest
import yaml

from prunekit.cli.main import main
from prunekit.errors import RecipeError
from prunekit.pipeline import ORDER, PRUNE_METHODS, STAGES, convert_v1, load_recipe, parse_recipe
from prunekit.pipeline.stages import check_chain

BASE = {"version": 2, "name": "t", "data": "digits", "model": "lenet300", "train": {"epochs": 1}}


def test_the_stages_chain_and_a_broken_chain_is_caught():
    assert ORDER == ("data", "model", "train", "prune", "recover", "dynamic", "measure", "save", "export", "report")
    assert set(STAGES.names()) == set(ORDER)
    with pytest.raises(AssertionError, match="stage 'train' takes .*Built"):
        check_chain(("data", "train"))


@pytest.mark.parametrize("method", PRUNE_METHODS.names())
def test_every_method_parses_with_its_defaults_and_round_trips(method):
    r = parse_recipe({**BASE, "prune": {"method": method}})
    assert r.prune.method == method and isinstance(r.prune.options, PRUNE_METHODS.get(method).options)
    again = parse_recipe(yaml.safe_load(yaml.safe_dump(r.to_dict())))
    assert again.to_dict() == r.to_dict()
    assert (r.recover is None) == (not PRUNE_METHODS.get(method).reads_recover)


def test_a_missing_method_lists_the_methods():
    with pytest.raises(RecipeError, match="recipe.prune: missing required key 'method'; choose one of: at_init, grad"):
        parse_recipe({**BASE, "prune": {"sparsity": 0.5}})


@pytest.mark.parametrize("old,new", [
    ({"prune": {"criterion": "l2", "scope": "layer", "target": 0.6, "schedule": "gradual", "steps": 4,
                "gradual_end": 0.5}, "finetune": {"epochs": 2, "lr": 0.01}},
     {"prune": {"method": "gradual", "importance": "l2", "sparsity": 0.6, "allocation": "uniform", "steps": 4,
                "end": 0.5}, "recover": {"epochs": 2, "lr": 0.01}}),
    ({"prune": {"schedule": "lottery", "target": 0.9, "steps": 3, "lottery": {"rewind": "iteration", "rewind_step": 5}},
      "finetune": {"epochs": 2}},
     {"prune": {"method": "lottery", "sparsity": 0.9, "steps": 3, "rewind": "iteration", "rewind_step": 5}}),
    ({"prune": {"schedule": "soft_filter", "granularity": "filter", "scope": "layer", "target": 0.5, "steps": 9}},
     {"prune": {"method": "soft_filter", "sparsity": 0.5}, "recover": {"epochs": 3, "lr": 0.01}}),
    ({"prune": {"schedule": "one_shot", "target": 0.3}, "regularize": {"kind": "bn_l1", "strength": 1e-4}},
     {"prune": {"method": "slimming", "sparsity": 0.3, "strength": 1e-4}, "recover": {"epochs": 3, "lr": 0.01}}),
    ({"prune": {"schedule": "one_shot", "granularity": "nm", "nm": [2, 4], "target": 0.5},
      "regularize": {"kind": "l1", "strength": 1e-5}, "recovery": {"method": "distill", "distill": {"alpha": 0.5}}},
     {"prune": {"method": "one_shot", "granularity": "nm", "nm": [2, 4], "sparsity": 0.5,
                "regularize": {"kind": "l1", "strength": 1e-5}},
      "recover": {"epochs": 3, "lr": 0.01, "method": "distill", "distill": {"alpha": 0.5}}}),
    ({"structured": {"criterion": "lp", "strategy": "global", "target": {"params": 0.4},
                     "allocation_latency_weight": 1}, "inference": {"fold_bn": True}},
     {"prune": {"method": "structured", "importance": "l2", "allocation": "global", "budget": {"params_kept": 0.4},
                "latency_weight": 1}, "recover": {"epochs": 3, "lr": 0.005},
      "measure": {"inference": {"fold_bn": True}}}),
])
def test_version_1_keys_convert(old, new):
    assert convert_v1({"version": 1, **old}) == {"version": 2, **new}


def test_a_version_1_recipe_loads_with_a_one_line_notice(tmp_path, capsys):
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump({"model": "lenet300", "data": "digits",
                                    "prune": {"criterion": "l1", "target": 0.5, "schedule": "one_shot"}}))
    r = load_recipe(path)
    assert (r.prune.method, r.prune.options.sparsity, r.recover.lr) == ("one_shot", 0.5, 0.01)
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "version-1 recipe, converted on load" in err and "convert-recipe" in err


def test_convert_recipe_command_writes_a_version_2_file_with_the_comments(tmp_path, capsys):
    from pathlib import Path

    old = Path(__file__).parent / "data" / "recipes_v1" / "lenet5-mnist.yaml"
    new = tmp_path / "new.yaml"
    assert main(["convert-recipe", str(old), str(new)]) == 0
    text = new.read_text()
    assert text.startswith("# LeNet-5") and "version: 2" in text and "sparsity: 0.92" in text
    assert load_recipe(new).to_dict() == load_recipe(old, notice=None).to_dict()
    assert main(["convert-recipe", str(old), str(new)]) == 2  # never overwrites
    assert main(["convert-recipe", str(new), str(tmp_path / "again.yaml")]) == 2
    assert "is not a version-1 recipe" in capsys.readouterr().err
