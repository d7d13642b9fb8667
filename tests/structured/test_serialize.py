"""Pruned models round-trip: pruned.json + model.safetensors, torch.save, transformers save_pretrained."""

from __future__ import annotations

import json

import pytest
import torch

from prunekit import StructuredConfig, prune_
from prunekit.errors import ModelLoadError, PruningError
from prunekit.graph import DependencyGraph
from prunekit.pruners import select_units
from prunekit.structured import prune_groups
from prunekit.structured.serialize import VERSION, hf_config_for, load_pruned, save_pretrained_pruned, save_pruned
from prunekit.zoo import load
from tests.structured.topologies import TOPOLOGIES


@pytest.mark.parametrize("name", ["residual", "depthwise", "vit_free_params", "tied_weights", "gqa", "mha",
                                  "mha_masked_seq_first", "mha_bias_kv_zero_attn", "mha_cross_kdim_vdim",
                                  "transformer_encoder", "torchvision_vit", "torchvision_swin",
                                  "torchvision_swin_v2"])
def test_spec_round_trip(tmp_path, name: str) -> None:
    factory, make_input, _ = TOPOLOGIES[name]
    model, x = factory().eval(), make_input(2)
    g = DependencyGraph.build(model, x)
    prune_groups(g, select_units(g, StructuredConfig(sparsity=0.5)))
    save_pruned(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "pruned.json").read_text())
    assert meta["format_version"] == VERSION and not list(tmp_path.glob("m/*.pt"))
    fresh = load_pruned(tmp_path / "m", factory().eval())
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.parameters())


def test_constructor_string_and_torch_save(tmp_path) -> None:
    zm = load("torchvision:resnet18")
    x = torch.randn(1, 3, 64, 64)
    prune_(zm.model, StructuredConfig(sparsity=0.5), example_inputs=x)
    save_pruned(zm.model, tmp_path / "r", constructor="torchvision:resnet18")
    again = load_pruned(tmp_path / "r").eval()
    torch.save(zm.model, tmp_path / "whole.pt")
    whole = torch.load(tmp_path / "whole.pt", weights_only=False).eval()
    with torch.no_grad():
        ref = zm.model(x)
        assert torch.equal(again(x), ref) and torch.equal(whole(x), ref)


def test_wrong_model_or_version(tmp_path) -> None:
    factory, make_input, _ = TOPOLOGIES["residual"]
    m = factory().eval()
    prune_(m, StructuredConfig(sparsity=0.5), example_inputs=make_input(2))
    save_pruned(m, tmp_path / "m")
    with pytest.raises(ModelLoadError, match="not in the model given"):
        load_pruned(tmp_path / "m", TOPOLOGIES["concat"][0]())
    meta = json.loads((tmp_path / "m" / "pruned.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "m" / "pruned.json").write_text(json.dumps(meta))
    with pytest.raises(ModelLoadError, match="v99"):
        load_pruned(tmp_path / "m", factory())


def test_hf_save_pretrained_round_trip(tmp_path) -> None:
    from transformers import AutoModel

    zm = load("hf:llama")
    prune_(zm.model, StructuredConfig(sparsity=0.5), example_inputs=zm.example_inputs)
    save_pretrained_pruned(zm.model, tmp_path / "hf")
    again = AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert again.config.num_key_value_heads == 1 and again.config.intermediate_size == 64
    with torch.no_grad():
        a = zm.model(**zm.example_inputs).last_hidden_state
        b = again(**zm.example_inputs).last_hidden_state
    assert torch.allclose(a, b, atol=1e-6)


def test_hf_uneven_pruning_refused() -> None:
    zm = load("hf:llama")
    g = DependencyGraph.build(zm.model, zm.example_inputs)
    prune_groups(g, {"layers.0.mlp.gate_proj": [0, 1, 2]})
    with pytest.raises(PruningError, match="cannot express"):
        hf_config_for(zm.model)


def test_replaced_attention_round_trips(tmp_path) -> None:
    """The spec records the switch to PrunedMultiheadAttention; loading re-creates it; so does torch.save."""
    from prunekit.structured.layers import PrunedMultiheadAttention
    from tests.structured.topologies import tv_vit

    model, x = tv_vit().eval(), torch.randn(2, 3, 32, 32)
    g = DependencyGraph.build(model, x)
    prune_groups(g, select_units(g, StructuredConfig(sparsity=0.5)))
    save_pruned(model, tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "pruned.json").read_text())
    entry = meta["architecture"]["modules"]["encoder.layers.encoder_layer_0.self_attention"]
    assert entry["type"] == "PrunedMultiheadAttention" and entry["replaces"] == "MultiheadAttention"
    assert entry["attrs"]["num_heads"] == 2
    fresh = load_pruned(tmp_path / "m", tv_vit().eval())
    torch.save(model, tmp_path / "whole.pt")
    whole = torch.load(tmp_path / "whole.pt", weights_only=False).eval()
    for m in (fresh, whole):
        attn = m.encoder.layers[1].self_attention
        assert type(attn) is PrunedMultiheadAttention and attn.num_heads == 2
    with torch.no_grad():
        ref = model(x)
        assert torch.equal(fresh(x), ref) and torch.equal(whole(x), ref)


def test_an_old_spec_json_directory_is_a_clear_error(tmp_path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "spec.json").write_text(json.dumps({"format": "prunekit.pruned-architecture", "version": 2}))
    with pytest.raises(ModelLoadError, match=r"0.x structured-model directory \(spec.json\).*re-run the recipe"):
        load_pruned(tmp_path / "m", TOPOLOGIES["residual"][0]())
