"""A tiny BERT text model built in the test session (vocabulary from a small labelled text file), so the text
pipeline's default tests need no downloaded weights and run in seconds."""

from __future__ import annotations

import json
import random

import pytest
import torch

_POS = ["good", "great", "fine", "fun", "lovely", "clever", "moving", "sharp"]
_NEG = ["bad", "dull", "poor", "boring", "weak", "tired", "flat", "messy"]
_FILL = ["the", "film", "movie", "plot", "cast", "is", "a", "very", "and", "story", "acting", "script"]


def make_rows(n: int = 240, seed: int = 0) -> list[dict]:
    """Short reviews whose label is the polarity of their adjectives (learnable by a tiny model)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.sample(_FILL, 4) + rng.sample(_POS if label else _NEG, 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": "fresh" if label else "rotten"})
    return rows


def write_tiny_bert(directory, sentence_transformers: bool = True, tokenizer: bool = True, heads: int = 4,
                    positions: int = 64, intermediate: int = 64) -> None:
    """A randomly initialised 2-layer BERT (hidden 32, ``heads`` heads, FFN ``intermediate``) with a word-level
    vocabulary."""
    from transformers import BertConfig, BertModel, BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *_POS, *_NEG, *_FILL]
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=heads,
                        intermediate_size=intermediate, max_position_embeddings=positions)
    BertModel(config).save_pretrained(directory)
    if tokenizer:
        vocab_file = directory / "vocab.txt"
        vocab_file.write_text("\n".join(vocab) + "\n")
        BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(directory)
    if sentence_transformers:
        (directory / "1_Pooling").mkdir(exist_ok=True)
        (directory / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True}))
        (directory / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
        (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32,
                                                                         "do_lower_case": False}))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    pytest.importorskip("transformers")
    d = tmp_path_factory.mktemp("tiny") / "bert"
    write_tiny_bert(d)
    return d


@pytest.fixture(scope="session")
def reviews_csv(tmp_path_factory):
    import csv

    p = tmp_path_factory.mktemp("text") / "reviews.csv"
    with p.open("w", newline="") as f:
        w = csv.DictWriter(f, ["text", "label"])
        w.writeheader()
        w.writerows(make_rows())
    return p
