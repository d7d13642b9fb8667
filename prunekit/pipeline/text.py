"""The text side of the pipeline's stages: a recipe whose model is ``hf:PATH`` runs the same stages (data → model
→ train → prune → recover → measure → save → export → report) with these bodies.

- model: the encoder with its tokenizer (:mod:`prunekit.models.hf`); every text is tokenised once here (progress
  bars), truncated to ``text.max_length``; the ``text.eval`` datasets too.
- train: fine-tunes the classifier (``task: classification``; dynamic batches); an ``embedding`` model is used
  as it comes (``train.epochs: 0``).
- recover: fine-tune on the labels, or distil from the dense model (:mod:`prunekit.recovery.text`) on the
  training text or on all text (``recover.distill.text: all``).
- measure: accuracy (classification), Spearman of embedding cosines on similarity data, the mean cosine of each
  pruned embedding to the dense one, parameters, MACs and CPU latency of dense and pruned timed side by side at
  ``measure.latency_batches`` × ``text.latency_sequence`` tokens.
- save: the pruned encoder as a plain Hugging Face / sentence-transformers directory (``model/``, written by
  :func:`prunekit.structured.save_hf`: it loads with ``AutoModel.from_pretrained`` and ``SentenceTransformer``
  without prunekit), plus the classification head (``head.safetensors``, ``labels.json``).

A saved directory brings removed heads back as zero heads (transformers 5 configs give every layer the same head
count; see :mod:`prunekit.structured.hf`). prunekit removes them again whenever it loads a model directory
(:func:`load_text`: a recipe's ``hf:PATH``, ``prunekit export RUN_DIR``), so what it prunes further, times and
exports has the pruned widths.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from prunekit.data import TextSplits, load_dataset
from prunekit.data.tokens import Encoded, tokenize
from prunekit.errors import ConfigError, DataError
from prunekit.io.checkpoint import atomic_write_text
from prunekit.measure import count_params
from prunekit.measure.macs import count_macs
from prunekit.measure.size import size_on_disk
from prunekit.measure.summary import time_side_by_side
from prunekit.measure.text import mean_cosine, pair_cosines, spearman, token_example
from prunekit.models.hf import TEXT_TASKS, LoadedText, Pooling, TextModel, load_text_model
from prunekit.recovery.text import distill_text
from prunekit.structured import save_hf
from prunekit.structured.hf import remove_padding
from prunekit.training import default_device
from prunekit.training.text import embed, text_accuracy, train_text

__all__ = ["TextSection", "TextState", "load_saved_text", "load_text", "saved_test_inputs", "text_build",
           "text_train", "text_recover", "text_measure", "text_save"]

_DEFAULT_IMAGE_BATCHES = [1, 256]


@dataclass(frozen=True)
class TextSection:
    """How text is handled (recipes whose model is ``hf:PATH``).

    Attributes:
        task: ``classification`` (a linear head on the pooled embedding, fine-tuned on the labels) or
            ``embedding`` (the sentence embedding, pooled and normalised as the model's sentence-transformers
            config says).
        max_length: tokens per text at most (truncation); must not exceed the model's positions.
        eval: more datasets measured with the embedding metrics (e.g. ``lee-sts``: Spearman; any: cosine to dense).
        latency_sequence: tokens per sequence when timing and counting MACs.
        batch_size: texts per batch when evaluating and embedding.
    """

    task: str = "classification"
    max_length: int = 128
    eval: list[str] = field(default_factory=list)
    latency_sequence: int = 128
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.task not in TEXT_TASKS:
            raise ConfigError(f"unknown text.task {self.task!r}; choose one of: {', '.join(TEXT_TASKS)}")
        for k in ("max_length", "latency_sequence", "batch_size"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ConfigError(f"text.{k} must be an integer ≥ 1, got {getattr(self, k)!r}")
        for name in self.eval:
            from prunekit.data import DATASETS

            DATASETS.get(name.partition(":")[0])


@dataclass
class EvalSet:
    """A dataset's test split, tokenised, for the metrics. Sentence pairs are stored as their distinct texts
    (``enc``) and the indices of each pair's two sides (``pairs``): Lee's 490 test pairs embed 50 documents."""

    name: str
    kind: str
    enc: Encoded
    labels: torch.Tensor
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class TextState:
    """What the text stages carry: the tokenizer, the tokenised splits, the dense model's embeddings."""

    loaded: LoadedText
    train: Encoded
    val: Encoded
    test: Encoded
    evals: list[EvalSet]
    unlabelled: Encoded | None = None
    example: torch.Tensor | None = None  # (1, latency_sequence) token ids: graph capture, MACs, latency
    dense_embeddings: dict[str, torch.Tensor] = field(default_factory=dict)


