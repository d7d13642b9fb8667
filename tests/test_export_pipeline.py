"""The export stage and `prunekit export`: a recipe's pruned model deployed to ONNX Runtime beside the dense
one (report contract: deployed / dense_deployed), and a saved run exported from the command line."""

from __future__ import annotations

import json
import shutil

import pytest

from prunekit.cli.main import main
from prunekit.errors import ConfigError, OutputExistsError
from prunekit.pipeline import parse_recipe, run_recipe
from prunekit.pipeline.deploy import export_run

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_thread")

CONTRACT = {"accuracy", "latency_ms", "size_bytes", "backend", "path"}
FIELDS = CONTRACT | {"label", "cpu_ms", "zipped_bytes", "load_avg"}


def _recipe(export: dict | None = None, **prune):
    raw = {"version": 2, "name": "deploy-test", "data": "digits", "model": "lenet300",
           "train": {"epochs": 2, "batch_size": 64}, "prune": {"method": "one_shot", "sparsity": 0.8, **prune},
           "recover": {"epochs": 1}, "measure": {"latency_batches": [1, 8], "latency_repeats": 3}}
    if export is not None:
        raw["export"] = export
    return parse_recipe(raw)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r"
    rep = run_recipe(_recipe({"formats": ["onnx"], "int8": "static", "exporter": "torchscript", "sparse_kernels": True,
                              "sparse_int8": True}), out, progress=False, quiet=True)
    return out, rep


def test_recipe_export_stage_reports_the_deployed_and_the_dense_model(run_dir):
    out, rep = run_dir
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["deployed"] == rep["deployed"] and "dense" in on_disk and "pruned" in on_disk
    for key in ("deployed", "dense_deployed"):
        entry = rep[key]
        assert set(entry) == FIELDS and set(entry["latency_ms"]) == {"1", "8"} and CONTRACT <= set(entry)
        assert (out / entry["path"]).stat().st_size == entry["size_bytes"]
    assert rep["deployed"]["path"] == "onnx/model.int8.onnx" and "int8 static" in rep["deployed"]["backend"]
    assert rep["dense_deployed"]["path"] == "onnx/dense.onnx"
    # fp32 exports compute what PyTorch computes: the dense ONNX model's accuracy is the dense model's
    assert abs(rep["dense_deployed"]["accuracy"] - rep["dense"]["accuracy"]) <= 1 / 359
    assert abs(rep["deploy"]["pruned_fp32"]["accuracy"] - rep["pruned"]["accuracy"]) <= 1 / 359
    assert all(e["max_rel"] <= 1e-4 for e in rep["deploy"]["exports"].values())
    md = (out / "report.md").read_text()
    assert "## Deployed: every variant timed side by side in one run" in md and "CPU" in md


def test_the_table_times_every_variant_in_one_run_and_sizes_each(run_dir):
    out, rep = run_dir
    table = rep["deploy"]["table"]
    assert list(table) == ["dense_torch", "dense", "pruned_torch", "pruned", "int8", "sparse_torch", "sparse_int8"]
    for key, row in table.items():
        assert set(row) == FIELDS, key
        assert set(row["latency_ms"]) == set(row["cpu_ms"]) == {"1", "8"} and all(v > 0 for v in row["cpu_ms"].values())
        if row["path"]:
            assert (out / row["path"]).stat().st_size == row["size_bytes"], key
    assert table["int8"] == rep["deployed"] and table["dense"] == rep["dense_deployed"]
    assert "PyTorch" in table["dense_torch"]["backend"] and "onnxruntime" in table["int8"]["backend"]
    # one model computed by four backends: the same accuracy up to a test image (int8 within 3)
    n = 359
    for key in ("pruned", "sparse_torch"):
        assert abs(table[key]["accuracy"] - table["pruned_torch"]["accuracy"]) <= 1 / n, key
    assert abs(table["dense_torch"]["accuracy"] - rep["dense"]["accuracy"]) <= 1 / n
    assert abs(table["sparse_int8"]["accuracy"] - table["pruned_torch"]["accuracy"]) <= 3 / n
    # the sparse int8 file: far smaller than the pruned model's fp32 safetensors and than its zipped form
    assert table["sparse_int8"]["path"] == "onnx/model.sparse-int8.xz"
    assert table["sparse_int8"]["size_bytes"] * 10 < table["pruned_torch"]["size_bytes"]
    assert table["sparse_int8"]["size_bytes"] < table["pruned_torch"]["zipped_bytes"]
    assert rep["deploy"]["sparse_int8"]["nonzero"] == rep["pruned"]["nonzero_params"]
    kernels = rep["deploy"]["sparse_kernels"]
    assert set(kernels) == {"1", "8"} and all(k["max_abs_diff"] <= 1e-4 for k in kernels.values())


