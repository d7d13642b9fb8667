"""Pieces of the text path: Spearman with ties, dynamic batching that changes no output, distillation losses."""

from __future__ import annotations

import pytest
import torch

from prunekit.data.tokens import tokenize
from prunekit.measure.text import mean_cosine, ranks, spearman


def test_ranks_average_ties():
    assert ranks(torch.tensor([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (200,), generator=gen).float()  # many ties, as Lee's ratings
    b = a + torch.randn(200, generator=gen)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-9)
    assert spearman(a, -a) == pytest.approx(-1.0)


def test_mean_cosine_of_identical_is_one():
    x = torch.randn(10, 8)
    assert mean_cosine(x, 3 * x) == pytest.approx(1.0)


def test_dynamic_batches_pad_per_batch_and_keep_order(tiny_bert):
    from prunekit.models.hf import load_text_model
    from prunekit.training.text import predict

    loaded = load_text_model(f"hf:{tiny_bert}", "embedding")
    texts = ["good", "the film is very dull and the plot is weak", "fun cast", "a lovely and clever story"]
    enc = tokenize(loaded.tokenizer, texts, max_length=8)
    assert max(len(x) for x in enc.ids) == 8  # truncated
    widths = [enc.collate(idx)["input_ids"].shape[1] for idx in enc.order(2)]
    assert widths == sorted(widths) and widths[0] < 8  # short texts are not padded to the longest
    got = predict(loaded.model, enc, batch_size=2)
    for i in range(len(texts)):  # each text alone, unpadded: the same embedding
        alone = predict(loaded.model, tokenize(loaded.tokenizer, [texts[i]], max_length=8), batch_size=1)[0]
        torch.testing.assert_close(got[i], alone, atol=1e-5, rtol=1e-5)
    shuffled = enc.order(2, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert sorted(i for b in shuffled for i in b) == list(range(len(texts)))


def test_distill_loss_is_zero_for_the_teacher_itself(tiny_bert):
    import copy

    from prunekit.models.hf import load_text_model
    from prunekit.recovery import DistillConfig
    from prunekit.recovery.text import _teacher_targets, text_distill_loss

    loaded = load_text_model(f"hf:{tiny_bert}", "classification", num_classes=2, attn_implementation="eager")
    teacher = loaded.model.eval()
    student = copy.deepcopy(teacher).eval()
    enc = tokenize(loaded.tokenizer, ["good fun film", "dull weak plot", "the cast"], max_length=8)
    cached = _teacher_targets(teacher, enc, 2, False)
    d = DistillConfig(alpha=1.0, embedding_weight=1.0, hidden_weight=1.0, attention_weight=1.0)
    loss_fn = text_distill_loss(student, teacher, d, torch.tensor([1, 0, -1]), cached)
    idx = [0, 1, 2]
    assert float(loss_fn(student, enc.collate(idx), idx).detach()) == pytest.approx(0.0, abs=1e-5)
    with torch.no_grad():
        for p in student.encoder.encoder.layer[0].parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert float(loss_fn(student, enc.collate(idx), idx).detach()) > 1e-4
