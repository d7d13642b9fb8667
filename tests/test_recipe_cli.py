"""Recipes validate up front; the CLI runs them end to end and refuses bad input cleanly."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from prunekit.cli.main import main
from prunekit.cli.run import shipped_recipe, shipped_recipe_names
from prunekit.errors import RecipeError
from prunekit.pipeline import load_recipe, parse_recipe, run_recipe
from prunekit.structured.serialize import load_pruned

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "name": "tiny", "seed": 1, "model": "lenet300", "data": "digits",
    "train": {"epochs": 2, "lr": 0.05}, "recover": {"epochs": 1, "lr": 0.01},
    "prune": {"method": "iterative", "importance": "l1", "allocation": "global", "sparsity": 0.75, "steps": 2},
    "measure": {"latency_batches": [1, 8], "latency_repeats": 3},
}


def _write(tmp_path, recipe, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


#: shipped recipes written after version 2 (no version-1 original)
NEW_IN_V2 = ["deploy-lenet-int8", "deploy-minilm-int8", "deploy-resnet-int8", "early-exit-resnet-mnist",
             "minilm-heads-ffn", "minilm-wanda-2of4", "torchvision-imagefolder"]
V1_NAMES = sorted(p.stem for p in (REPO / "tests" / "data" / "recipes_v1").glob("*.yaml"))


@pytest.mark.parametrize("name", shipped_recipe_names())
def test_every_shipped_recipe_is_version_2_and_equals_its_converted_version_1(name):
    """Each shipped recipe is the conversion of the version-1 file it replaced (kept in tests/data/recipes_v1)."""
    raw = yaml.safe_load(shipped_recipe(name).read_text())
    assert raw["version"] == 2
    recipe = parse_recipe(raw, notice=None)
    assert (REPO / "recipes" / f"{name}.yaml").is_file()  # the repo's recipes/ shows them too
    if name in NEW_IN_V2:
        return
    old = load_recipe(REPO / "tests" / "data" / "recipes_v1" / f"{name}.yaml", notice=None)
    assert old.to_dict() == recipe.to_dict()


def test_shipped_names_are_the_wave_1_recipes_and_the_new_ones():
    assert shipped_recipe_names() == sorted(V1_NAMES + NEW_IN_V2)


@pytest.mark.parametrize("patch,match", [
    ({"prune": {"alocation": "global"}}, r"recipe.prune: unknown key\(s\) 'alocation'; valid keys: importance"),
    ({"prune": {"sparsity": 1.0}}, r"sparsity must be in \[0, 1\), got 1.0"),
    ({"prune": {"sparsity": -0.2}}, r"sparsity must be in \[0, 1\)"),
    ({"prune": {"sparsity": float("nan")}}, r"recipe.prune.sparsity: expected a finite number"),
    ({"prune": {"importance": "taylor9"}}, "unknown criterion 'taylor9'; choose one of: apoz, bn_folded, fpgm, grad"),
    ({"prune": {"method": "snap"}}, "recipe.prune.method: unknown prune method 'snap'; choose one of: at_init"),
    ({"prune": {"allocation": "layer"}},
     "unknown allocation 'layer'; choose one of: global, ratios, row, threshold, unif"),
    ({"train": {"epochs": "ten"}}, "recipe.train.epochs: expected int, got 'ten'"),
    ({"train": {"lr": float("inf")}}, "recipe.train.lr: expected a finite number"),
    ({"model": "resnet9000"}, "unknown model 'resnet9000'; choose one of"),
    ({"data": "imagenet"}, "unknown dataset 'imagenet'; choose one of"),
    ({"data": "imagefolder:"}, "data 'imagefolder:' names no path: write imagefolder:PATH"),
    ({"colour": "blue"}, r"unknown key\(s\) 'colour'"),
    ({"version": 7}, "version 7 is not supported"),
    ({"seed": 2**70}, r"seed must be in \[0, 2\*\*63\)"),
    ({"prune": {"allocation": "threshold"}}, "allocation 'threshold' needs threshold"),
    # settings that would be accepted and ignored are refused
    ({"prune": {"nm": [2, 4]}}, "nm is read by granularity: nm only"),
    ({"prune": {"threshold": 0.1}}, "threshold is read by allocation: threshold only"),
    ({"prune": {"ratios": {"1.weight": 0.5}}}, "ratios are read by allocation: ratios only"),
    ({"prune": {"rewind": "init"}}, r"unknown key\(s\) 'rewind'.*method 'iterative'"),
    ({"prune": {"calibration_samples": 64}}, "calibration_samples is read only by criteria that score with data"),
    ({"recover": {"distill": {"alpha": 0.5}}}, "distill is read by method: distill only"),
])
def test_recipe_errors_name_key_value_and_choices(patch, match):
    raw = {**TINY, **{k: ({**TINY.get(k, {}), **v} if isinstance(v, dict) else v) for k, v in patch.items()}}
    with pytest.raises(RecipeError, match=match):
        parse_recipe(raw)


def test_run_writes_complete_report_and_loadable_model(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(_write(tmp_path, TINY)), "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"report.json", "report.md", "model.safetensors", "pruned.json", "recipe.yaml",
            "accuracy_vs_sparsity.png", "layer_sparsity.png"} <= files
    report = json.loads((out / "report.json").read_text())
    for key in ("model", "dataset", "seed", "dense", "pruned", "sparsity", "compression", "steps", "accuracy_drop_pt"):
        assert key in report
    for side in ("dense", "pruned"):
        for key in ("accuracy", "params", "nonzero_params", "macs", "nonzero_macs", "size_bytes",
                    "latency_ms"):
            assert key in report[side]
        assert set(report[side]["latency_ms"]) == {"1", "8"}
        assert report[side]["latency"]["8"]["interleaved"]  # dense and pruned timed side by side
    assert (report["threads"]["threads"], report["threads"]["source"]) == (1, "explicit")  # --threads, recorded
    assert report["sparsity"] == pytest.approx(0.75, abs=1e-4)
    assert report["compression"] == pytest.approx(report["pruned"]["params"] / report["pruned"]["nonzero_params"])
    assert report["pruned"]["nonzero_macs"] < 0.3 * report["dense"]["nonzero_macs"]
    assert [s["step"] for s in report["steps"]] == [1, 2]
    assert report["pruned"]["accuracy"] > 0.8
    # the recipe as run round-trips, and the saved model loads back with the reported accuracy
    assert parse_recipe(yaml.safe_load((out / "recipe.yaml").read_text())).to_dict() == parse_recipe(TINY).to_dict()
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
    (out / ".prunekit-output").write_text("")  # an earlier run's results
    out.chmod(0o750)
    recipe = _write(tmp_path, TINY)
    _expect_failure(["run", str(recipe), "--out", str(out)], capsys, "already holds results; pass --force")
    assert (out / "report.json").read_text() == "{}"  # untouched
    assert main(["run", str(recipe), "--out", str(out), "--force", "--no-progress"]) == 0
    assert json.loads((out / "report.json").read_text())["model"] == "lenet300"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging left
    assert (out.stat().st_mode & 0o777) == 0o750 and (out / ".prunekit-output").is_file()


def test_force_never_deletes_a_directory_prunekit_did_not_write(tmp_path, capsys):
    out = tmp_path / "thesis"
    (out / "sub").mkdir(parents=True)
    (out / "precious.txt").write_text("keep me")
    (out / "sub" / "thesis.tex").write_text("keep me too")
    _expect_failure(["run", str(_write(tmp_path, TINY)), "--out", str(out), "--force"], capsys,
                    "holds files that are not prunekit results")
    assert (out / "precious.txt").read_text() == "keep me" and (out / "sub" / "thesis.tex").is_file()


@pytest.mark.parametrize("patch,match", [
    ({"data": "cifar"}, "unknown dataset 'cifar'"),
    ({"model": "vgg"}, "unknown model 'vgg'"),
    ({"prune": {**TINY["prune"], "importance": "l3"}}, "unknown criterion 'l3'"),
    ({"prune": {**TINY["prune"], "sparsity": 1.2}}, "sparsity must be in [0, 1), got 1.2"),
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


def test_seed_flag_overrides_the_recipe_and_the_demo_keeps_its_name():
    from prunekit.cli.main import build_parser
    from prunekit.cli.run import apply_flags

    demo = load_recipe(shipped_recipe("demo"))
    for argv in (["run", "demo", "--out", "o", "--seed", "3"], ["demo", "--seed", "3"]):
        r = apply_flags(demo, build_parser().parse_args(argv))
        assert (r.seed, r.name) == (3, "demo-lenet300-mnist") and r.prune == demo.prune


def test_a_checkpoint_that_is_a_directory(tmp_path, capsys):
    recipe = {**TINY, "model": {"name": "lenet300", "checkpoint": str(tmp_path)}}
    _expect_failure(["run", str(_write(tmp_path, recipe)), "--out", str(tmp_path / "out")], capsys,
                    "is a directory; give the .safetensors or torch file inside it")


def test_missing_and_invalid_recipe_files(tmp_path, capsys):
    _expect_failure(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")], capsys, "does not exist")
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    _expect_failure(["run", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o")], capsys, "not valid YAML")
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    _expect_failure(["run", str(tmp_path / "latin1.yaml"), "--out", str(tmp_path / "o")], capsys, "not UTF-8 text")


def test_gradual_schedule_reaches_target_during_training(tmp_path):
    recipe = {**TINY, "prune": {"importance": "l2", "allocation": "uniform", "sparsity": 0.6, "method": "gradual",
                                "steps": 4, "end": 0.5},
              "recover": {"epochs": 2, "lr": 0.01}}
    report = run_recipe(parse_recipe(recipe), tmp_path / "g", progress=False, quiet=True)
    assert report["sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert len(report["steps"]) == 2  # one record per fine-tuning epoch
    assert report["steps"][0]["sparsity"] == pytest.approx(0.6, abs=1e-3)  # reached by mid-run
    assert all(v == pytest.approx(0.6, abs=0.01) for v in report["pruned"]["layer_sparsity"].values())


def test_an_unexpected_error_is_one_line_naming_the_stage_and_debug_shows_the_traceback(tmp_path, capsys,
                                                                                           monkeypatch):
    from prunekit.pipeline.stages import STAGES, Stage

    def broken(run, value):
        raise RuntimeError("boom\nsecond line")

    real = STAGES.get("measure")
    monkeypatch.setitem(STAGES._items, "measure", Stage("measure", broken, real.input, real.output))
    out, recipe = tmp_path / "out", _write(tmp_path, {**TINY, "train": {"epochs": 0}, "recover": {"epochs": 0}})
    assert main(["run", str(recipe), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("prunekit: error: run in stage 'measure': unexpected RuntimeError: boom (run again with --debug "
                   "for the traceback)")
    assert not out.exists()
    with pytest.raises(RuntimeError, match="boom"):
        main(["run", str(recipe), "--out", str(out), "--no-progress", "--debug"])