def test_sparse_cpu_format_times_sparse_kernels_beside_dense_ones(tmp_path):
    out = tmp_path / "r"
    rep = run_recipe(_recipe({"formats": ["sparse_cpu"]}, sparsity=0.95), out, progress=False, quiet=True)
    assert set(rep["sparse_cpu"]) == {"1", "8"} and "deployed" not in rep
    saved = json.loads((out / "sparse_cpu.json").read_text())
    for b, r in rep["sparse_cpu"].items():
        assert r["max_abs_diff"] <= 1e-4 and r["speedup"] == pytest.approx(r["dense_ms"] / r["sparse_ms"])
        decisions = saved["batches"][b]["decisions"]
        assert {d["layer"] for d in decisions} <= {"1", "3", "5"} and all(d["batch"] == int(b) for d in decisions)
        chosen = [d["layer"] for d in decisions if d["chosen"] != "dense"]
        assert r["replaced"] == (chosen if r["applied"] else [])
        assert r["applied"] == (bool(chosen) and r["sparse_ms"] < r["dense_ms"])
        assert all((d["chosen"] != "dense") == (d["sparse_ms"] < d["dense_ms"]) for d in decisions)
    assert "## Sparse CPU kernels" in (out / "report.md").read_text()


def test_export_section_is_validated():
    with pytest.raises(ConfigError, match="unknown int8 quantisation mode 'int4'"):
        _recipe({"formats": ["onnx"], "int8": "int4"})
    with pytest.raises(ConfigError, match="int8 .* needs the onnx format"):
        _recipe({"int8": "dynamic"})
    with pytest.raises(ConfigError, match="unknown export format 'tflite'; available: onnx, sparse_cpu"):
        _recipe({"formats": ["tflite"]})
    with pytest.raises(ConfigError, match="unknown ONNX exporter 'jit'; choose one of: dynamo, torchscript"):
        _recipe({"formats": ["onnx"], "exporter": "jit"})
    for key in ("sparse_kernels", "sparse_int8"):
        with pytest.raises(ConfigError, match=f"export.{key} adds rows to the onnx format's table"):
            _recipe({"formats": ["sparse_cpu"], key: True})


def test_cli_exports_a_saved_run_whole_or_not_at_all(run_dir, tmp_path, capsys):
    out = shutil.copytree(run_dir[0], tmp_path / "run")  # a copy: the other tests read the shared run
    dest = tmp_path / "onnx"
    assert main(["export", str(out), "--format", "onnx", "--int8", "dynamic", "--out", str(dest),
                 "--exporter", "torchscript"]) == 0
    rep = json.loads((dest / "deploy.json").read_text())
    assert sorted(p.name for p in dest.iterdir()) == [".prunekit-output", "deploy.json", "model.int8.onnx",
                                                      "model.onnx"]
    assert rep["deployed"]["path"] == "model.int8.onnx" and "dense_deployed" not in rep
    assert rep["deployed"]["accuracy"] > 0.5 and "accuracy" in capsys.readouterr().out
    assert main(["export", str(out), "--out", str(dest)]) == 2  # exists: refused without --force
    assert "--force" in capsys.readouterr().err
    with pytest.raises(OutputExistsError):
        export_run(out, out=dest)
    # the recipe's own onnx/ directory is prunekit's: --force replaces it with the command's export
    assert main(["export", str(out), "--force", "--exporter", "torchscript"]) == 0
    assert (out / "onnx" / "deploy.json").is_file() and not (out / "onnx" / "dense.onnx").exists()


def test_cli_names_a_directory_without_a_model(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    assert "holds no saved model" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