def load_text(where: str, task: str = "embedding", num_classes: int = 0, max_length: int | None = None,
              attn_implementation: str | None = None) -> LoadedText:
    """:func:`~prunekit.models.hf.load_text_model`, then the zero heads and FFN neurons that a stock-layout save
    padded in removed again (:func:`~prunekit.structured.hf.remove_padding`; exact, checked)."""
    loaded = load_text_model(where, task, num_classes, max_length, attn_implementation)
    encoder = loaded.model.encoder
    if getattr(encoder.config, "prunekit_padding", None):
        n = min(8, loaded.max_positions or 8)
        ids = example_ids(loaded, n)
        remove_padding(encoder, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    return loaded


def load_saved_text(run_dir: Path, recipe: Any) -> LoadedText:
    """The text model a run saved (``model/``, and for classification ``head.safetensors`` and ``labels.json``),
    with the pruned widths (:func:`load_text`) and the pooling it was trained with."""
    ts = text_section(recipe)
    model_dir = run_dir / "model"
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{str(run_dir)!r} is a text run without its model (no model/config.json): give the "
                          "directory `prunekit run` wrote for a hf: recipe")
    info = {}
    if (run_dir / "labels.json").is_file():
        info = json.loads((run_dir / "labels.json").read_text(encoding="utf-8"))
    if ts.task == "classification":
        if not (run_dir / "head.safetensors").is_file() or "labels" not in info:
            raise ConfigError(f"{str(run_dir)!r}: a classification run keeps its head in head.safetensors and its "
                              "label names in labels.json; one of them is missing")
        loaded = load_text(str(model_dir), "classification", len(info["labels"]), ts.max_length)
        from safetensors.torch import load_file

        loaded.model.head.load_state_dict(load_file(str(run_dir / "head.safetensors")))
    else:
        loaded = load_text(str(model_dir), "embedding", 0, ts.max_length)
    if "pooling" in info:
        loaded.model.pooling = Pooling(**info["pooling"])
    return loaded


def text_section(recipe: Any) -> TextSection:
    return getattr(recipe, "text", None) or TextSection()


def _eval_set(name: str, data: TextSplits, tok: Any, max_length: int, progress: bool) -> EvalSet:
    t = data.test
    if t.texts_b is None:
        return EvalSet(name, data.kind, tokenize(tok, t.texts, max_length, progress, f"tokenise {name}"), t.labels)
    distinct = list(dict.fromkeys(t.texts + t.texts_b))
    where = {text: i for i, text in enumerate(distinct)}
    pairs = (torch.tensor([where[x] for x in t.texts]), torch.tensor([where[x] for x in t.texts_b]))
    return EvalSet(name, data.kind, tokenize(tok, distinct, max_length, progress, f"tokenise {name}"), t.labels,
                   pairs)


def saved_test_inputs(recipe: Any, data: TextSplits, loaded: LoadedText) -> tuple[Encoded, torch.Tensor]:
    """The test split tokenised and the latency example, as :func:`text_build` makes them for a run (for a model
    loaded back from its run directory)."""
    ts = text_section(recipe)
    enc = _eval_set(recipe.data.name, data, loaded.tokenizer, ts.max_length, False).enc
    return enc, example_ids(loaded, ts.latency_sequence)


def check_task(task: str, data: TextSplits) -> None:
    if task == "classification" and data.kind != "classification":
        raise ConfigError(f"text.task classification needs class labels, but {data.name!r} holds {data.kind} "
                          "scores: use text.task: embedding (Spearman of embedding cosines), or a dataset with a "
                          "label column")


