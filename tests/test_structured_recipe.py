"""Structured recipes and ``prunekit sensitivity``: reports with the foundation's fields, clean errors."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from prunekit.cli.main import main
from prunekit.cli.run import shipped_recipe
from prunekit.data import load_dataset
from prunekit.errors import RecipeError
from prunekit.export import InferenceConfig
from prunekit.models import build_model
from prunekit.pipeline import load_recipe, parse_recipe, run_recipe
from prunekit.sensitivity import DEFAULT_RATIOS
from prunekit.structured import load_pruned
from prunekit.training import evaluate

TINY = {
    "name": "tiny-structured", "seed": 0, "model": "resnet_mini", "data": "digits",
    "train": {"epochs": 1, "lr": 0.05}, "recover": {"epochs": 1, "lr": 0.005},
    "prune": {"method": "structured", "importance": "taylor", "allocation": "sensitivity", "budget": {"macs_kept": 0.5},
              "calibration_samples": 64, "sensitivity_ratios": [0.3, 0.6], "sensitivity_samples": 50},
    "measure": {"latency_batches": [1, 8], "latency_repeats": 2},
}


pytestmark = pytest.mark.usefixtures("one_thread")
_GLOBAL = {k: v for k, v in TINY["prune"].items() if k != "sensitivity_ratios"} | {"allocation": "global"}


def _write(tmp_path, recipe):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_shipped_structured_recipe_is_structured():
    r = load_recipe(shipped_recipe("structured-resnet-mnist"))
    assert r.prune.method == "structured" and r.prune.spec.kind == "structured"
    assert (r.model.name, r.data.name, r.prune.options.budget_config().macs_kept) == ("resnet_mini", "mnist", 0.5)
    assert r.recover.lr == pytest.approx(r.train.lr / 10)


@pytest.mark.parametrize("name,macs", [("structured-resnet-mnist", 0.5), ("structured-resnet-mnist-3x", 0.3333)])
def test_shipped_speedup_recipes_distill_and_time_the_export(name, macs):
    r = load_recipe(shipped_recipe(name))
    assert r.prune.options.budget == {"macs_kept": macs, **({"tolerance": 0.03} if macs < 0.5 else {})}
    assert r.prune.options.round_to == 8 and r.recover.method == "distill"
    assert (r.measure.inference.fold_bn, r.measure.inference.channels_last) == (True, True)


def test_structured_run_writes_the_report_fields(tmp_path):
    out = tmp_path / "out"
    assert main(["run", str(_write(tmp_path, TINY)), "--out", str(out), "--no-progress", "--threads", "1"]) == 0
    report = json.loads((out / "report.json").read_text())
    for key in ("model", "dataset", "seed", "dense", "pruned", "sparsity", "compression", "steps"):
        assert key in report
    for side in ("dense", "pruned"):
        for key in ("accuracy", "params", "nonzero_params", "macs", "nonzero_macs", "size_bytes", "latency_ms"):
            assert key in report[side]
        assert set(report[side]["latency_ms"]) == {"1", "8"}
        assert all(t["interleaved"] and t["repeats"] == 2 and t["threads"] == 1 and t["thread_cpu_ms"] > 0
                   for t in report[side]["latency"].values())
    assert (report["threads"]["threads"], report["threads"]["source"]) == (1, "explicit")
    assert report["run_time_s"]["wall"] >= sum(report["timings_s"].values()) - 0.05
    assert abs(report["pruned"]["macs"] / report["dense"]["macs"] - 0.5) <= 0.01
    assert report["compression"] == pytest.approx(report["dense"]["params"] / report["pruned"]["params"])
    assert len(report["steps"]) == 1 and report["allocation"]["allocation"]["strategy"] == "sensitivity"
    assert {"report.md", "recipe.yaml", "sensitivity.json", "pruned.json", "model.safetensors"} <= {
        p.name for p in out.iterdir()}
    assert parse_recipe(yaml.safe_load((out / "recipe.yaml").read_text())).to_dict() == parse_recipe(TINY).to_dict()


@pytest.mark.parametrize("patch,match", [
    ({"importance": "taylor9"}, "unknown criterion 'taylor9'; choose one of: apoz"),
    ({"allocation": "amc"}, "unknown allocation 'amc'; choose one of: uniform, global, sensitivity, search"),
    ({"budget": {"macs_kept": 2}}, r"macs_kept=2(\.0)?: give the fraction of the dense model to KEEP, in \(0, 1\)"),
    ({"budget": {"flops": 0.5}}, r"unknown budget key\(s\) \['flops'\]; valid: macs_kept, params_kept"),
    ({"budget": {"macs": 0.5}}, r"unknown budget key\(s\) \['macs'\]"),
    ({"allocation": "global", "sensitivity_ratios": [0.5]}, "sensitivity_ratios configure the sensitivity analysis"),
    ({"calibration_samples": 0}, "criterion 'taylor' needs calibration data"),
    ({"allocation_cost": "macs"}, "unknown allocation_cost 'macs'; choose one of: budget, latency"),
    ({"allocation_cost": "latency", "allocation": "global", "sensitivity_ratios": [0.1, 0.25, 0.4, 0.55, 0.7, 0.85]},
     "cost 'latency' ranks the steps of strategy 'sensitivity'"),
    ({"allocation_cost": "latency", "latency_table_batch": 0}, "latency_batch and latency_repeats must be ≥ 1"),
    ({"latency_weight": 1.0}, r"weighs the latency saved by a step and needs cost 'latency'"),
    ({"allocation_cost": "latency", "latency_weight": -1}, "must be a finite number ≥ 0"),
    ({"sensitivity_recalibration": -1}, "sensitivity_recalibration must be ≥ 0 training examples"),
    ({"max_deviation": 1.2}, r"max_deviation must be in \[0, 1\)"),
    ({"max_deviation": 0.1, "allocation": "uniform", "sensitivity_ratios": [0.1, 0.25, 0.4, 0.55, 0.7, 0.85]},
     "max_deviation bounds strategy 'sensitivity'; strategy 'uniform'"),
    ({"latency_table": "t.json"}, "latency_table is read by allocation_cost: latency only"),
    ({"latency_passes": 2}, "latency_passes re-measures the latency table around an allocation and needs cost"),
    ({"allocation_cost": "latency", "latency_table": "no/t.json"}, "latency table 'no/t.json' does not exist"),
])
def test_bad_structured_fields_are_refused(patch, match):
    raw = {**TINY, "prune": {**TINY["prune"], **patch}}
    with pytest.raises(RecipeError, match=match):
        parse_recipe(raw)


def test_unreachable_budget_fails_in_one_line_and_writes_nothing(tmp_path, capsys):
    raw = {**TINY, "train": {"epochs": 0, "lr": 0.05},
           "prune": {**_GLOBAL, "budget": {"macs_kept": 0.01}, "min_channels": 8}}
    out = tmp_path / "out"
    assert main(["run", str(_write(tmp_path, raw)), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("prunekit: error:") and "is unreachable" in err and "at most a" in err
    assert not out.exists()


def test_sensitivity_cli_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "sens"
    assert main(["sensitivity", "--model", "resnet_mini", "--data", "digits", "--epochs", "1", "--importance",
                 "apoz", "--ratios", "0.5,0.9", "--samples", "32", "--max-samples", "40", "--out", str(out)]) == 0
    data = json.loads((out / "sensitivity.json").read_text())
    assert data["criterion"] == "apoz" and len(data["curves"]) == 12
    assert all(c["ratios"] == [0.5, 0.9] for c in data["curves"].values())
    assert (out / "sensitivity.png").stat().st_size > 1000
    assert "| layers.0.conv1 | 16 |" in (out / "sensitivity.md").read_text()


def test_sensitivity_cli_refuses_a_data_criterion_without_data(tmp_path, capsys):
    out = tmp_path / "sens"
    assert main(["sensitivity", "--importance", "taylor", "--samples", "0", "--out", str(out)]) == 2
    assert "criterion 'taylor' needs calibration data" in capsys.readouterr().err
    assert not out.exists()


def test_cli_flags_override_the_prune_fields(tmp_path, capsys):
    from prunekit.cli.main import build_parser
    from prunekit.cli.run import apply_flags

    args = build_parser().parse_args(["run", "x.yaml", "--out", "o", "--importance", "fpgm", "--allocation", "global",
                                      "--budget", "latency_ms=20,batch=1"])
    r = apply_flags(parse_recipe(TINY), args)
    o = r.prune.options
    assert (o.importance, o.allocation, o.budget) == ("fpgm", "global", {"latency_ms": 20, "batch": 1})
    assert o.budget_config().latency_ms == 20 and o.budget_config().batch == 1
    assert o.sensitivity_ratios == list(DEFAULT_RATIOS)  # the recipe's sensitivity-only [0.3, 0.6] dropped
    old = build_parser().parse_args(["run", "x.yaml", "--out", "o", "--criterion", "l2", "--target", "macs=0.4"])
    assert apply_flags(parse_recipe(TINY), old).prune.options.budget == {"macs_kept": 0.4}  # old flag names still read
    cost = build_parser().parse_args(["run", "x.yaml", "--out", "o", "--allocation-cost", "latency"])
    r = apply_flags(parse_recipe(TINY), cost)
    cfg = r.prune.options.allocation_config(0, InferenceConfig(fold_bn=True))
    assert (cfg.cost, cfg.latency_batch, cfg.latency_export) == ("latency", 256, InferenceConfig(fold_bn=True))
    shipped = load_recipe(shipped_recipe("structured-resnet-mnist"))  # ranks by latency
    flags = ["run", "x.yaml", "--out", "o", "--allocation", "global", "--allocation-cost", "budget"]
    o = apply_flags(shipped, build_parser().parse_args(flags)).prune.options
    assert (o.allocation, o.allocation_cost, o.latency_passes, o.latency_weight) == ("global", "budget", 1, None)
    with pytest.raises(RecipeError, match="strategy 'global' does not rank steps by cost"):
        apply_flags(shipped, build_parser().parse_args(flags[:-2]))
    bad = build_parser().parse_args(["run", "x.yaml", "--out", "o", "--allocation", "amc"])
    with pytest.raises(RecipeError, match="unknown allocation 'amc'"):
        apply_flags(parse_recipe(TINY), bad)
    masks = {**TINY, "prune": {"method": "one_shot", "sparsity": 0.5}}
    code = main(["run", str(_write(tmp_path, masks)), "--out", str(tmp_path / "o"), "--budget", "macs_kept=0.5"])
    assert code == 2 and "apply to prune.method: structured" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


TINY_SAVE = {**TINY, "prune": {"method": "structured", "importance": "l2", "allocation": "global",
                               "budget": {"macs_kept": 0.5}}}


def test_structured_recipe_end_to_end_and_the_saved_model_loads_from_data_only(tmp_path):
    out = tmp_path / "out"
    report = run_recipe(parse_recipe(TINY_SAVE), out, progress=False, quiet=True)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["pruned"]["macs"] == report["pruned"]["macs"]
    ratio = report["pruned"]["macs"] / report["dense"]["macs"]
    assert abs(ratio - 0.5) <= 0.02 * 0.5  # the budget, within ±2%
    assert report["pruned"]["params"] < report["dense"]["params"]  # removed, not masked
    for side in ("dense", "pruned"):
        assert set(report[side]["latency_ms"]) == {"1", "8"}
    data = load_dataset("digits")
    for model in (load_pruned(out), load_pruned(out, build_model("resnet_mini", data.input_shape, data.num_classes))):
        assert sum(p.numel() for p in model.parameters()) == report["pruned"]["params"]
        acc = evaluate(model, data.x_test, data.y_test).accuracy
        assert acc == pytest.approx(report["pruned"]["accuracy"])
        assert model(torch.randn(2, *data.input_shape)).shape == (2, 10)


def test_distilled_recipe_times_the_exported_models(tmp_path):
    raw = {**TINY_SAVE, "recover": {"epochs": 1, "lr": 0.005, "method": "distill", "distill": {"temperature": 2.0}},
           "measure": {**TINY["measure"], "inference": {"fold_bn": True, "channels_last": True}}}
    report = run_recipe(parse_recipe(raw), tmp_path / "out", progress=False, quiet=True)
    assert report["recovery"] == "distill"
    assert report["measure"]["inference"] == {"fold_bn": True, "channels_last": True}
    assert report["pruned"]["params"] < report["dense"]["params"]  # the pruned model's own count, BN kept
    assert len(report["steps"]) == 1 and report["steps"][0]["phase"] == "finetune"
    assert "BatchNorm folded, channels_last" in (tmp_path / "out" / "report.md").read_text()


def test_distillation_without_a_trained_teacher_is_refused():
    raw = {**TINY_SAVE, "train": {"epochs": 0, "lr": 0.05}, "recover": {"method": "distill"}}
    with pytest.raises(RecipeError, match="needs a trained teacher"):
        parse_recipe(raw)


@pytest.mark.slow  # ~45 s on a loaded 2-core box: sensitivity analysis, a 45-model latency table, fine-tuning
def test_latency_cost_recipe_ranks_by_a_table_of_the_exported_model(tmp_path, monkeypatch):
    import prunekit.allocation.api as api

    exports = []
    real = api.measure_latency_table
    monkeypatch.setattr(api, "measure_latency_table", lambda *a: exports.append(a[4]) or real(*a))
    raw = {**TINY, "train": {"epochs": 0, "lr": 0.05},
           "measure": {**TINY["measure"], "inference": {"fold_bn": True, "channels_last": True}},
           "prune": {**TINY["prune"], "allocation_cost": "latency", "latency_table_batch": 4,
                     "latency_table_repeats": 1, "round_to": 8, "min_channels": 8, "latency_passes": 2}}
    report = run_recipe(parse_recipe(raw), tmp_path / "out", progress=False, quiet=True)
    assert exports == [InferenceConfig(fold_bn=True, channels_last=True)] * 2  # dense, then around pass 1
    alloc = report["allocation"]["allocation"]
    table = alloc["latency_table"]
    assert table["batch"] == 4 and len(table["ms"]) == 12
    assert table.get("base", {}) == alloc["latency_passes"][0] and len(alloc["latency_passes"]) == 2
    assert alloc["latency_passes"][1] == {g: n for g, n in alloc["removed"].items() if n}
    assert abs(report["pruned"]["macs"] / report["dense"]["macs"] - 0.5) <= 0.01
    md = (tmp_path / "out" / "report.md").read_text()
    assert "ranked by measured latency saved at batch 4, the table re-measured around the allocation 1×" in md


def test_allocation_fields_reach_the_allocation_config():
    raw = {**TINY, "prune": {**TINY["prune"], "allocation": "sensitivity", "max_deviation": 0.15}}
    cfg = parse_recipe(raw).prune.options.allocation_config(seed=3)
    assert (cfg.strategy, cfg.max_deviation, cfg.seed) == ("sensitivity", 0.15, 3)


def test_a_saved_latency_table_is_reused_and_every_latency_run_writes_its_table(tmp_path, monkeypatch):
    """A run given ``structured.latency_table`` ranks by it without timing anything, and writes it back out."""
    import prunekit.allocation.api as api
    from prunekit.allocation import LatencyTable
    from prunekit.allocation.strategies import allowed_steps
    from prunekit.graph import DependencyGraph

    monkeypatch.setattr(api, "measure_latency_table", lambda *a: pytest.fail("a saved table was given"))
    raw = {**TINY, "train": {"epochs": 0, "lr": 0.05},
           "prune": {**TINY["prune"], "allocation_cost": "latency", "latency_table_batch": 4,
                     "round_to": 8, "min_channels": 8, "latency_weight": 0.3}}
    spec = parse_recipe(raw).prune.options
    data = load_dataset("digits")
    graph = DependencyGraph.build(build_model("resnet_mini", data.input_shape, data.num_classes), data.x_train[:1])
    ms = {g.name: {int(n): 100.0 - (50.0 * n / g.size if g.name == "stem.0" else 0.0)
                   for n in allowed_steps(g, spec.allocation_config()) if n} for g in graph.prunable_groups()}
    saved = tmp_path / "table.json"
    saved.write_text(json.dumps(LatencyTable(4, 100.0, ms).to_dict()))
    with pytest.raises(RecipeError, match="measured at batch 4, but the allocation ranks steps at batch 8"):
        parse_recipe({**raw, "prune": {**raw["prune"], "latency_table": str(saved), "latency_table_batch": 8}})
    out = tmp_path / "out"
    assert main(["run", str(_write(tmp_path, raw)), "--out", str(out), "--no-progress",
                 "--latency-table", str(saved)]) == 0
    written = json.loads((out / "latency_table.json").read_text())
    assert written == json.loads(saved.read_text())
    report = json.loads((out / "report.json").read_text())
    assert report["prune"]["latency_table"] == str(saved)
    assert report["allocation"]["allocation"]["ratios"]["stem.0"] > 0  # the only group the table says saves time
