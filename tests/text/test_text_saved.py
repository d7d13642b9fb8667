"""A text run's saved model after the run: the stock Hugging Face directory brings removed heads back as zero heads
(transformers 5 configs give every layer one head count); prunekit removes them again when it loads the directory,
and ``prunekit export RUN_DIR`` exports a text run through the recipe's own ONNX deployment, at the pruned widths."""

from __future__ import annotations

import json

import pytest
import torch

from prunekit.cli.main import main
from prunekit.errors import ConfigError
from prunekit.pipeline import parse_recipe, run_recipe
from prunekit.structured import prune_heads, save_hf
from prunekit.structured.hf import remove_padding

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch() -> dict:
    ids = torch.tensor([[2, 5, 9, 14, 20, 3, 0, 0], [2, 7, 8, 21, 25, 26, 27, 3]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def _widths(encoder) -> list[tuple[int, int, int]]:
    """(heads, query rows, output-projection columns) of every layer."""
    return [(layer.attention.self.num_attention_heads, layer.attention.self.query.weight.shape[0],
             layer.attention.output.dense.weight.shape[1]) for layer in encoder.encoder.layer]


def test_a_head_pruned_bert_saved_stock_loads_back_with_the_pruned_widths(tiny_bert, tmp_path):
    from transformers import AutoModel

    from prunekit.pipeline.text import load_text

    pruned = AutoModel.from_pretrained(tiny_bert).eval()
    batch = _batch()
    prune_heads(pruned, {0: [1, 3], 1: [0]}, batch)  # 4 → 2 and 3 heads: no BertConfig can say that
    saved = save_hf(pruned, tmp_path / "stock", example_inputs=batch)
    assert not saved.exact and "encoder.layer.0.attention.self.query.weight" in saved.padded
    stock = AutoModel.from_pretrained(tmp_path / "stock").eval()
    assert _widths(stock) == [(4, 32, 32), (4, 32, 32)]  # what transformers builds: zero heads, dense cost
    loaded = load_text(str(tmp_path / "stock"), "embedding").model.eval()
    assert _widths(loaded.encoder) == _widths(pruned) == [(2, 16, 16), (3, 24, 24)]
    assert not hasattr(loaded.encoder.config, "prunekit_padding")
    with torch.no_grad():
        want = pruned(**batch).last_hidden_state
        assert torch.allclose(loaded.encoder(**batch).last_hidden_state, want, atol=1e-5)
        assert torch.allclose(stock(**batch).last_hidden_state, want, atol=1e-5)


def test_only_padded_units_that_are_still_zero_are_removed(tiny_bert, tmp_path):
    from transformers import AutoModel

    pruned = AutoModel.from_pretrained(tiny_bert).eval()
    batch = _batch()
    prune_heads(pruned, {0: [1, 3]}, batch)
    save_hf(pruned, tmp_path / "stock", example_inputs=batch)
    stock = AutoModel.from_pretrained(tmp_path / "stock").eval()
    with torch.no_grad():  # training after loading made padded head 3 of layer 0 a real head
        stock.encoder.layer[0].attention.self.value.weight[24:32] = 0.1
        stock.encoder.layer[0].attention.output.dense.weight[:, 24:32] = 0.1
        before = stock(**batch).last_hidden_state
    assert remove_padding(stock, batch) == {"encoder.layer.0.attention.self.query": 1}
    assert _widths(stock) == [(3, 24, 24), (4, 32, 32)]
    with torch.no_grad():
        assert torch.allclose(stock(**batch).last_hidden_state, before, atol=1e-5)
    assert remove_padding(AutoModel.from_pretrained(tiny_bert), batch) == {}  # not padded: left as it is


def _run(tiny_bert, reviews_csv, out, task="classification"):
    raw = {"version": 2, "name": "tiny-text", "data": f"text:{reviews_csv}", "model": f"hf:{tiny_bert}",
           "train": {"epochs": 3 if task == "classification" else 0, "lr": 0.003, "optimizer": "adam",
                     "batch_size": 16, "weight_decay": 0.0},
           "prune": {"method": "transformer", "sparsity": 0.5},
           "recover": {"method": "distill", "epochs": 0},
           "measure": {"latency_batches": [1, 2], "latency_repeats": 2},
           "text": {"task": task, "max_length": 16, "latency_sequence": 16}}
    return run_recipe(parse_recipe(raw, notice=None), out, progress=False, quiet=True)


def test_cli_exports_a_text_run_with_the_pruned_head_counts(tiny_bert, reviews_csv, tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "run"
    rep = _run(tiny_bert, reviews_csv, out)
    assert [x["heads"] for x in rep["pruned"]["layers"]] == [2, 2]
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["num_attention_heads"] == 4 and config["prunekit_padding"]  # the stock layout padded them
    assert main(["export", str(out), "--int8", "dynamic", "--exporter", "torchscript", "--threads", "1"]) == 0
    assert "accuracy" in capsys.readouterr().out
    dep = json.loads((out / "onnx" / "deploy.json").read_text())
    table = dep["table"]
    assert list(table) == ["pruned_torch", "pruned", "int8"] and "dense_deployed" not in dep
    # the exported model is the run's pruned model: its accuracy in PyTorch and in ONNX Runtime is the run's
    assert table["pruned_torch"]["accuracy"] == pytest.approx(rep["pruned"]["accuracy"])
    assert table["pruned"]["accuracy"] == pytest.approx(rep["pruned"]["accuracy"])
    assert table["pruned"]["cosine_to_dense"] == pytest.approx(1.0, abs=1e-5)
    assert set(table["int8"]["latency_ms"]) == {"1", "2"}
    assert dep["exports"]["pruned"]["max_rel"] <= 1e-4
    graph = onnx.load(str(out / "onnx" / table["pruned"]["path"])).graph
    assert [i.name for i in graph.input] == ["input_0", "input_1"]
    # the pruned widths, not the padded ones: the ONNX weight matrices are the pruned encoder's (BERT's pooler is
    # not exported: the sentence embedding does not read it), 2 heads of 8 × 32 × (q, k, v, o) fewer per layer
    from prunekit.pipeline.text import load_saved_text

    loaded = load_saved_text(out, parse_recipe(_recipe_of(out), notice=None))
    n_onnx = sum(int(torch.tensor(list(t.dims)).prod()) for t in graph.initializer if len(t.dims) == 2)
    n_model = sum(p.numel() for n, p in loaded.model.named_parameters() if p.dim() == 2 and ".pooler." not in n)
    n_stock = sum(p.numel() for n, p in _stock(out).named_parameters() if p.dim() == 2 and "pooler." not in n)
    assert n_onnx == n_model == n_stock + loaded.model.head.weight.numel() - 2 * 2 * 8 * 32 * 4


def _recipe_of(run_dir):
    import yaml

    return yaml.safe_load((run_dir / "recipe.yaml").read_text())


def _stock(run_dir):
    from transformers import AutoModel

    return AutoModel.from_pretrained(run_dir / "model")


def test_cli_export_of_an_embedding_run_and_a_text_run_without_its_head(tiny_bert, reviews_csv, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "emb"
    _run(tiny_bert, reviews_csv, out, task="embedding")
    assert main(["export", str(out), "--exporter", "torchscript"]) == 0
    printed = capsys.readouterr().out
    assert "embedding cosine 1.0000 to PyTorch" in printed and "accuracy" not in printed
    dep = json.loads((out / "onnx" / "deploy.json").read_text())
    assert dep["table"]["pruned"]["accuracy"] is None and "cosine_to_dense" in dep["notes"]
    cls = tmp_path / "cls"
    _run(tiny_bert, reviews_csv, cls)
    (cls / "head.safetensors").unlink()
    with pytest.raises(ConfigError, match="head.safetensors"):
        from prunekit.pipeline.deploy import export_run

        export_run(cls)
    assert not (cls / "onnx").exists()


def test_a_saved_text_model_is_pruned_further_from_its_pruned_widths(tiny_bert, reviews_csv, tmp_path):
    from transformers import AutoModel

    first = tmp_path / "first"
    _run(tiny_bert, reviews_csv, first, task="embedding")  # 4 → 2 heads, saved padded back to 4
    raw = {"version": 2, "name": "again", "data": f"text:{reviews_csv}", "model": f"hf:{first / 'model'}",
           "train": {"epochs": 0}, "prune": {"method": "transformer", "heads_kept": 2, "sparsity": 0.5},
           "recover": {"method": "distill", "epochs": 0}, "measure": {"latency_batches": [1], "latency_repeats": 1},
           "text": {"task": "embedding", "max_length": 16, "latency_sequence": 16}}
    rep = run_recipe(parse_recipe(raw, notice=None), tmp_path / "again", progress=False, quiet=True)
    assert [x["heads"] for x in rep["dense"]["layers"]] == [2, 2]  # the zero heads were not counted as heads
    # heads_kept counts the heads the layers have (2), not the config's 4: all kept, half the FFN neurons go
    assert [x["heads"] for x in rep["pruned"]["layers"]] == [2, 2] and [x["ffn"] for x in rep["pruned"]["layers"]] \
        == [16, 16]
    # a model whose layers keep different head counts: heads_kept cannot say one count for all
    odd = AutoModel.from_pretrained(tiny_bert).eval()
    prune_heads(odd, {0: [1, 3], 1: [0]}, _batch())
    save_hf(odd, tmp_path / "odd", source=tiny_bert, example_inputs=_batch())
    raw["model"] = f"hf:{tmp_path / 'odd'}"
    with pytest.raises(ConfigError, match="this model's layers have 2, 3 heads"):
        run_recipe(parse_recipe(raw, notice=None), tmp_path / "odd-run", progress=False, quiet=True)


def test_sensitivity_scans_a_text_model_named_hf_path(tiny_bert, reviews_csv, tmp_path, capsys):
    """``prunekit sensitivity --model hf:PATH``: the classifier fine-tuned on the text, each head group and FFN group
    pruned alone (BERT's pooler not scanned: the text model never reads it), calibration with the attention mask."""
    out = tmp_path / "sens"
    assert main(["sensitivity", "--model", f"hf:{tiny_bert}", "--data", f"text:{reviews_csv}", "--epochs", "3",
                 "--lr", "0.003", "--ratios", "0.5,0.75", "--max-samples", "24", "--samples", "16",
                 "--importance", "taylor", "--max-length", "16", "--out", str(out), "--threads", "1"]) == 0
    saved = json.loads((out / "sensitivity.json").read_text())
    assert saved["dense_accuracy"] > 0.8  # fine-tuned: a chance-level head would make every curve meaningless
    layers = [f"encoder.encoder.layer.{i}" for i in (0, 1)]
    assert set(saved["curves"]) == {f"{p}.{s}" for p in layers for s in ("attention.self.query", "intermediate.dense")}
    assert {c["size"] for c in saved["curves"].values()} == {4, 64}  # 4 heads, 64 FFN neurons
    losses = [v for c in saved["curves"].values() for v in c["loss"]]
    assert any(abs(v - saved["dense_loss"]) > 1e-4 for v in losses)  # pruning a group alone is measured
    assert main(["sensitivity", "--model", f"hf:{tiny_bert}", "--data", "digits", "--out", str(tmp_path / "x")]) == 2
    assert "is a text model: give labelled text" in capsys.readouterr().err


def test_check_reads_hf_dir_as_the_local_model_like_recipes_do(tiny_bert, tmp_path, capsys):
    from transformers import BertModel

    from prunekit import zoo

    zm = zoo.load(f"hf:{tiny_bert}")
    saved = BertModel.from_pretrained(tiny_bert).embeddings.word_embeddings.weight
    assert zm.kind == "text" and torch.equal(zm.model.embeddings.word_embeddings.weight, saved)  # its weights
    assert main(["check", f"hf:{tiny_bert}", "--sparsity", "0.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["equivalent"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="has no config.json"):
        zoo.load(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(ConfigError, match="no model type 'nosuchtype', and 'nosuchtype' is not a local model dir"):
        zoo.load("hf:nosuchtype")