def text_build(run: Any, data: TextSplits) -> tuple[TextModel, TextState]:
    """Loads the model and tokenises every split (checked before any training)."""
    r, ts = run.recipe, text_section(run.recipe)
    check_task(ts.task, data)
    attention = r.recover is not None and r.recover.distill is not None and r.recover.distill.attention_weight > 0
    loaded = load_text(r.model.name, ts.task, data.num_classes, ts.max_length, "eager" if attention else None)
    tok, p = loaded.tokenizer, run.progress
    enc = {s: tokenize(tok, getattr(data, s).texts, ts.max_length, p, f"tokenise {s}") for s in ("train", "val")}
    evals = [_eval_set(r.data.name, data, tok, ts.max_length, p)]
    for name in ts.eval:
        extra = load_dataset(name)
        if not isinstance(extra, TextSplits):
            raise DataError(f"text.eval {name!r} is not a text dataset")
        evals.append(_eval_set(name, extra, tok, ts.max_length, p))
    unlabelled = None
    distill = r.recover.distill if r.recover is not None else None
    if distill is not None and distill.text == "all" and data.unlabelled:
        unlabelled = tokenize(tok, data.unlabelled, ts.max_length, p, "tokenise unlabelled")
    state = TextState(loaded, enc["train"], enc["val"], evals[0].enc, evals, unlabelled)
    state.example = example_ids(loaded, ts.latency_sequence)
    return loaded.model.to(default_device()), state


def _labels(data: TextSplits, split: str) -> torch.Tensor | None:
    return getattr(data, split).labels if data.kind == "classification" else None


def text_train(run: Any, model: TextModel, data: TextSplits, state: TextState) -> dict:
    """Fine-tunes a classifier (``train.epochs`` > 0) and returns the dense model's figures."""
    r = run.recipe
    if r.train.epochs:
        if model.head is None:
            raise ConfigError("train.epochs > 0 fine-tunes a classifier, but text.task is embedding: set "
                              "train.epochs: 0 (the pretrained embedding is the dense model)")
        run.log(f"fine-tuning {r.model.name} on {r.data.name} for {r.train.epochs} epochs")
        train_text(model, state.train, data.train.labels, r.train, r.seed, val=(state.val, data.val.labels),
                   progress=run.progress, desc="dense")
    dense = measure_text(run, model, state, keep_embeddings=True)
    state.dense_embeddings = dense.pop("_embeddings")
    return dense


def text_recover(run: Any, student: TextModel, teacher: TextModel, data: TextSplits, state: TextState):
    """Fine-tunes (labels) or distils (``recover.method: distill``) the pruned model; returns the history."""
    r, rec = run.recipe, run.recipe.recover
    if rec.epochs == 0:  # no recovery (one-shot pruning as its papers measure it): nothing to check or train
        return None
    cfg = rec.train_config()
    val = (state.val, data.val.labels) if data.kind == "classification" else None
    if rec.method != "distill":
        if student.head is None:
            raise ConfigError("recover.method finetune trains on class labels, but text.task is embedding: use "
                              "recover.method: distill (the dense model's embeddings teach the pruned one)")
        return train_text(student, state.train, data.train.labels, cfg, r.seed, val=val, progress=run.progress,
                          desc="recover (finetune)")
    d = rec.distill or dataclasses.replace(rec.recovery_config().distill)
    enc, labels = state.train, _labels(data, "train")
    if state.unlabelled is not None:
        enc = Encoded(enc.ids + state.unlabelled.ids, enc.pad_id, enc.max_length)
        if labels is not None:
            labels = torch.cat([labels, torch.full((len(state.unlabelled),), -1, dtype=labels.dtype)])
    return distill_text(student, teacher, enc, labels, cfg, d, r.seed, val, run.progress)


def _embedding_metrics(model: TextModel, state: TextState, bs: int, progress: bool) -> tuple[dict, dict, dict]:
    spear, cos, embs = {}, {}, {}
    for ev in state.evals:
        e = embed(model, ev.enc, bs, progress, f"embed {ev.name}")
        embs[ev.name] = e
        if ev.pairs is not None and ev.kind == "similarity":
            spear[ev.name] = spearman(pair_cosines(e[ev.pairs[0]], e[ev.pairs[1]]), ev.labels)
        if state.dense_embeddings:
            cos[ev.name] = mean_cosine(e, state.dense_embeddings[ev.name])
    return spear, cos, embs


