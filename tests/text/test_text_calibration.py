"""Calibration on padded token batches and sentence pairs: activation criteria (APoZ, mean |a|, MI) count real tokens
only, as the layer-wise solvers do, and sentence pairs reach the model with their token types."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from prunekit.graph import DependencyGraph
from prunekit.importance import Calibration, ImportanceConfig, collect_stats, score_groups, score_weights
from prunekit.pruners import LayerwiseConfig, prune_layerwise

pytestmark = pytest.mark.usefixtures("one_thread")

_TEXTS = ["good", "the film is dull", "a very fine and clever story", "flat", "the cast is great and the plot is sharp",
          "weak script", "lovely", "the acting is messy and tired and boring"]
_Y = torch.tensor([1, 0, 1, 0, 1, 0, 1, 0])


def _model(tiny_bert):
    from prunekit.models.hf import load_text_model

    loaded = load_text_model(f"hf:{tiny_bert}", "classification", 2)
    return loaded.model.eval(), loaded.tokenizer


def _scores(graph, criterion, cal):
    """Group scores of every group but BERT's pooler (a TextModel never reads its output)."""
    groups = [g for g in graph.prunable_groups() if "pooler" not in g.name]
    return score_groups(graph, ImportanceConfig(criterion), cal, groups)


def _padded_twice(tok, texts=_TEXTS):
    """The same texts padded to their longest, and padded to 24 tokens with other tokens in the padding."""
    a = tok(texts, padding=True, return_tensors="pt")
    b = tok(texts, padding="max_length", max_length=24, return_tensors="pt")
    ids = b["input_ids"].clone()
    ids[b["attention_mask"] == 0] = 7  # what is in the padded positions must not matter either
    assert ids.shape[1] > a["input_ids"].shape[1]
    return (a["input_ids"], a["attention_mask"]), (ids, b["attention_mask"])


@pytest.mark.parametrize("criterion", ["apoz", "mean_activation", "mi"])
def test_activation_scores_do_not_change_with_the_padding(tiny_bert, criterion):
    from tests.text.conftest import make_rows

    model, tok = _model(tiny_bert)
    for layer in model.encoder.encoder.layer:  # ReLU FFNs: exact zeros for APoZ to count
        layer.intermediate.intermediate_act_fn = nn.ReLU()
    rows = make_rows(48, seed=3)
    texts, y = [r["text"] for r in rows][::2] + _TEXTS, torch.tensor([i % 2 for i in range(24)] + _Y.tolist())
    (ids_a, mask_a), (ids_b, mask_b) = _padded_twice(tok, texts)
    graph = DependencyGraph.build(model, ids_a[:1])

    def scores(ids, mask):
        return _scores(graph, criterion, Calibration(ids, y, batch_size=8, attention_mask=mask))

    a, b = scores(ids_a, mask_a), scores(ids_b, mask_b)
    assert set(a) == set(b) and len(a) >= 4  # heads and FFN neurons of both layers
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # the check can fail: the statistics of every position (padding counted as tokens) are other scores
    every = scores(ids_b, torch.ones_like(mask_b))
    assert any(not np.allclose(every[k], a[k], rtol=1e-3) for k in a)
    stats = collect_stats(model, graph, Calibration(ids_b, y, 8, attention_mask=mask_b), frozenset({"activations"}))
    # one count per real token where a layer reads every token, per text where it reads the pooled embedding
    assert set(stats.count.values()) == {int(mask_b.sum()), len(texts)}


@pytest.mark.parametrize("criterion", ["mean_activation", "wanda"])
def test_single_weight_activation_scores_do_not_change_with_the_padding(tiny_bert, criterion):
    model, tok = _model(tiny_bert)
    (ids_a, mask_a), (ids_b, mask_b) = _padded_twice(tok)
    names = ["encoder.encoder.layer.0.output.dense.weight", "encoder.encoder.layer.1.attention.self.query.weight"]
    a, b = (score_weights(model, names, criterion, Calibration(i, _Y, attention_mask=m))
            for i, m in ((ids_a, mask_a), (ids_b, mask_b)))
    for n in names:
        torch.testing.assert_close(b[n], a[n], rtol=1e-5, atol=1e-6)
    unmasked = score_weights(model, names, criterion, Calibration(ids_b, _Y))  # pads counted: other scores
    assert any(not torch.allclose(unmasked[n], a[n], rtol=1e-3) for n in names)


