"""The shipped MiniLM deployment recipe's chain (fine-tune → prune heads/FFN → distil → ONNX + dynamic int8) on a
tiny BERT built in the test: every variant's accuracy and embedding cosine measured in its own backend."""

from __future__ import annotations

import json

import pytest
import yaml

from prunekit.cli.run import shipped_recipe
from prunekit.pipeline import parse_recipe, run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def test_minilm_deploy_recipe_runs_on_a_tiny_bert(tiny_bert, reviews_csv, tmp_path):
    raw = yaml.safe_load(shipped_recipe("deploy-minilm-int8").read_text())
    assert (raw["model"], raw["export"]["int8"], raw["prune"]["sparsity"]) == ("hf:all-MiniLM-L6-v2", "dynamic", 0.5)
    raw.update(model=f"hf:{tiny_bert}", data=f"text:{reviews_csv}", text={**raw["text"], "max_length": 16,
                                                                         "latency_sequence": 16})
    raw["train"].update(epochs=6, lr=0.003, batch_size=16)
    raw["recover"].update(lr=0.001, batch_size=16)
    raw["measure"].update(latency_batches=[1, 4], latency_repeats=3)
    raw["export"]["exporter"] = "torchscript"  # the dynamo exporter is checked in tests/test_export_onnx.py; faster
    out = tmp_path / "run"
    rep = run_recipe(parse_recipe(raw, notice=None), out, progress=False, quiet=True)
    table = rep["deploy"]["table"]
    assert list(table) == ["dense_torch", "dense", "pruned_torch", "pruned", "int8"]
    assert rep["deployed"] == table["int8"] and rep["dense_deployed"] == table["dense"]
    assert "int8 dynamic" in rep["deployed"]["backend"]
    assert rep["dense"]["accuracy"] > 0.9  # the tiny task is learnable
    # the fp32 exports compute what PyTorch computes: same accuracy, embeddings equal to the torch model's
    assert table["dense"]["accuracy"] == pytest.approx(table["dense_torch"]["accuracy"])
    assert table["pruned"]["accuracy"] == pytest.approx(table["pruned_torch"]["accuracy"])
    assert table["pruned_torch"]["accuracy"] == pytest.approx(rep["pruned"]["accuracy"])
    assert table["dense"]["cosine_to_dense"] == pytest.approx(1.0, abs=1e-5)
    assert table["pruned"]["cosine_to_dense"] == pytest.approx(table["pruned_torch"]["cosine_to_dense"], abs=1e-5)
    assert 0.5 < table["int8"]["cosine_to_dense"] <= 1 + 1e-6 and 0 <= table["int8"]["accuracy"] <= 1
    for key in ("dense", "pruned", "int8"):
        assert set(table[key]["latency_ms"]) == {"1", "4"} and (out / table[key]["path"]).is_file()
    exports = rep["deploy"]["exports"]
    assert all(e["max_rel"] <= 1e-4 and len(e["check_batches"]) == 2 for e in exports.values())  # 2 lengths
    graph = onnx.load(str(out / table["pruned"]["path"])).graph
    assert [i.name for i in graph.input] == ["input_0", "input_1"] and len(graph.output) == 2
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert all(isinstance(d, str) for d in dims)  # batch and sequence both dynamic
    assert table["pruned"]["size_bytes"] < table["dense"]["size_bytes"]  # (int8: its scales outweigh 30 K weights)
    saved = json.loads((out / "report.json").read_text())
    assert saved["deployed"]["cosine_to_dense"] == rep["deployed"]["cosine_to_dense"]
    assert "cosine to dense" in (out / "report.md").read_text()