def measure_text(run: Any, model: TextModel, state: TextState, keep_embeddings: bool = False) -> dict:
    """Accuracy, Spearman, cosine to dense, parameters, MACs and size of ``model`` (latency comes later)."""
    ts = text_section(run.recipe)
    model.eval()
    out: dict[str, Any] = {"accuracy": None, "loss": None}
    main = state.evals[0]
    if model.head is not None:
        out["accuracy"], out["loss"] = text_accuracy(model, main.enc, main.labels, ts.batch_size, run.progress)
    spear, cos, embs = _embedding_metrics(model, state, ts.batch_size, run.progress)
    example = state.example.to(next(model.parameters()).device)
    params, enc_params = count_params(model), count_params(model.encoder)
    size = size_on_disk(model)
    out.update({"spearman": spear, "cosine_to_dense": cos, "params": params.total, "nonzero_params": params.nonzero,
                "encoder_params": enc_params.total, "encoder_nonzero_params": enc_params.nonzero,
                "macs": count_macs(model, example).dense, "size_bytes": size.dense_bytes,
                "sequence": ts.latency_sequence, "layers": encoder_shape(model)})
    if keep_embeddings:
        out["_embeddings"] = embs
    return out


def encoder_shape(model: TextModel) -> list[dict[str, int]]:
    """Heads and FFN neurons of every encoder layer (read from the modules, as pruned)."""
    shape = []
    for name, m in model.encoder.named_modules():
        heads = getattr(m, "num_attention_heads", None) or getattr(m, "num_heads", None)
        if isinstance(heads, int) and hasattr(m, "query"):
            shape.append({"layer": name, "heads": heads})
    ffn = [m.out_features for n, m in model.encoder.named_modules() if n.endswith("intermediate.dense")]
    for row, width in zip(shape, ffn, strict=False):
        row["ffn"] = width
    return shape


def example_ids(loaded: LoadedText, sequence: int) -> torch.Tensor:
    """``(1, sequence)`` token ids that are not special tokens (graph capture, MACs, latency)."""
    tok = loaded.tokenizer
    special = tuple(int(i) for i in getattr(tok, "all_special_ids", []) or [])
    vocab = int(loaded.model.encoder.config.vocab_size)
    return token_example(vocab, sequence, special)


def text_batches(measure: Any) -> list[int]:
    """The batch sizes a text model is timed at: ``measure.latency_batches``, the image default [1, 256] read as
    [1, 32] (256 sequences of 128 tokens is not a latency a text encoder is served at)."""
    return [1, 32] if list(measure.latency_batches) == _DEFAULT_IMAGE_BATCHES else list(measure.latency_batches)


def text_measure(run: Any, dense: dict, model: TextModel, reference: TextModel, state: TextState) -> dict:
    """The pruned model's figures, then dense and pruned timed alternately at each batch size."""
    pruned = measure_text(run, model, state)
    m = run.recipe.measure
    batches = text_batches(m)
    example = state.example.to(default_device())
    time_side_by_side([reference.eval(), model.eval()], [dense, pruned], example, batches, m.latency_repeats)
    for rec in (dense, pruned):
        rec["latency_cpu_ms"] = {b: t["cpu_ms"] for b, t in rec["latency"].items()}
    return pruned


def text_save(run: Any, model: TextModel, state: TextState, data: TextSplits, directory: Path) -> list[str]:
    """Writes the pruned encoder as a plain Hugging Face / sentence-transformers directory ``model/`` (checked to
    give the pruned model's outputs when reloaded) and, for classification, the head and the label names."""
    enc = copy.deepcopy(model.encoder).eval()
    idx = list(range(min(4, len(state.test))))
    saved = save_hf(enc, directory / "model", tokenizer=state.loaded.tokenizer, source=state.loaded.directory,
                    example_inputs=state.test.collate(idx))
    files = [f"model/{f}" for f in saved.files]
    if model.head is not None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, str(directory / "head.safetensors"))
        atomic_write_text(directory / "labels.json", json.dumps({"labels": data.label_names,
                                                                 "pooling": dataclasses.asdict(model.pooling)}))
        files += ["head.safetensors", "labels.json"]
    return files