def _pairs(tok):
    enc = tok(_TEXTS[:4], _TEXTS[4:], padding=True, return_tensors="pt")
    assert enc["token_type_ids"].max() == 1
    return enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]


def _seen_types(model):
    seen = []
    hook = model.encoder.embeddings.token_type_embeddings.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].clone()))
    return seen, hook


def test_sentence_pairs_reach_the_model_with_their_token_types(tiny_bert):
    model, tok = _model(tiny_bert)
    ids, mask, types = _pairs(tok)
    cal = Calibration(ids, _Y[:4], batch_size=2, attention_mask=mask, token_type_ids=types)
    graph = DependencyGraph.build(model, ids[:1])
    seen, hook = _seen_types(model)
    try:
        with_types = _scores(graph, "mean_activation", cal)
        assert torch.equal(torch.cat(seen), types)  # both batches, the second sentence's tokens typed 1
        seen.clear()
        score_weights(model, ["encoder.encoder.layer.0.output.dense.weight"], "mean_activation", cal)
        assert torch.equal(torch.cat(seen), types)
        seen.clear()
        cfg = LayerwiseConfig(solver="wanda", sparsity=0.5, sequential=False, exclude=("head",))
        prune_layerwise(model, cfg, cal)
        assert torch.equal(torch.cat(seen), types)
    finally:
        hook.remove()
    model, _ = _model(tiny_bert)
    graph = DependencyGraph.build(model, ids[:1])
    untyped = _scores(graph, "mean_activation", Calibration(ids, _Y[:4], batch_size=2, attention_mask=mask))
    assert any(not np.allclose(untyped[k], with_types[k]) for k in with_types)  # the types change what is scored


def test_token_types_are_left_out_for_a_model_that_does_not_take_them():
    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.fc = nn.Embedding(10, 4), nn.Linear(4, 2)

        def forward(self, x, attention_mask=None):
            return self.fc(self.emb(x)).mean(1)

    ids = torch.randint(0, 10, (4, 5))
    cal = Calibration(ids, torch.tensor([0, 1, 0, 1]), attention_mask=torch.ones(4, 5, dtype=torch.long),
                      token_type_ids=torch.zeros(4, 5, dtype=torch.long))
    scores = score_weights(Tagger(), ["fc.weight"], "mean_activation", cal)
    assert scores["fc.weight"].shape == (2, 4)
    with pytest.raises(Exception, match="token_type_ids must have the shape"):
        Calibration(ids, None, token_type_ids=torch.zeros(4, 3, dtype=torch.long))


def test_recipe_calibration_passes_the_token_types_of_pairs(tiny_bert):
    from prunekit.data.tokens import tokenize
    from prunekit.pipeline.methods.layerwise import _text_calibration
    from prunekit.pipeline.methods.transformer import _calibration

    _, tok = _model(tiny_bert)
    enc = tokenize(tok, _TEXTS[:4], 16, texts_b=_TEXTS[4:])
    ctx = SimpleNamespace(plan=SimpleNamespace(state={"text": SimpleNamespace(train=enc)}),
                          recipe=SimpleNamespace(seed=0), data=SimpleNamespace(kind="similarity"))
    for cal in (_calibration(ctx, 4), _text_calibration(ctx, 4, 2)):
        assert cal.token_type_ids is not None and cal.token_type_ids.shape == cal.x.shape
        assert int(cal.token_type_ids.max()) == 1
        assert not (cal.token_type_ids.bool() & ~cal.attention_mask.bool()).any()  # padding is typed 0
